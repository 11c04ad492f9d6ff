"""Packages into the package cache without touching an env: `fetch` (through rattler's
install into a scratch directory) and `fetch_package` (download and extract one)."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Sequence
from pathlib import Path

import rattler

from hpcenv.engine.seam import (
    MIRROR_HINT,
    PackageInfo,
    first_and_cause,
    is_rattler_error,
    package_cache_dir,
    run,
)
from hpcenv.errors import OperationError
from hpcenv.pkgcache import cache_lock_where_flock_works


class FetchError(OperationError):
    """A package could be neither found in the cache nor downloaded."""

    def __init__(self, package: PackageInfo, reason: str):
        super().__init__(
            f"cannot fetch {package.name} {package.version} ({package.build}): {reason}"
        )
        self.package = package
        self.reason = reason


def fetch(packages: Sequence[PackageInfo], cache_dir: Path, scratch: Path, python=None) -> None:
    """Put `packages` into the package cache (downloaded from their URLs and extracted)
    without touching any env: each is linked into the empty directory `scratch`, which is
    removed afterwards. A `noarch: python` package needs the env's `python` record to link
    (python itself is not linked). One package at a time, so a failure names it:
    OperationError `FetchError`.

    This exists because rattler, when a download fails during an install, has already
    unlinked the package it was replacing (py-rattler 0.28): fetch first, then install."""
    for package in packages:
        records = [package.record]
        ignored = None
        if package.noarch == "python" and python is not None:
            records.append(python.record)
            ignored = {python.name}
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            with cache_lock_where_flock_works(package_cache_dir(cache_dir)):
                run(
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
            if not is_rattler_error(exc):
                raise
            raise FetchError(package, first_and_cause(exc)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def fetch_package(package: PackageInfo, dest: Path) -> str:
    """Download `package` and extract it into `dest` (made here); return its sha256, checked
    against the record's when the record has one."""
    from rattler.networking import Client
    from rattler.package_streaming import download_and_extract

    want = bytes.fromhex(package.sha256) if package.sha256 else None
    try:
        sha, _md5 = run(download_and_extract(Client(), package.url, Path(dest), want))
    except BaseException as exc:
        if not is_rattler_error(exc) and not isinstance(exc, (OSError, ValueError)):
            raise
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OperationError(
            f"downloading {package.file_name} failed: {first_and_cause(exc)}", hint=MIRROR_HINT
        ) from None
    got = bytes(sha).hex()
    if package.sha256 and got != package.sha256:
        raise OperationError(
            f"{package.file_name} does not match its sha256 in the channel's repodata",
            hint="the channel or mirror serves a changed file; tell its maintainers",
        )
    return got
