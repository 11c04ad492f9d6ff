"""What a doctor check says: its status, what it found, and the command that fixes it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from hpcenv.strenum import StrEnum


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"  # works, but costs quota, time or reproducibility
    FAIL = "FAIL"  # broken now, or loses data or lets others plant code


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]
    fixed: tuple[str, ...] = ()  # what --fix changed (and where the backups are)

    @property
    def failed(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def q(path: Path | str) -> str:
    """A path as one shell word, for the fix commands."""
    return shlex.quote(str(path))
