"""What `hpcenv verify` finds: per file, per package, per env (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FileIssue:
    path: str  # relative to the prefix
    detail: str  # "68 bytes, not 112", "not readable (mode 0o000)", "content differs"
    in_the_way: bool = False  # a directory where a file belongs, or the other way round


@dataclass(frozen=True)
class PackageCheck:
    """What one package lost. `missing` and `changed` make it broken; `extra` does not."""

    name: str
    version: str
    build: str  # "" for a PyPI package
    source: str  # conda | pypi
    record: str  # conda-meta/NAME-VERSION-BUILD.json or the dist-info dir, relative
    files: int  # paths checked
    missing: tuple[str, ...] = ()
    changed: tuple[FileIssue, ...] = ()
    extra: tuple[str, ...] = ()
    unchecked: tuple[FileIssue, ...] = ()  # full: content not comparable, and why
    counts: tuple[int, int, int] = (0, 0, 0)  # missing, changed, extra (lists may be cut)
    installer: str | None = None  # PyPI: who installed it (INSTALLER)
    url: str = ""  # conda: the archive's URL

    @property
    def broken(self) -> bool:
        return bool(self.counts[0] or self.counts[1])

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" + (f" ({self.build})" if self.build else "")


@dataclass(frozen=True)
class UnreadableRecord:
    """A conda-meta/*.json that cannot be read: its package is invisible to every tool."""

    path: str
    name: str  # guessed from the file name
    version: str
    build: str
    reason: str


@dataclass(frozen=True)
class EnvCheck:
    name: str | None
    prefix: str
    full: bool
    packages: int  # packages checked
    files: int  # paths checked
    problems: tuple[PackageCheck, ...] = ()  # packages with something to report
    unreadable: tuple[UnreadableRecord, ...] = ()
    complete: bool = True  # False: the time ran out (see `packages`)
    total_packages: int = 0
    error: str | None = None  # the env could not be read at all
    interrupted_repair: bool = False
    seconds: float = 0.0

    @property
    def broken(self) -> bool:
        return bool(self.error or self.unreadable or any(p.broken for p in self.problems))

    @property
    def broken_packages(self) -> tuple[PackageCheck, ...]:
        return tuple(p for p in self.problems if p.broken)


@dataclass(frozen=True)
class VerifyReport:
    envs: tuple[EnvCheck, ...]
    full: bool
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    @property
    def broken(self) -> bool:
        return any(e.broken for e in self.envs)
