"""Removing kernels: kernel.json first, so an interrupted removal leaves no kernel behind."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv import shell as sh
from hpcenv.errors import RefusedError, UsageError
from hpcenv.journal import tick
from hpcenv.kernel.model import Kernel, KernelReport
from hpcenv.kernel.read import _leftover, _same_env, list_kernels
from hpcenv.kernel.spec import (
    KERNEL_JSON,
    LAUNCHER,
    LOGOS,
    PREFIX,
    kernel_name,
    kernels_dir,
)
from hpcenv.kernel.write import _check_dir

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- removing


def _remove_dir(kernel: Kernel) -> str | None:
    """Remove a kernel dir: kernel.json first (Jupyter stops listing it), then the files
    hpcenv wrote, then the dir. Files someone else put there are kept (and said)."""
    directory = kernel.directory
    try:
        os.unlink(directory / KERNEL_JSON)
    except FileNotFoundError:
        pass
    tick()
    for name in (*LOGOS, LAUNCHER):
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass
    ours = (KERNEL_JSON, LAUNCHER, *LOGOS)
    for entry in os.listdir(directory):
        if any(entry.startswith(f".{name}.tmp-") for name in ours):
            os.unlink(directory / entry)  # left by a write that was killed
    tick()
    try:
        os.rmdir(directory)
    except OSError as exc:
        if os.path.isdir(directory):
            return f"kept {directory}: it holds files hpcenv did not write ({exc.strerror})"
    return None


def _leftovers(environ: Mapping[str, str] | None) -> list[Kernel]:
    try:
        entries = list(os.scandir(kernels_dir(environ)))
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry.name.startswith(PREFIX) and entry.is_dir(follow_symlinks=False):
            found = _leftover(Path(entry.path))
            if found is not None:
                out.append(found)
    return out


def remove_kernel(name_or_prefix: str, *, environ: Mapping[str, str] | None = None) -> KernelReport:
    """Remove the kernels of an env (the env itself may be gone): for a NAME, the kernel
    `hpcenv kernel NAME` wrote; for a path, every kernel of the env at that path (also one
    written for it by name). UsageError when there is none."""
    from hpcenv.registry import is_path_argument

    if is_path_argument(name_or_prefix):
        prefix = Path(os.path.abspath(os.path.expanduser(name_or_prefix)))
        wanted = {kernel_name(None, prefix)}
        env_name = None
    else:
        from hpcenv.storage import validate_env_name

        env_name = validate_env_name(name_or_prefix)
        prefix = None
        wanted = {kernel_name(env_name, Path("/"))}
    base = kernels_dir(environ)
    if os.path.lexists(base):
        _check_dir(base, "the Jupyter kernels directory", own_link=True)
    matches = [
        k
        for k in list_kernels(environ).kernels
        if k.name in wanted
        or (env_name is not None and k.env == env_name)
        or (prefix is not None and _same_env(k, prefix))
    ]
    matches += [
        k
        for k in _leftovers(environ)
        if k.name in wanted or (prefix is not None and _same_env(k, prefix))
    ]
    if not matches:
        raise UsageError(
            f"no hpcenv kernel for {name_or_prefix} in {base}",
            hint="`hpcenv kernel --list` shows the kernels hpcenv wrote",
        )
    warnings = []
    for kernel in matches:
        _check_dir(kernel.directory, "the kernel directory")
        problem = _remove_dir(kernel)
        if problem:
            warnings.append(problem)
    return KernelReport("removed", tuple(matches), False, tuple(warnings))


def remove_kernels_of(prefix: Path, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Remove every hpcenv kernel of the env at `prefix` (it was deleted); the names removed.
    Never raises for a kernels dir it cannot use: the env is gone either way, and `doctor`
    points at what is left."""
    removed = []
    try:
        base = kernels_dir(environ)
        if not os.path.lexists(base):
            return ()
        _check_dir(base, "the Jupyter kernels directory", own_link=True)
        for kernel in (*list_kernels(environ).kernels, *_leftovers(environ)):
            if _same_env(kernel, prefix):
                _check_dir(kernel.directory, "the kernel directory")
                _remove_dir(kernel)
                removed.append(kernel.name)
    except (OSError, RefusedError):
        pass
    return tuple(removed)


def stale_kernels(environ: Mapping[str, str] | None = None) -> tuple[Kernel, ...]:
    """The kernels whose env is gone (for `doctor`)."""
    return tuple(k for k in list_kernels(environ).kernels if k.env_exists is False)


def removal_command(kernel: Kernel) -> str:
    return sh.command(["hpcenv", "kernel", kernel.env or str(kernel.prefix), "--remove"])
