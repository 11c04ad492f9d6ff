"""What `hpcenv repair` plans and reports (frozen dataclasses), and where its journal and work lie."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.registry import META_DIR
from hpcenv.storage import Layout

ASIDE_DIR = META_DIR / "repair-aside"
_RECORD_ONLY = ("requested_spec", "requested_specs")  # fields rattler leaves empty


@dataclass(frozen=True)
class PackageFix:
    """How one broken package is repaired (the same line for --dry-run and the real run)."""

    name: str
    version: str
    build: str  # "" for PyPI
    source: str  # conda | pypi
    how: str  # conda: cached | re-extract | fetch | record; pypi: uv
    why: str  # what is wrong with it, and with its cached copy
    missing: int
    changed: int
    origin: str  # conda: the archive URL; pypi: the requirement uv installs
    aside: tuple[str, ...] = ()  # entries in the way, moved to etc/hpcenv/repair-aside
    unlock: tuple[str, ...] = ()  # directories that get their owner's permission back
    uv_cache_clean: bool = False  # pypi: uv's cache shares the damaged inode

    def describe(self) -> str:
        what = f"{self.name} {self.version}" + (f" ({self.build})" if self.build else "")
        lost = ", ".join(
            f"{n} {kind}" for n, kind in ((self.missing, "missing"), (self.changed, "changed")) if n
        )
        how = {
            "cached": "link again from the package cache",
            "re-extract": f"extract again from {self.origin} (the cached copy is damaged: "
            f"{self.why}), then link",
            "fetch": f"download again from {self.origin} (not in the package cache), then link",
            "record": f"install again from {self.origin} (its record is unreadable: {self.why})",
            "uv": (
                "remove it from uv's cache (it shares the damaged file), then "
                if self.uv_cache_clean
                else ""
            )
            + f"reinstall {self.origin} with uv",
        }[self.how]
        line = f"{what} [{self.source}]: {how}" + (f" ({lost})" if lost else "")
        for path in self.aside:
            line += f"; move {path} aside to {ASIDE_DIR}/"
        for path in self.unlock:
            line += f"; give {path} its owner's permissions back"
        return line


@dataclass(frozen=True)
class RepairReport:
    name: str | None
    prefix: str
    dry_run: bool
    fixes: tuple[PackageFix, ...]
    checked_packages: int = 0
    checked_files: int = 0
    full: bool = False
    resumed: bool = False  # this run finished an interrupted repair
    aside_dir: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(f.describe() for f in self.fixes)


@dataclass(frozen=True)
class RepairPlan:
    report: RepairReport
    prefix: Path
    name: str | None
    records: tuple[str, ...] = ()  # conda-meta file names of the broken conda packages
    unreadable: dict = field(default_factory=dict, repr=False)  # record file -> pin
    key_set: frozenset = frozenset()  # the records when planned (refused if they change)


def journal_name(prefix: Path) -> str:
    return "repair-" + hashlib.sha256(os.fsencode(str(prefix))).hexdigest()[:16]


def _work_dir(layout: Layout, prefix: Path) -> Path:
    return layout.state_dir / "repair" / journal_name(prefix).removeprefix("repair-")
