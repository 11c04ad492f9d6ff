"""`hpcenv usage`: what uses space and files: home (against its quota), the storage area,
each cache and each environment, with hardlinks counted once.

The caches and the environments are walked in one `treescan.scan_many` pass, so a file
linked from the package cache into two envs is unique to none of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hpcenv.quota import Quota, home_quota
from hpcenv.registry import discover, is_env
from hpcenv.storage import Layout, free_bytes
from hpcenv.treescan import TreeUsage, scan_many


@dataclass(frozen=True)
class UsageRow:
    kind: str  # home | storage | cache | env
    name: str
    path: str
    exists: bool
    apparent_bytes: int
    unique_bytes: int  # what deleting it would free (hardlinks to elsewhere not counted)
    disk_bytes: int
    files: int
    last_used: float | None
    site_bytes: int = 0  # an env's files that are a site package cache's (sitelink.site_share)


@dataclass(frozen=True)
class UsageReport:
    home: UsageRow
    storage: UsageRow
    caches: tuple[UsageRow, ...]
    envs: tuple[UsageRow, ...]
    home_quota: Quota | None
    storage_free_bytes: int | None
    warnings: tuple[str, ...] = ()
    site_extents_counted: bool = True  # False: reflinked files could not be told apart


def _row(kind: str, name: str, path: Path, u: TreeUsage) -> UsageRow:
    return UsageRow(
        kind=kind,
        name=name,
        path=str(path),
        exists=u.exists and os.path.exists(path),
        apparent_bytes=u.apparent_bytes,
        unique_bytes=u.unique_bytes,
        disk_bytes=u.disk_bytes,
        files=u.files,
        last_used=u.last_used,
    )


def usage_report(
    layout: Layout, home_quota_setting: int | None = None, layers: Sequence[Path] = ()
) -> UsageReport:
    """Measure home, storage, each cache and each known env (hardlinks counted once).

    An env's files that came from a site package cache (`layers`) and still share its
    storage (hardlinks, reflinks) are the site's: counted in `site_bytes`, not in the env's
    `unique_bytes` (a hardlinked one never was: its other link is in the layer)."""
    # home and storage are disjoint trees (storage is never in home; home's links to storage
    # are not followed); caches and envs lie inside storage, so they get their own pass where
    # an inode shared between the package cache and envs is unique to none of them.
    outer = scan_many([layout.home, layout.root])
    caches = layout.caches()
    prefixes = discover(layout).prefixes()
    inner_paths = [Path(os.path.realpath(p)) for p in [*caches.values(), *prefixes]]
    inner = scan_many(list(dict.fromkeys(inner_paths)))
    warnings = []
    cache_rows = []
    for name, path in caches.items():
        cache_rows.append(_row("cache", name, path, inner[Path(os.path.realpath(path))]))
    env_rows = []
    counted = True
    for prefix, name in prefixes.items():
        u = inner[Path(os.path.realpath(prefix))]
        row = _row("env", name or str(prefix), prefix, u)
        if layers:
            from hpcenv.sitelink import site_share

            share = site_share(prefix, layers)
            counted = counted and share.extents_counted
            unique = max(0, row.unique_bytes - share.reflinked_bytes)
            row = replace(row, site_bytes=share.bytes, unique_bytes=unique)
        env_rows.append(row)
        if is_env(prefix) is False:
            warnings.append(f"environment {name or prefix} is registered but {prefix} is missing")
    home = _row("home", "home", layout.home, outer[layout.home])
    quota = home_quota(layout.home, home_quota_setting, used_bytes=lambda: home.disk_bytes)
    try:
        free = free_bytes(layout.root)
    except OSError:
        free = None
    return UsageReport(
        home=home,
        storage=_row("storage", "storage", layout.root, outer[layout.root]),
        caches=tuple(cache_rows),
        envs=tuple(env_rows),
        home_quota=quota,
        storage_free_bytes=free,
        warnings=tuple(warnings),
        site_extents_counted=counted,
    )
