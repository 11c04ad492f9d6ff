"""Home's quota: `quota -s` where it answers for home's filesystem, else the `home_quota`
setting (usage then measured by walking home).

`parse_quota` reads linuxquota's output (also plain `quota`, wrapped or `-w` lines);
`home_quota` picks home's row by the device of home's mount.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QuotaLine:
    """One filesystem of `quota -s` output (bytes; file counts; 0 means no limit)."""

    filesystem: str
    used_bytes: int
    soft_bytes: int
    hard_bytes: int
    space_grace: str | None
    files: int
    files_soft: int
    files_hard: int
    files_grace: str | None


@dataclass(frozen=True)
class Quota:
    """Home's quota and how much of it is used; `limit_bytes` is the soft limit, else the hard."""

    source: str  # "quota -s" | "home_quota setting"
    filesystem: str | None
    used_bytes: int
    limit_bytes: int | None
    hard_bytes: int | None = None
    files: int | None = None
    files_limit: int | None = None
    grace: str | None = None
    used_percent: float | None = None
    files_percent: float | None = None


_SPACE = re.compile(r"^(\d+)([KMGT]?)(\*?)$")
_COUNT = re.compile(r"^(\d+)([kmgt]?)(\*?)$")
_SPACE_UNITS = {"": 1024, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_quota(text: str) -> list[QuotaLine]:
    """The user section of `quota -s` output (linuxquota; also plain `quota`, and wrapped or
    `-w` lines). Space is printed in KiB with a K/M/G/T suffix (bare numbers are KiB blocks),
    file counts with a decimal k/m/g/t suffix; a `*` marks a value over its soft limit and is
    followed by a grace column."""
    rows: list[QuotaLine] = []
    device: str | None = None
    in_user = False
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if line.startswith("Disk quotas for "):
            in_user = line.startswith("Disk quotas for user ")
            device = None
            continue
        if not in_user or tokens[0] == "Filesystem":
            continue
        if not _SPACE.match(tokens[0]):
            device, tokens = tokens[0], tokens[1:]
            if not tokens:  # a long device name: the numbers follow on the next line
                continue
        if device is None:
            continue
        parsed = _quota_numbers(tokens)
        if parsed is not None:
            rows.append(QuotaLine(device, *parsed))
        device = None
    return rows


def _quota_numbers(tokens: list[str]) -> tuple | None:
    def take(pattern: re.Pattern, units: dict[str, int]) -> tuple[int, bool] | None:
        if not tokens:
            return None
        m = pattern.match(tokens.pop(0))
        if m is None:
            return None
        return int(m.group(1)) * units[m.group(2)], bool(m.group(3))

    out: list = []
    for pattern, units in ((_SPACE, _SPACE_UNITS), (_COUNT, _COUNT_UNITS)):
        used, soft, hard = take(pattern, units), take(pattern, units), take(pattern, units)
        if used is None or soft is None or hard is None:
            return None
        # a `*` (over the soft limit) is followed by the grace time ("6days", "23:59",
        # "none"), which is left empty when no grace time was ever set
        grace = None
        if used[1] and tokens and not (pattern is _SPACE and _COUNT.match(tokens[0])):
            grace = tokens.pop(0)
        out += [used[0], soft[0], hard[0], grace]
    return tuple(out)


def mount_device(path: Path, mounts_text: str | None = None) -> str | None:
    """The device (as /proc/self/mounts and `quota` name it) of the mount holding `path`."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        device, point = (_unescape_mount(p) for p in parts[:2])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), device)
    return best[1] if best else None


def _unescape_mount(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _percent(used: int | None, limit: int | None) -> float | None:
    if used is None or not limit:
        return None
    return round(100.0 * used / limit, 1)


def quota_for(rows: list[QuotaLine], device: str | None) -> QuotaLine | None:
    """The row of `device`; with no device known, the only row there is."""
    for row in rows:
        if device is not None and (
            row.filesystem == device
            or (
                device.startswith("/dev/")
                and os.path.realpath(row.filesystem) == os.path.realpath(device)
            )
        ):
            return row
    if device is None and len(rows) == 1:
        return rows[0]
    return None


def home_quota(
    home: Path,
    configured: int | None,
    *,
    used_bytes: Callable[[], int] | None = None,
    quota_command: str = "quota",
) -> Quota | None:
    """Home's quota from `quota -s` where it answers for home's filesystem, else the
    `home_quota` setting (usage then measured by walking home), else None."""
    exe = shutil.which(quota_command)
    if exe is not None:
        try:
            # exit status 1 means "over quota" (or no answer from rquotad): read stdout anyway
            out = subprocess.run(
                [exe, "-s", "-w"], capture_output=True, text=True, timeout=15
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        row = quota_for(parse_quota(out), mount_device(home))
        if row is not None and (row.soft_bytes or row.hard_bytes or row.files_soft):
            limit = row.soft_bytes or row.hard_bytes or None
            files_limit = row.files_soft or row.files_hard or None
            return Quota(
                source="quota -s",
                filesystem=row.filesystem,
                used_bytes=row.used_bytes,
                limit_bytes=limit,
                hard_bytes=row.hard_bytes or None,
                files=row.files,
                files_limit=files_limit,
                grace=row.space_grace or row.files_grace,
                used_percent=_percent(row.used_bytes, limit),
                files_percent=_percent(row.files, files_limit),
            )
    if configured:
        if used_bytes is not None:
            used = used_bytes()
        else:
            from hpcenv.treescan import scan

            used = scan(home).disk_bytes
        return Quota(
            source="home_quota setting",
            filesystem=None,
            used_bytes=used,
            limit_bytes=configured,
            used_percent=_percent(used, configured),
        )
    return None
