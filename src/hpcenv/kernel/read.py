"""Reading kernels: whether an env has ipykernel, and every kernel hpcenv wrote (by its
`metadata.hpcenv`), whatever its name."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcenv.kernel.model import Kernel, KernelList
from hpcenv.kernel.spec import (
    KERNEL_JSON,
    LAUNCHER,
    LAUNCHER_MARK,
    LOGOS,
    kernels_dir,
)

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- does it have ipykernel


def _site_packages(prefix: Path) -> list[tuple[str, Path]]:
    """(pythonX.Y, its site-packages) of the env."""
    try:
        names = sorted(n for n in os.listdir(prefix / "lib") if n.startswith("python"))
    except OSError:
        return []
    return [(n, prefix / "lib" / n / "site-packages") for n in names]


def has_ipykernel(prefix: Path) -> bool:
    """ipykernel is installed: its package in a site-packages, or its conda record."""
    if any((site / "ipykernel" / "__init__.py").is_file() for _, site in _site_packages(prefix)):
        return True
    try:
        return any(
            n.startswith("ipykernel-") and n.endswith(".json")
            for n in os.listdir(prefix / "conda-meta")
        )
    except OSError:
        return False


def python_flags(prefix: Path) -> tuple[str, ...]:
    """What `ipykernel install` puts before `-m ipykernel_launcher`: with debugpy there and
    CPython >= 3.11, `-Xfrozen_modules=off` (the debugger cannot step into frozen modules and
    warns on every start otherwise)."""
    for version, site in _site_packages(prefix):
        if not (site / "debugpy").is_dir():
            continue
        major, _, minor = version[len("python") :].partition(".")
        if major == "3" and minor.isdigit() and int(minor) >= 11:
            return ("-Xfrozen_modules=off",)
    return ()


def _has_debugpy(prefix: Path) -> bool:
    return any((site / "debugpy").is_dir() for _, site in _site_packages(prefix))


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# --------------------------------------------------------------------------- reading kernels


def _read_spec(directory: Path) -> dict[str, Any] | None:
    """kernel.json of `directory` if hpcenv wrote it (its metadata says so); None otherwise."""
    try:
        fd = os.open(directory / KERNEL_JSON, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = json.loads(os.read(fd, 1 << 20))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict):
        return None
    meta = data.get("metadata")
    ours = meta.get("hpcenv") if isinstance(meta, dict) else None
    if not isinstance(ours, dict) or not isinstance(ours.get("prefix"), str):
        return None
    return data


def _is_our_launcher(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return LAUNCHER_MARK.encode() in head


def _env_exists(prefix: Path) -> bool | None:
    from hpcenv.registry import is_env

    return is_env(prefix)


def _kernel_from(directory: Path, data: dict[str, Any]) -> Kernel:
    ours = data["metadata"]["hpcenv"]
    prefix = Path(ours["prefix"])
    env = ours.get("env") if isinstance(ours.get("env"), str) else None
    raw_vars = ours.get("env_vars")
    env_vars = (
        tuple(v for v in raw_vars if isinstance(v, str)) if isinstance(raw_vars, list) else ()
    )
    display = data.get("display_name")
    return Kernel(
        name=directory.name.lower(),
        directory=directory,
        display_name=display if isinstance(display, str) else directory.name,
        env=env,
        prefix=prefix,
        env_exists=_env_exists(prefix),
        env_vars=env_vars,
    )


def list_kernels(environ: Mapping[str, str] | None = None) -> KernelList:
    """Every kernel hpcenv wrote in this user's kernels dir, with whether its env exists."""
    where = kernels_dir(environ)
    try:
        entries = sorted(os.scandir(where), key=lambda e: e.name)
    except OSError:
        return KernelList(where.parent, ())
    found = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            data = _read_spec(Path(entry.path))
            if data is not None:
                found.append(_kernel_from(Path(entry.path), data))
    return KernelList(where.parent, tuple(found))


def _same_env(kernel: Kernel, prefix: Path) -> bool:
    if kernel.prefix is None:
        return False
    return str(kernel.prefix) == str(prefix) or os.path.realpath(kernel.prefix) == os.path.realpath(
        prefix
    )


def _launcher_prefix(path: Path) -> Path | None:
    """The env prefix a launcher activates (its `_HPCENV_PREFIX=` line)."""
    import shlex

    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    if LAUNCHER_MARK not in text:
        return None
    for line in text.splitlines():
        if line.startswith("_HPCENV_PREFIX="):
            try:
                words = shlex.split(line[len("_HPCENV_PREFIX=") :])
            except ValueError:
                return None
            return Path(words[0]) if len(words) == 1 else None
    return None


def _leftover(directory: Path) -> Kernel | None:
    """A kernel dir without kernel.json (Jupyter does not list it) that holds only files
    hpcenv writes, or nothing: what a write or a removal that was interrupted left."""
    if os.path.lexists(directory / KERNEL_JSON):
        return None
    ours = (LAUNCHER, *LOGOS)
    try:
        entries = os.listdir(directory)
    except OSError:
        return None
    if any(e not in ours and not any(e.startswith(f".{n}.tmp-") for n in ours) for e in entries):
        return None
    launcher = directory / LAUNCHER
    prefix = _launcher_prefix(launcher) if LAUNCHER in entries else None
    if LAUNCHER in entries and prefix is None:
        return None  # a launch.sh that is not hpcenv's
    exists = _env_exists(prefix) if prefix is not None else None
    return Kernel(directory.name, directory, directory.name, None, prefix, exists)
