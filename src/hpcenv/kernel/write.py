"""Writing a kernel: the env checked for use, the files written atomically (kernel.json last)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv import shell as sh
from hpcenv.errors import RefusedError, UsageError
from hpcenv.journal import tick
from hpcenv.kernel.model import Kernel, KernelReport
from hpcenv.kernel.read import (
    _has_debugpy,
    _kernel_from,
    _leftover,
    _read_spec,
    _same_env,
    _site_packages,
    _user,
    has_ipykernel,
    python_flags,
)
from hpcenv.kernel.spec import (
    KERNEL_JSON,
    LAUNCHER,
    LOGOS,
    check_display_name,
    default_display_name,
    kernel_name,
    kernels_dir,
    parse_env_vars,
    render,
)

if TYPE_CHECKING:
    from hpcenv.settings import Settings
    from hpcenv.storage import Layout


# --------------------------------------------------------------------------- writing


def _mode(base: int) -> int:
    from hpcenv.perms import current_umask

    return base & ~(current_umask() | stat.S_IWOTH)


def _check_dir(path: Path, what: str, *, own_link: bool = False) -> None:
    """`path` must be a real directory of this user that nobody else may write to. With
    `own_link`, a symlink of this user's to such a directory is fine too (a kernels dir moved
    to storage); a link anyone else made is never followed."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) and own_link and st.st_uid == os.geteuid():
        st = os.stat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RefusedError(
            f"{what} {path} is not a real directory (a link or a file)",
            hint=f"move {sh.command([str(path)])} away and re-run",
        )
    if st.st_uid != os.geteuid():
        raise RefusedError(
            f"{what} {path} belongs to {_user(st.st_uid)}: hpcenv writes kernels only into "
            "a directory of yours",
            hint="unset JUPYTER_DATA_DIR, or point it at a directory of your own",
        )
    if st.st_mode & stat.S_IWOTH:
        raise RefusedError(
            f"{what} {path} is world-writable: anyone could replace the kernels in it",
            hint=f"chmod o-w {sh.command([str(path)])}",
        )


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents (0755 less the umask)."""
    missing = []
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, _mode(0o755))
        except FileExistsError:
            pass


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` in one step (a sibling temp file, fsynced, renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _logos(prefix: Path) -> dict[str, bytes]:
    """ipykernel's logos, as `ipykernel install` copies them (Jupyter shows them)."""
    out: dict[str, bytes] = {}
    for _, site in _site_packages(prefix):
        resources = site / "ipykernel" / "resources"
        for logo in LOGOS:
            try:
                with open(resources / logo, "rb") as f:
                    out.setdefault(logo, f.read(1 << 20))
            except OSError:
                continue
    return out


def _check_existing(directory: Path, prefix: Path) -> bool:
    """Whether a kernel of this name is there to be replaced; RefusedError when what is there
    is not hpcenv's, or is the kernel of another env that still exists."""
    if not os.path.lexists(directory):
        return False
    _check_dir(directory, "the kernel directory")
    old = _read_spec(directory)
    if old is None:
        if _leftover(directory) is not None:
            return False  # a write or a removal that was interrupted: finish it
        raise RefusedError(
            f"{directory} holds files that hpcenv did not write",
            hint=f"move it away (`mv {sh.command([str(directory)])} SOMEWHERE`) and re-run",
        )
    kernel = _kernel_from(directory, old)
    if not _same_env(kernel, prefix) and kernel.env_exists is not False:
        fix = sh.command(["hpcenv", "kernel", str(kernel.prefix), "--remove"])
        raise RefusedError(
            f"the kernel {directory.name} belongs to another environment ({kernel.prefix})",
            hint=f"remove it first with `{fix}`, or give this one another name",
        )
    return True


def write_kernel(
    layout: Layout,
    settings: Settings,
    name_or_prefix: str,
    *,
    display_name: str | None = None,
    env_vars: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> KernelReport:
    """Write (or rewrite) the kernel of an env; refuse an env that is not trusted
    (`trust.resolve_for_use`) or has no ipykernel (exit 2, nothing written)."""
    from hpcenv.trust import resolve_for_use

    pairs = parse_env_vars(env_vars)
    if display_name is not None:
        check_display_name(display_name)
    usable = resolve_for_use(layout, name_or_prefix)
    prefix, env_name = usable.prefix, usable.name
    label = env_name or str(prefix)
    if not has_ipykernel(prefix):
        word = sh.command([label])
        if usable.owner_uid != os.geteuid():
            hint = (
                f"ask its owner {_user(usable.owner_uid)} to add it "
                f"(`hpcenv install {word} ipykernel`)"
            )
        else:
            hint = f"add it with `hpcenv install {word} ipykernel`, then re-run"
        raise UsageError(f"{label} has no ipykernel, which a Jupyter kernel needs", hint=hint)
    owner = _user(usable.owner_uid) if usable.owner_uid not in (os.geteuid(), 0) else None
    title = display_name or default_display_name(env_name or prefix.name, owner)
    # an image env is known by its directory in storage; `prefix` is where it is mounted now
    image_dir = usable.image.path if usable.image is not None else None
    name = kernel_name(env_name, image_dir or prefix)
    base = kernels_dir(environ)
    directory = base / name
    files = render(
        kernel=name,
        directory=directory,
        prefix=prefix,
        env_name=env_name,
        display_name=title,
        module_lines=settings.module_lines,
        env_vars=pairs,
        no_user_site=settings.no_user_site,
        debugger=_has_debugpy(prefix),
        python_options=python_flags(prefix),
        image_dir=image_dir,
        hpcenv_argv=(sys.executable, "-m", "hpcenv") if image_dir is not None else (),
    )
    _make_dirs(base)
    _check_dir(base, "the Jupyter kernels directory", own_link=True)
    replaced = _check_existing(directory, image_dir or prefix)
    if not os.path.lexists(directory):
        os.mkdir(directory, _mode(0o755))
        tick()
    _write(directory / LAUNCHER, files.launcher.encode("utf-8", "surrogateescape"), _mode(0o644))
    tick()
    for logo, data in _logos(prefix).items():
        _write(directory / logo, data, _mode(0o644))
    _write(directory / KERNEL_JSON, files.kernel_json.encode("ascii"), _mode(0o644))
    tick()
    kernel = Kernel(
        name=name,
        directory=directory,
        display_name=title,
        env=env_name,
        prefix=image_dir or prefix,
        env_exists=True,
        env_vars=tuple(f"{k}={v}" for k, v in pairs),
    )
    return KernelReport("written", (kernel,), replaced)
