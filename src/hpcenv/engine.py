"""The engine seam: the only module that imports `rattler` (py-rattler 0.28).

A small synchronous API over rattler's async calls. One `cache_dir` (the caller passes
`STORAGE/.cache/rattler`) holds both caches:

    cache_dir/repodata/   the Gateway's repodata cache
    cache_dir/pkgs/       downloaded archives and extracted packages (hardlinked into envs)
    cache_dir/site/       links to the packages of site package caches (see `install`)

`__cuda` is never detected here: the caller (envs, through gpu.py) decides it and passes
`cuda=` ("12.4" adds `__cuda=12.4`, None means no `__cuda`), so one detector is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import stat
import struct
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rattler
from rattler import exceptions as rx

from hpcenv.errors import OperationError, UsageError

MIRROR_HINT = 'set a mirror: `mirrors = { conda-forge = "https://mirror/conda-forge" }` in ~/.config/hpcenv/config.toml'

# Every exception rattler raises (its own classes, and a Rust panic surfaced by PyO3, which
# derives from BaseException): no call into rattler lets one escape this module.
_RATTLER_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in vars(rx).values()
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "exceptions"
)
MAX_LOCK_BYTES = 64 * 1024 * 1024
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _is_rattler_error(exc: BaseException) -> bool:
    return isinstance(exc, _RATTLER_ERRORS) or type(exc).__name__ == "PanicException"


def _as_os_error(exc: BaseException, path: Path | str | None) -> OSError | None:
    """rattler's "... (os error 13)" as the OSError it was, so the CLI names the errno's cause
    and fix; None when the message holds no OS error."""
    found = _OS_ERROR.findall(str(exc))
    if not found:
        return None
    code = int(found[-1])
    return OSError(code, os.strerror(code), str(path) if path is not None else None)


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
    requested: tuple[str, ...] = ()  # requested_spec(s) in an installed record
    noarch: str | None = None  # "python" or "generic" for noarch packages
    record_path: str | None = None  # conda-meta/*.json of an installed package
    record: object = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.version, self.build)

    @property
    def pin(self) -> str:
        """A match spec for exactly this package (version and build)."""
        return f"{self.name} =={self.version} {self.build}"


@dataclass(frozen=True)
class DamagedRecord:
    """A conda-meta/*.json that cannot be read as a package record."""

    path: str
    name: str  # the package name guessed from the file name
    reason: str


@dataclass(frozen=True)
class PrefixState:
    """What conda-meta says is installed, and the records it could not read."""

    packages: tuple[PackageInfo, ...]
    damaged: tuple[DamagedRecord, ...] = ()
    relative_noarch: tuple[str, ...] = ()  # noarch:python records with package-relative paths


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


def _info(record, extracted_dir=None, requested=(), record_path=None) -> PackageInfo:
    noarch = record.noarch
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
        requested=tuple(requested),
        record_path=record_path,
        noarch="python" if noarch.python else ("generic" if noarch.generic else None),
        record=record,
    )


def index_channel(channel_dir: Path) -> None:
    """Write repodata for a local channel directory (linux-64/, noarch/)."""
    try:
        _run(rattler.index.index_fs(Path(channel_dir)))
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise _as_os_error(exc, channel_dir) or OperationError(
            f"indexing the channel {channel_dir} failed: {_first_line(exc)}"
        ) from None


def virtual_packages(cuda: str | None = None) -> list:
    """This host's virtual packages, with `__cuda` exactly as the caller says."""
    try:
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
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise UsageError(f"cannot describe this host to the solver: {_first_line(exc)}") from None
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


def check_specs(specs: Iterable[str]) -> None:
    """Raise UsageError (exit 2) for a spec rattler cannot read."""
    _check_specs(specs)


def spec_matches(spec: str, package: PackageInfo) -> bool:
    """Whether an installed package satisfies a dependency spec (lenient: an unreadable spec
    counts as satisfied, the solver would have said otherwise)."""
    try:
        return bool(rattler.MatchSpec(spec, strict=False).matches(package.record))
    except Exception:  # noqa: BLE001 - rattler raises several types for odd specs
        return True


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as conda orders versions."""
    try:
        va, vb = rattler.Version(a), rattler.Version(b)
    except Exception:  # noqa: BLE001
        return (a > b) - (a < b)
    return (va > vb) - (va < vb)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__


def _first_and_cause(exc: BaseException) -> str:
    """rattler's first line and, when it has a chain of causes, the last (the root cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) < 2:
        return _first_line(exc)
    return f"{lines[0]}: {lines[-1].removeprefix('Caused by:').strip()}"


def _lenient(spec: str):
    try:
        return rattler.MatchSpec(spec, strict=False)
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise UsageError(
            f"invalid package spec {spec!r}: {_first_line(exc)}",
            hint="use forms like `numpy`, `numpy>=1.26`, `pytorch * cuda*`",
        ) from None


def spec_name(spec: str) -> str:
    """The (normalized) package name of a match spec, as conda reads it: `numpy >=1.2`,
    `conda-forge::numpy=1`, `pytorch[version=">=2"]`, `demo-tool=1.0=0` -> its name."""
    match = _lenient(spec.strip())
    if match.name is None:
        raise UsageError(f"invalid package spec {spec!r}: it names no package")
    return match.name.normalized


_CONDA_EXPORT = re.compile(
    r"^[^\s=<>!~\[\]:]+(?:::[^\s=<>!~\[\]:]+)?=[^\s=<>!~,|\[\]]+=[^\s=\[\]]+$"
)


def conda_spec(spec: str) -> str:
    """A spec conda writes that rattler's strict parser refuses, in rattler's words: the
    `name=version=build` lines of `conda env export` mean exactly that version and build
    (`demo-tool=1.0=0` -> `demo-tool ==1.0 0`). Any other spec is returned unchanged."""
    text = spec.strip()
    if not _CONDA_EXPORT.match(text):
        return spec
    return str(_lenient(text))


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
    try:
        sources = [rattler.Channel(url) for url in channels]
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise UsageError(
            f"invalid channel in {', '.join(channels)}: {_first_line(exc)}",
            hint="give a channel name (conda-forge), a URL or a local directory",
        ) from None
    try:
        gateway = rattler.Gateway(cache_dir=repodata_cache_dir(cache_dir))
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
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise OperationError(
            f"solving for {', '.join(channels)} failed: {_first_line(exc)}"
        ) from None
    return Solution(tuple(_info(r) for r in records))


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
    layers: Sequence[Path] = (),
    layer_owners: Collection[int] = (0,),
) -> list[str]:
    """Link `packages` into `prefix`, applying only the difference to `installed`; return
    warnings (cached packages found damaged and extracted again, site cache entries skipped).

    `final_prefix` is the path patched into files when building in a temporary sibling that
    is renamed into place afterwards (atomic create).

    `layers` are read-only package caches (a site's, trusted by the caller: `sitecache`)
    searched before the user's own: a package whole there, its files owned by one of
    `layer_owners` and writable by no one else, is linked from there (see `_site_view`).
    """
    if isinstance(packages, Solution):
        packages = packages.packages
    reinstall = set(reinstall)
    have = {p.key for p in installed or ()}
    linking = [p for p in packages if p.key not in have or p.name in reinstall]
    warnings = set_aside_damaged(cache_dir, linking)
    served, skipped = _from_layers(layers, linking, layer_owners)
    warnings += skipped
    caches: dict = {"cache_dir": package_cache_dir(cache_dir)}
    lock_dir = package_cache_dir(cache_dir)
    if served:
        caches = {"package_cache": _site_view(cache_dir, served)}
        lock_dir = site_view_dir(cache_dir)
    try:
        with _cache_lock_where_flock_works(lock_dir):
            _run(
                rattler.install(
                    [p.record for p in packages],
                    target_prefix=prefix,
                    **caches,
                    installed_packages=[p.record for p in installed]
                    if installed is not None
                    else None,
                    reinstall_packages=reinstall or None,
                    show_progress=show_progress,
                    alternative_target_prefix=final_prefix,
                    execute_link_scripts=False,
                )
            )
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        text = str(exc)
        if any(
            s in text
            for s in ("No space left", "Disk quota exceeded", "os error 28", "os error 122")
        ):
            raise OSError(errno.ENOSPC, "no space left while installing packages") from None
        raise OperationError(
            f"installing packages into {prefix} failed: {_first_and_cause(exc)}",
            hint="if a package file is damaged, `hpcenv doctor` checks the package cache",
        ) from None
    compile_noarch_python(Path(prefix), Path(final_prefix or prefix), packages)
    return warnings


# --------------------------------------------------------------------------- the package cache


def cache_entry(cache_dir: Path, package: PackageInfo) -> Path:
    stem = package.file_name.removesuffix(".tar.bz2").removesuffix(".conda")
    return package_cache_dir(cache_dir) / stem


def check_cache_entry(entry: Path, owners: Collection[int] | None = None) -> str | None:
    """Why an extracted package in the cache is damaged (a file of its info/paths.json is
    missing, of another size, or of another type), or None when it is whole.

    rattler's own validation either checks only that files exist (`ValidationMode.fast`) or
    hashes every byte (`full`): the sizes catch a truncated file at the cost of one stat.

    With `owners` (a site layer's entry), every one of those files, their directories and
    the package's info/ must also belong to one of `owners` and be writable by no group or
    other user: anything else could be changed by someone the site did not trust."""
    try:
        data = json.loads((entry / "info" / "paths.json").read_text(encoding="utf-8"))
        paths = data["paths"]
    except FileNotFoundError:
        return "info/paths.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"info/paths.json is not readable ({exc.__class__.__name__})"
    root = os.fspath(entry) + "/"
    others = {".", "info", "info/paths.json", "info/index.json"}  # checked with owners
    for item in paths if isinstance(paths, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("_path"), str):
            return "info/paths.json has an entry without a path"
        rel = item["_path"]
        try:
            st = os.lstat(root + rel)
        except OSError:
            return f"{rel} is missing"
        kind = item.get("path_type", "hardlink")
        if kind == "softlink":
            if not stat.S_ISLNK(st.st_mode) and not stat.S_ISREG(st.st_mode):
                return f"{rel} is not a link"
        elif kind == "directory":
            if not stat.S_ISDIR(st.st_mode):
                return f"{rel} is not a directory"
        elif not stat.S_ISREG(st.st_mode):
            return f"{rel} is not a file"
        elif isinstance(item.get("size_in_bytes"), int) and st.st_size != item["size_in_bytes"]:
            return f"{rel} has {st.st_size} bytes, not {item['size_in_bytes']}"
        if owners is not None:
            why = _foreign(rel, st, owners)
            if why:
                return why
            parent = os.path.dirname(rel)
            while parent and parent not in others:  # each directory on the way, once
                others.add(parent)
                parent = os.path.dirname(parent)
    for rel in sorted(others) if owners is not None else ():
        try:
            st = os.lstat(root + rel)
        except OSError:
            return f"{rel} is missing"
        why = _foreign(rel, st, owners)  # type: ignore[arg-type]
        if why:
            return why
    return None


def _foreign(rel: str, st: os.stat_result, owners: Collection[int]) -> str | None:
    """Why a layer's path could be changed by someone other than its trusted owners."""
    if stat.S_ISLNK(st.st_mode):
        return None  # a link's mode and owner change nothing: it is re-created, not read
    if st.st_uid not in owners:
        return f"{rel} belongs to uid {st.st_uid}, not to the site cache's owner"
    if st.st_mode & 0o022:
        return f"{rel} is writable by group or others"
    return None


def set_aside_damaged(cache_dir: Path, packages: Sequence[PackageInfo]) -> list[str]:
    """Move damaged cache entries of `packages` into the cache's trash (`hpcenv clean`
    empties it) so rattler extracts them again; say which."""
    warnings = []
    for package in packages:
        entry = cache_entry(cache_dir, package)
        if not entry.is_dir():
            continue
        why = check_cache_entry(entry)
        if why is None:
            continue
        set_aside(cache_dir, package)
        warnings.append(
            f"the cached package {entry.name} was damaged ({why}); it was extracted again"
        )
    return warnings


def set_aside(cache_dir: Path, package: PackageInfo) -> bool:
    """Move the cache entry of `package` into the cache's trash, whatever its state, so the
    next install extracts it again (other envs keep the files they link). False when there
    was none."""
    entry = cache_entry(cache_dir, package)
    if not entry.is_dir():
        return False
    trash = Path(cache_dir) / ".hpcenv-trash"
    trash.mkdir(mode=0o700, exist_ok=True)
    os.rename(entry, trash / f"{entry.name}-damaged-{os.getpid()}-{time.time_ns()}")
    try:
        os.unlink(entry.with_name(entry.name + ".lock"))
    except FileNotFoundError:
        pass
    return True


def fetch(packages: Sequence[PackageInfo], cache_dir: Path, scratch: Path, python=None) -> None:
    """Put `packages` into the package cache (downloaded from their URLs and extracted)
    without touching any env: each is linked into the empty directory `scratch`, which is
    removed afterwards. A `noarch: python` package needs the env's `python` record to link
    (python itself is not linked). One package at a time, so a failure names it:
    OperationError `FetchError`.

    This exists because rattler, when a download fails during an install, has already
    unlinked the package it was replacing (py-rattler 0.28): fetch first, then install."""
    import shutil

    for package in packages:
        records = [package.record]
        ignored = None
        if package.noarch == "python" and python is not None:
            records.append(python.record)
            ignored = {python.name}
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            with _cache_lock_where_flock_works(package_cache_dir(cache_dir)):
                _run(
                    rattler.install(
                        records,
                        target_prefix=scratch,
                        cache_dir=package_cache_dir(cache_dir),
                        installed_packages=[],
                        ignored_packages=ignored,
                        show_progress=False,
                        execute_link_scripts=False,
                    )
                )
        except BaseException as exc:
            if not _is_rattler_error(exc):
                raise
            raise FetchError(package, _first_and_cause(exc)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


class FetchError(OperationError):
    """A package could be neither found in the cache nor downloaded."""

    def __init__(self, package: PackageInfo, reason: str):
        super().__init__(
            f"cannot fetch {package.name} {package.version} ({package.build}): {reason}"
        )
        self.package = package
        self.reason = reason


# --------------------------------------------------------------------------- site layers
#
# rattler 0.28 reads a layered cache (`PackageCache.from_layers`) but opens every entry's
# `<entry>.lock` (revision + sha256) for writing even to validate it, and takes its global
# `.cache.lock` in the first layer whose directory has a write bit: a layer the user cannot
# write fails the install with EACCES (checked as a real non-root user). So the user's own
# `cache_dir/site/` stands in for the site's layers: for each package served from a layer it
# holds a symlink to the layer's entry and a `.lock` of its own, and is given to rattler as
# the first layer, filtered to exactly those packages; `cache_dir/pkgs` follows for the rest.
# rattler links the files through the symlink (reflink, else hardlink, else copy), and never
# writes into the layer. A record's `extracted_package_dir` names the symlink; its real path
# is the layer's entry.

SITE_VIEW = "site"
_LOCK = struct.Struct(">Q")  # rattler's cache metadata: a big-endian u64 revision, a sha256


def site_view_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / SITE_VIEW


def entry_name(package: PackageInfo) -> str:
    return package.file_name.removesuffix(".tar.bz2").removesuffix(".conda")


def cached_sha256(entry: Path) -> str | None:
    """The sha256 rattler recorded for a cache entry (in `<entry>.lock`), if any."""
    try:
        with open(f"{entry}.lock", "rb") as f:
            data = f.read(_LOCK.size + 32)
    except OSError:
        return None
    return data[_LOCK.size :].hex() if len(data) == _LOCK.size + 32 else None


def write_cache_metadata(entry: Path, sha256: str | None, mode: int = 0o644) -> None:
    """Write `<entry>.lock` as rattler does for an entry it extracted (atomically)."""
    data = _LOCK.pack(1) + (bytes.fromhex(sha256) if sha256 else b"")
    path = Path(f"{entry}.lock")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _from_layers(
    layers: Sequence[Path], packages: Sequence[PackageInfo], owners: Collection[int]
) -> tuple[dict[str, tuple[PackageInfo, Path]], list[str]]:
    """{entry name: (package, the layer's entry)} for the packages a layer holds whole, in
    the order the layers are given; and a warning for each entry skipped (damaged, changeable
    by others, or another build under the same name)."""
    served: dict[str, tuple[PackageInfo, Path]] = {}
    warnings: list[str] = []
    for package in packages:
        name = entry_name(package)
        for layer in layers:
            entry = Path(layer) / name
            try:
                if not stat.S_ISDIR(os.lstat(entry).st_mode):
                    continue
            except OSError:
                continue
            why = check_cache_entry(entry, owners)
            site_sha = cached_sha256(entry)
            if why is None and package.sha256 and site_sha and site_sha != package.sha256:
                why = "it is another build of that name (its sha256 differs)"
            if why is not None:
                warnings.append(
                    f"skipped {name} in the site package cache {layer}: {why}; "
                    "using your own cache (tell the site admins)"
                )
                continue
            served[name] = (package, entry)
            break
    return served, warnings


def _site_view(cache_dir: Path, served: dict[str, tuple[PackageInfo, Path]]):
    """The PackageCache for an install that links `served` from site layers (see above)."""
    view = site_view_dir(cache_dir)
    view.mkdir(parents=True, exist_ok=True)
    for name, (package, entry) in served.items():
        link = view / name
        try:
            current = os.readlink(link)
        except FileNotFoundError:
            current = None
        except OSError:  # not a link: what rattler extracted here once; set it aside
            trash = Path(cache_dir) / ".hpcenv-trash"
            trash.mkdir(mode=0o700, exist_ok=True)
            os.rename(link, trash / f"{name}-site-{os.getpid()}-{time.time_ns()}")
            current = None
        if current != str(entry):
            tmp = view / f".{name}.link-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(entry, tmp)
            os.replace(tmp, link)
        write_cache_metadata(link, package.sha256)
    first = rattler.PackageCacheLayer(view)
    for package, _entry in served.values():
        first = first.with_filter(rattler.MatchSpec(package.pin))
    own = rattler.PackageCacheLayer(package_cache_dir(cache_dir))
    return rattler.PackageCache.from_layers([first, own])


def fetch_package(package: PackageInfo, dest: Path) -> str:
    """Download `package` and extract it into `dest` (made here); return its sha256, checked
    against the record's when the record has one."""
    from rattler.networking import Client
    from rattler.package_streaming import download_and_extract

    want = bytes.fromhex(package.sha256) if package.sha256 else None
    try:
        sha, _md5 = _run(download_and_extract(Client(), package.url, Path(dest), want))
    except BaseException as exc:
        if not _is_rattler_error(exc) and not isinstance(exc, (OSError, ValueError)):
            raise
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OperationError(
            f"downloading {package.file_name} failed: {_first_and_cause(exc)}", hint=MIRROR_HINT
        ) from None
    got = bytes(sha).hex()
    if package.sha256 and got != package.sha256:
        raise OperationError(
            f"{package.file_name} does not match its sha256 in the channel's repodata",
            hint="the channel or mirror serves a changed file; tell its maintainers",
        )
    return got


def read_prefix(prefix: Path) -> PrefixState:
    """The packages recorded in `prefix/conda-meta/*.json`, and the records that are damaged
    (named, never skipped silently)."""
    meta = Path(prefix) / "conda-meta"
    out, damaged, relative = [], [], []
    try:
        paths = sorted(meta.glob("*.json"))
    except OSError:
        paths = []
    for path in paths:
        try:
            record = rattler.PrefixRecord.from_path(path)
        except (rx.IoError, ValueError, TypeError) as exc:
            stem = path.name.removesuffix(".json")
            name = stem.rsplit("-", 2)[0] if stem.count("-") >= 2 else stem
            damaged.append(DamagedRecord(str(path), name, _first_line(exc)))
            continue
        extracted = record.extracted_package_dir
        requested = list(record.requested_specs)
        if record.requested_spec and record.requested_spec not in requested:
            requested.insert(0, record.requested_spec)
        info = _info(record, str(extracted) if extracted else None, requested, str(path))
        if info.noarch == "python" and _package_relative_paths(record):
            relative.append(str(path))
        out.append(info)
    return PrefixState(tuple(out), tuple(damaged), tuple(relative))


def _package_relative_paths(record) -> bool:
    """conda (26) writes `site-packages/x.py` into paths_data of noarch:python records while
    `files` holds `lib/python3.X/site-packages/x.py`; rattler unlinks by paths_data."""
    files = {str(f) for f in record.files}
    try:
        entries = record.paths_data.paths
    except AttributeError:
        return False
    return any(str(e.relative_path) not in files for e in entries)


_NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


@contextlib.contextmanager
def _cache_lock_where_flock_works(pkgs_dir: Path) -> Iterator[None]:
    """rattler takes an `flock` on `pkgs/.cache.lock` for every install and fails without one.
    On a filesystem with no flock (NFS without lockd, Lustre mounted noflock), that lock file
    is pointed, for this install, at a file on this node in our private runtime directory,
    where flock works. Across nodes hpcenv's own storage lock (a lock directory there) keeps
    installs one at a time; the link is removed afterwards, so nodes that can lock use the
    real file again."""
    lock_file = Path(pkgs_dir) / ".cache.lock"
    if os.path.islink(lock_file):  # left by an install that was killed
        os.unlink(lock_file)
    if not _flock_unsupported(lock_file):
        yield
        return
    import hashlib

    local = _runtime_dir() / (
        "rattler-cache-" + hashlib.sha256(str(lock_file).encode()).hexdigest()[:16] + ".lock"
    )
    link = lock_file.with_name(f".cache.lock.hpcenv-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(local, link)
    os.replace(link, lock_file)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(lock_file):
                os.unlink(lock_file)


def _flock_unsupported(lock_file: Path) -> bool:
    import fcntl

    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return False  # rattler will say what is wrong with the cache
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        return exc.errno in _NO_FLOCK
    finally:
        os.close(fd)
    return False


def _runtime_dir() -> Path:
    """A directory on this node only we can use: $XDG_RUNTIME_DIR/hpcenv, else hpcenv-UID in
    the temporary directory (refused if someone else made it)."""
    from hpcenv.storage import ensure_private_dir

    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return ensure_private_dir(Path(base) / "hpcenv")
    import tempfile

    return ensure_private_dir(Path(tempfile.gettempdir()) / f"hpcenv-{os.geteuid()}")


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
    """The packages recorded in `prefix/conda-meta/*.json` (damaged records left out: use
    `read_prefix` where they must be reported)."""
    return read_prefix(prefix).packages


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
    pypi: Sequence[tuple[str, str, str, str]] = (),
) -> None:
    """A lock file (rattler's format, which pixi reads): exact URLs and hashes. `pypi` are
    PyPI packages as (name, version, URL, sha256 hex): py-rattler 0.28 writes their location
    only, so the `sha256:` of each is added to its entry after (the field pixi writes)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(
            f"cannot write {path}: {path.parent} is not a directory",
            hint="give -o a file in an existing directory",
        )
    try:
        plat = rattler.LockPlatform(target_platform or platform())
        lock = rattler.LockFile([plat])
        for p in packages:
            lock.add_conda_package("default", plat, p.record)
        for name, version, url, _sha in pypi:
            lock.add_pypi_package("default", plat, name, version, url)
        lock.set_channels("default", [rattler.LockChannel(c) for c in channels])
        lock.to_path(path)
        if pypi:
            _add_pypi_hashes(path, {url: sha for _n, _v, url, sha in pypi})
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise _as_os_error(exc, path) or OperationError(
            f"writing the lock file {path} failed: {_first_line(exc)}"
        ) from None


def _add_pypi_hashes(path: Path, hashes: dict[str, str]) -> None:
    """Give each `- pypi: URL` entry of the top-level `packages:` its `sha256:` line, then
    check that rattler reads every hash back."""
    import yaml

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out, top, done = [], False, set()
    for line in lines:
        out.append(line)
        if not line.startswith((" ", "-")):
            top = line.rstrip() == "packages:"
        elif top and line.startswith("- pypi: "):
            url = yaml.safe_load(line[2:])["pypi"]
            if url in hashes:
                out.append(f"  sha256: '{hashes[url]}'\n")  # quoted: all digits is an int
                done.add(url)
    if done != set(hashes):
        raise OperationError(f"writing the PyPI hashes into the lock file {path} failed")
    path.write_text("".join(out), encoding="utf-8")
    read = {entry[0]: entry[3] for entry in read_lock_pypi(path)}
    if sorted(read.values()) != sorted(hashes.values()):
        raise OperationError(f"the lock file {path} does not read back its PyPI hashes")


def read_lock_pypi(path: Path, target_platform: str | None = None):
    """The PyPI packages of a lock file's default environment for this platform, as
    (name, version, location, sha256 hex or None); a location is a URL or a local path."""
    name = target_platform or platform()
    try:
        lock = rattler.LockFile.from_path(path)
        env = lock.default_environment()
        plat = next((p for p in lock.platforms() if p.name == name), None)
        found = env.pypi_packages_for_platform(plat) if env is not None and plat else None
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise UsageError(f"{path} is not a readable lock file: {_first_line(exc)}") from None
    written = _yaml_pypi_hashes(path) if found else {}
    out = []
    for p in found or []:
        hashes = p.hashes
        sha = hashes.sha256 if hashes is not None and hashes._hashes is not None else None
        out.append((p.name, p.version, p.location, sha.hex() if sha else written.get(p.location)))
    return out


def _yaml_pypi_hashes(path: Path) -> dict[str, str]:
    """location -> sha256 of the lock's PyPI entries, read from the YAML: rattler drops the
    hash of an entry whose location is a local file (it reads the location as a path)."""
    from urllib.parse import unquote, urlsplit

    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    out = {}
    for entry in (doc.get("packages") if isinstance(doc, dict) else None) or []:
        if isinstance(entry, dict) and isinstance(entry.get("pypi"), str):
            url, sha = entry["pypi"], entry.get("sha256")
            if isinstance(sha, str):
                out[url] = sha
                if url.startswith("file://"):
                    out[unquote(urlsplit(url).path)] = sha
    return out


def read_lock(path: Path, target_platform: str | None = None) -> list[PackageInfo]:
    """The exact packages of a lock file's default environment for this platform."""
    name = target_platform or platform()
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise UsageError(f"cannot read the lock file {path}: {exc.strerror}") from None
    if size > MAX_LOCK_BYTES:
        raise UsageError(
            f"{path} is larger than {MAX_LOCK_BYTES // 2**20} MiB: too large for a lock file"
        )
    try:
        lock = rattler.LockFile.from_path(path)
        env = lock.default_environment()
        plat = next((p for p in lock.platforms() if p.name == name), None)
        records = (
            env.conda_repodata_records_for_platform(plat) if env is not None and plat else None
        )
    except BaseException as exc:
        if not _is_rattler_error(exc):
            raise
        raise UsageError(f"{path} is not a readable lock file: {_first_line(exc)}") from None
    if env is None or plat is None:
        raise UsageError(f"{path} has no packages for {name}", hint="re-lock on this platform")
    return [_info(r) for r in records or []]


def lock_channels(path: Path) -> list[str]:
    """The channels a lock file's default environment names (for the env's record)."""
    try:
        env = rattler.LockFile.from_path(path).default_environment()
    except Exception:  # noqa: BLE001 - read_lock reports an unreadable file
        return []
    return [str(c) for c in env.channels()] if env is not None else []


def has_cached(cache_dir: Path, package: PackageInfo) -> bool:
    stem = package.file_name.removesuffix(".tar.bz2").removesuffix(".conda")
    return os.path.isdir(package_cache_dir(cache_dir) / stem)
