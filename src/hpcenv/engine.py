"""The engine seam: the only module that imports `rattler` (py-rattler 0.28).

A small synchronous API over rattler's async calls. One `cache_dir` (the caller passes
`STORAGE/.cache/rattler`) holds both caches:

    cache_dir/repodata/   the Gateway's repodata cache
    cache_dir/pkgs/       downloaded archives and extracted packages (hardlinked into envs)

`__cuda` is never detected here: the caller (envs, through gpu.py) decides it and passes
`cuda=` ("12.4" adds `__cuda=12.4`, None means no `__cuda`), so one detector is the truth.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rattler
from rattler import exceptions as rx

from hpcenv.errors import OperationError, UsageError

MIRROR_HINT = 'set a mirror: `mirrors = { conda-forge = "https://mirror/conda-forge" }` in ~/.config/hpcenv/config.toml'


@dataclass(frozen=True)
class PackageInfo:
    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    channel: str
    url: str
    file_name: str
    size: int
    sha256: str | None
    depends: tuple[str, ...]
    constrains: tuple[str, ...] = ()
    extracted_dir: str | None = None
    record: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Solution:
    packages: tuple[PackageInfo, ...]

    @property
    def download_size(self) -> int:
        return sum(p.size for p in self.packages)


def repodata_cache_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "repodata"


def package_cache_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "pkgs"


def platform() -> str:
    return str(rattler.Subdir.current())


def _run(coro):
    try:
        return asyncio.run(coro)
    finally:
        # rattler's tokio threads may still drop a Python object just after the loop ends;
        # exiting the interpreter at that moment crashed ~5% of short scripts (SIGSEGV in
        # Py_FinalizeEx). No shutdown API exists (PyO3/pyo3-async-runtimes#40): let it settle.
        time.sleep(0.002)


def _info(record, extracted_dir: str | None = None) -> PackageInfo:
    return PackageInfo(
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        build_number=record.build_number,
        subdir=record.subdir,
        channel=str(record.channel or ""),
        url=str(record.url),
        file_name=record.file_name,
        size=record.size or 0,
        sha256=record.sha256.hex() if record.sha256 else None,
        depends=tuple(record.depends),
        constrains=tuple(record.constrains),
        extracted_dir=extracted_dir,
        record=record,
    )


def index_channel(channel_dir: Path) -> None:
    """Write repodata for a local channel directory (linux-64/, noarch/)."""
    _run(rattler.index.index_fs(Path(channel_dir)))


def virtual_packages(cuda: str | None = None) -> list:
    """This host's virtual packages, with `__cuda` exactly as the caller says."""
    packages = [
        vp.into_generic()
        for vp in rattler.VirtualPackage.detect()
        if not str(vp).startswith("__cuda")
    ]
    packages = [p for p in packages if p.name.normalized != "__cuda"]
    if cuda:
        packages.append(
            rattler.GenericVirtualPackage(
                rattler.PackageName("__cuda"), rattler.Version(cuda), rattler.BuildString("0")
            )
        )
    return packages


def _check_specs(specs: Iterable[str]) -> None:
    for spec in specs:
        try:
            rattler.MatchSpec(spec, strict=True)
        except (
            rx.InvalidMatchSpecError,
            rx.InvalidPackageNameError,
            rx.InvalidVersionSpecError,
        ) as exc:
            raise UsageError(
                f"invalid package spec {spec!r}: {_first_line(exc)}",
                hint="use forms like `numpy`, `numpy>=1.26`, `pytorch * cuda*`",
            ) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__


def solve(
    channels: Sequence[str],
    specs: Sequence[str],
    *,
    cache_dir: Path,
    cuda: str | None = None,
    installed: Sequence[PackageInfo] = (),
    target_platform: str | None = None,
) -> Solution:
    """Solve `specs` against `channels` (URLs). Keeps installed versions where possible."""
    _check_specs(specs)
    sources = [rattler.Channel(url) for url in channels]
    gateway = rattler.Gateway(cache_dir=repodata_cache_dir(cache_dir))
    try:
        records = _run(
            rattler.solve(
                sources=sources,
                specs=list(specs),
                gateway=gateway,
                platforms=[target_platform or platform(), "noarch"],
                virtual_packages=virtual_packages(cuda),
                locked_packages=[p.record for p in installed if p.record is not None] or None,
            )
        )
    except rx.SolverError as exc:
        raise UsageError(
            "the requested packages cannot be installed together:\n" + _solver_lines(exc),
            hint="relax a version constraint or drop a package",
        ) from None
    except (rx.FetchRepoDataError, rx.GatewayError, rx.InvalidChannelError, rx.IoError) as exc:
        raise OperationError(
            f"cannot read channel(s) {', '.join(channels)}: {_first_line(exc)}", hint=MIRROR_HINT
        ) from None
    return Solution(tuple(_info(r) for r in records))


def _root_cause(exc: BaseException) -> str:
    """rattler's innermost reason ("Caused by: ..." lines), which its first line leaves out:
    e.g. `failed to link X` because the env's path is longer than a binary's placeholder."""
    causes = [
        line.strip().removeprefix("Caused by:").strip()
        for line in str(exc).splitlines()
        if line.strip().startswith("Caused by:")
    ]
    return f" ({causes[-1]})" if causes and causes[-1] != _first_line(exc) else ""


def _solver_lines(exc: BaseException) -> str:
    """The useful part of rattler's explanation: its tree of reasons, without the noise."""
    lines = [line.rstrip() for line in str(exc).splitlines() if line.strip()]
    keep = [
        line
        for line in lines
        if not line.lower().startswith(("cannot solve the request", "solver error"))
    ]
    return "\n".join(keep[:20]) or _first_line(exc)


def install(
    packages: Solution | Sequence[PackageInfo],
    prefix: Path,
    *,
    cache_dir: Path,
    installed: Sequence[PackageInfo] | None = None,
    final_prefix: Path | None = None,
    reinstall: Iterable[str] = (),
    show_progress: bool = False,
) -> None:
    """Link `packages` into `prefix`, applying only the difference to `installed`.

    `final_prefix` is the path patched into files when building in a temporary sibling that
    is renamed into place afterwards (atomic create).
    """
    if isinstance(packages, Solution):
        packages = packages.packages
    try:
        _run(
            rattler.install(
                [p.record for p in packages],
                target_prefix=prefix,
                cache_dir=package_cache_dir(cache_dir),
                installed_packages=[p.record for p in installed] if installed is not None else None,
                reinstall_packages=set(reinstall) or None,
                show_progress=show_progress,
                alternative_target_prefix=final_prefix,
                execute_link_scripts=False,
            )
        )
    except (
        rx.InstallerError,
        rx.LinkError,
        rx.TransactionError,
        rx.IoError,
        rx.ExtractError,
    ) as exc:
        text = str(exc)
        if any(
            s in text
            for s in ("No space left", "Disk quota exceeded", "os error 28", "os error 122")
        ):
            raise OSError(errno.ENOSPC, "no space left while installing packages") from None
        raise OperationError(
            f"installing packages into {prefix} failed: {_first_line(exc)}{_root_cause(exc)}"
        ) from None
    compile_noarch_python(Path(prefix), Path(final_prefix or prefix), packages)


# Run by the env's own python (`-I -B`: no user settings, no .pyc of its own imports):
# compile each NUL-separated .py path from stdin, naming it by its final path in tracebacks;
# print "source NUL pyc NUL" for each one that compiled.
_COMPILE = r"""
import os, py_compile, sys
build, final = sys.argv[1], sys.argv[2]
def one(path):
    try:
        pyc = py_compile.compile(path, dfile=final + path[len(build):], doraise=True,
                                 invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    except Exception:
        return ""
    return path + "\0" + pyc + "\0"
paths = [p for p in sys.stdin.read().split("\0") if p]
if len(paths) > 200:
    import multiprocessing
    with multiprocessing.get_context("fork").Pool() as pool:
        done = pool.map(one, paths, chunksize=50)
else:
    done = [one(p) for p in paths]
sys.stdout.write("".join(done))
"""


def compile_noarch_python(
    prefix: Path, final_prefix: Path, packages: Sequence[PackageInfo]
) -> None:
    """Byte-compile the `noarch: python` packages in `prefix` that are not yet, as conda does
    (rattler links them and writes their entry points but compiles nothing), and record the
    .pyc files in the package's conda-meta entry (`pyc_file`), so removing it removes them.

    The .pyc are an optimisation (without them a shared read-only env compiles on every
    import): a file that does not compile, or an env whose python does not run, is left as
    rattler linked it."""
    import json
    import subprocess

    python = next((p for p in packages if p.name == "python"), None)
    noarch = [p for p in packages if p.record is not None and p.record.noarch.python]
    if python is None or not noarch:
        return
    exe = prefix / "bin" / f"python{'.'.join(python.version.split('.')[:2])}"
    if not os.access(exe, os.X_OK):
        return
    todo: dict[Path, list[str]] = {}
    for package in noarch:
        path = prefix / "conda-meta" / f"{package.name}-{package.version}-{package.build}.json"
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))["paths_data"]["paths"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if any(e.get("path_type") == "pyc_file" for e in entries):
            continue
        sources = [
            e["_path"]
            for e in entries
            if e["_path"].endswith(".py") and "site-packages/" in e["_path"]
        ]
        if sources:
            todo[path] = sources
    if not todo:
        return
    files = "".join(f"{prefix / rel}\0" for sources in todo.values() for rel in sources)
    try:
        result = subprocess.run(
            [str(exe), "-I", "-B", "-c", _COMPILE, str(prefix), str(final_prefix)],
            input=files,
            capture_output=True,
            text=True,
        )
    except OSError:
        return
    words = result.stdout.split("\0")
    pyc_of = {
        os.path.relpath(src, prefix): os.path.relpath(pyc, prefix)
        for src, pyc in zip(words[0::2], words[1::2], strict=False)
    }
    for path, sources in todo.items():
        mine = sorted(pyc_of[rel] for rel in sources if rel in pyc_of)
        if not mine:
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        record["files"] = record.get("files", []) + mine
        paths_data = record.setdefault("paths_data", {"paths": [], "paths_version": 1})
        paths_data["paths"] += [{"_path": p, "path_type": "pyc_file"} for p in mine]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.replace(tmp, path)


def installed_packages(prefix: Path) -> tuple[PackageInfo, ...]:
    """The packages recorded in `prefix/conda-meta/*.json`."""
    meta = Path(prefix) / "conda-meta"
    out = []
    for path in sorted(meta.glob("*.json")):
        try:
            record = rattler.PrefixRecord.from_path(path)
        except Exception:  # not a package record (or broken): conda itself would skip it
            continue
        extracted = record.extracted_package_dir
        out.append(_info(record, str(extracted) if extracted else None))
    return tuple(out)


def linked_files(prefix: Path) -> dict[str, list[str]]:
    """Per installed package name, the files it put into `prefix` (relative paths)."""
    out = {}
    for path in sorted((Path(prefix) / "conda-meta").glob("*.json")):
        try:
            record = rattler.PrefixRecord.from_path(path)
        except Exception:
            continue
        out[record.name.normalized] = [str(f) for f in record.files]
    return out


def write_lock(
    packages: Sequence[PackageInfo],
    channels: Sequence[str],
    path: Path,
    target_platform: str | None = None,
) -> None:
    """A lock file (rattler's format, which pixi reads): exact URLs and hashes."""
    plat = rattler.LockPlatform(target_platform or platform())
    lock = rattler.LockFile([plat])
    for p in packages:
        lock.add_conda_package("default", plat, p.record)
    lock.set_channels("default", [rattler.LockChannel(c) for c in channels])
    lock.to_path(path)


def read_lock(path: Path, target_platform: str | None = None) -> list[PackageInfo]:
    """The exact packages of a lock file's default environment for this platform."""
    try:
        lock = rattler.LockFile.from_path(path)
    except Exception as exc:
        raise UsageError(f"{path} is not a readable lock file: {_first_line(exc)}") from None
    env = lock.default_environment()
    name = target_platform or platform()
    plat = next((p for p in lock.platforms() if p.name == name), None)
    if env is None or plat is None:
        raise UsageError(f"{path} has no packages for {name}", hint="re-lock on this platform")
    return [_info(r) for r in env.conda_repodata_records_for_platform(plat) or []]


def has_cached(cache_dir: Path, package: PackageInfo) -> bool:
    stem = package.file_name.removesuffix(".tar.bz2").removesuffix(".conda")
    return os.path.isdir(package_cache_dir(cache_dir) / stem)
