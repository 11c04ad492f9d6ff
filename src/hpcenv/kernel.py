"""Jupyter kernels that start inside the activated env (JupyterHub, Open OnDemand).

`python -m ipykernel install` writes a kernel whose `argv` runs the env's python directly:
`etc/conda/activate.d` never runs (CUDA, GDAL, PROJ variables missing), the site's module
lines are not loaded, and users add `conda init` to ~/.bashrc to make up for it. The kernel
hpcenv writes (`kernelspec.py`: its files, names and the data dir) starts a small launcher
that activates the env first, then becomes the kernel.

`write_kernel` refuses an env that is not trusted (`trust.resolve_for_use`) or has no
ipykernel; `list_kernels` finds every kernel hpcenv wrote by its `metadata.hpcenv`, so
`--list`, the removal of an env and `doctor` find the kernels of an env whatever their name.

Writes are atomic (a temp file renamed over the old one; kernel.json last, so Jupyter never
sees a kernel whose launcher is missing); removal unlinks kernel.json first, so an interrupted
removal leaves no kernel behind, and a re-run finishes it. Nothing created is world-writable,
and a kernels dir that another user owns or anyone may write is refused.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcenv import shell as sh
from hpcenv.errors import RefusedError, UsageError
from hpcenv.journal import tick
from hpcenv.kernelspec import (
    KERNEL_JSON,
    LAUNCHER,
    LAUNCHER_MARK,
    LOGOS,
    PREFIX,
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


@dataclass(frozen=True)
class Kernel:
    """One kernel hpcenv wrote, as found in (or written to) the kernels dir."""

    name: str  # the kernel's name for Jupyter: hpcenv-NAME
    directory: Path
    display_name: str
    env: str | None  # the env's name when it was given by name; None when given by path
    prefix: Path | None  # None only for what an interrupted removal left (no files to say)
    env_exists: bool | None  # None: it cannot be read (another user's env, for instance)
    env_vars: tuple[str, ...] = ()  # KEY=VALUE set for the kernel (--env)


@dataclass(frozen=True)
class KernelReport:
    """The result of `hpcenv kernel NAME` (action "written": one kernel) or `--remove`
    ("removed": every kernel of that env)."""

    action: str
    kernels: tuple[Kernel, ...]
    replaced: bool = False  # a kernel of the same name was there before
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelList:
    data_dir: Path
    kernels: tuple[Kernel, ...]


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
    name = kernel_name(env_name, prefix)
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
    )
    _make_dirs(base)
    _check_dir(base, "the Jupyter kernels directory", own_link=True)
    replaced = _check_existing(directory, prefix)
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
        prefix=prefix,
        env_exists=True,
        env_vars=tuple(f"{k}={v}" for k, v in pairs),
    )
    return KernelReport("written", (kernel,), replaced)


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
