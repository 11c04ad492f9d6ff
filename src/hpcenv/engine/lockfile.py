"""Lock files in rattler's format (which pixi reads): exact URLs and hashes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import rattler

from hpcenv.engine.seam import (
    PackageInfo,
    as_os_error,
    first_line,
    info,
    is_rattler_error,
    platform,
)
from hpcenv.errors import OperationError, UsageError

MAX_LOCK_BYTES = 64 * 1024 * 1024


def write_lock(
    packages: Sequence[PackageInfo],
    channels: Sequence[str],
    path: Path,
    target_platform: str | None = None,
) -> None:
    """A lock file (rattler's format, which pixi reads): exact URLs and hashes."""
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
        lock.set_channels("default", [rattler.LockChannel(c) for c in channels])
        lock.to_path(path)
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise as_os_error(exc, path) or OperationError(
            f"writing the lock file {path} failed: {first_line(exc)}"
        ) from None


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
        if not is_rattler_error(exc):
            raise
        raise UsageError(f"{path} is not a readable lock file: {first_line(exc)}") from None
    if env is None or plat is None:
        raise UsageError(f"{path} has no packages for {name}", hint="re-lock on this platform")
    return [info(r) for r in records or []]


def lock_channels(path: Path) -> list[str]:
    """The channels a lock file's default environment names (for the env's record)."""
    try:
        env = rattler.LockFile.from_path(path).default_environment()
    except Exception:  # noqa: BLE001 - read_lock reports an unreadable file
        return []
    return [str(c) for c in env.channels()] if env is not None else []
