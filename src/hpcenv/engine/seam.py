"""rattler's edge: its exceptions (none escapes the engine), its async calls run to the end,
and its records as hpcenv's frozen `PackageInfo`."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import rattler
from rattler import exceptions as rx

MIRROR_HINT = 'set a mirror: `mirrors = { conda-forge = "https://mirror/conda-forge" }` in ~/.config/hpcenv/config.toml'

# Every exception rattler raises (its own classes, and a Rust panic surfaced by PyO3, which
# derives from BaseException): no call into rattler lets one escape this module.
RATTLER_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in vars(rx).values()
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "exceptions"
)
MAX_LOCK_BYTES = 64 * 1024 * 1024
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def is_rattler_error(exc: BaseException) -> bool:
    return isinstance(exc, RATTLER_ERRORS) or type(exc).__name__ == "PanicException"


def as_os_error(exc: BaseException, path: Path | str | None) -> OSError | None:
    """rattler's "... (os error 13)" as the OSError it was, so the CLI names the errno's cause
    and fix; None when the message holds no OS error."""
    found = _OS_ERROR.findall(str(exc))
    if not found:
        return None
    code = int(found[-1])
    return OSError(code, os.strerror(code), str(path) if path is not None else None)


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__


def first_and_cause(exc: BaseException) -> str:
    """rattler's first line and, when it has a chain of causes, the last (the root cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) < 2:
        return first_line(exc)
    return f"{lines[0]}: {lines[-1].removeprefix('Caused by:').strip()}"


def run(coro):
    try:
        return asyncio.run(coro)
    finally:
        # rattler's tokio threads may still drop a Python object just after the loop ends;
        # exiting the interpreter at that moment crashed ~5% of short scripts (SIGSEGV in
        # Py_FinalizeEx). No shutdown API exists (PyO3/pyo3-async-runtimes#40): let it settle.
        time.sleep(0.002)


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


def info(record, extracted_dir=None, requested=(), record_path=None) -> PackageInfo:
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


def repodata_cache_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "repodata"


def package_cache_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "pkgs"


def platform() -> str:
    return str(rattler.Subdir.current())
