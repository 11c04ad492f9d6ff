"""What a repair must know about a broken package before it plans: the state of its cache
entry, whether the damage is shared through an inode, what stands in its way, whether its
source is gone, and where its PyPI packages came from."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from hpcenv import (
    pkgcache,
)
from hpcenv.errors import OperationError
from hpcenv.storage import Layout
from hpcenv.verify import PackageCheck


def _cache_state(layout: Layout, prefix: Path, info, pkg: PackageCheck | None) -> tuple[str, str]:
    """("cached" | "re-extract" | "fetch", why) for one conda package."""

    entry = pkgcache.cache_entry(layout.package_cache, info)
    if not entry.is_dir():
        return "fetch", "not in the package cache"
    why = pkgcache.check_cache_entry(entry)
    if why is None and pkg is not None:
        why = _cache_shares_damage(prefix, entry, info, pkg)
    return ("re-extract", why) if why else ("cached", "")


def _cache_path(entry: Path, info, rel: str) -> Path:
    """Where the cache entry holds the file the env has at `rel` (noarch: python packages
    keep `site-packages/` and `python-scripts/` there)."""
    if info.noarch == "python":
        if "/site-packages/" in rel:
            return entry / ("site-packages/" + rel.split("/site-packages/", 1)[1])
        if rel.startswith("bin/"):
            return entry / ("python-scripts/" + rel[4:])
    return entry / rel


def _cache_shares_damage(prefix: Path, entry: Path, info, pkg: PackageCheck) -> str | None:
    """Why the cached copy is damaged too: a changed env file that is the cache's own inode
    (a hardlink shares every change), or the cached file is not readable."""
    for issue in pkg.changed:
        cached = _cache_path(entry, info, issue.path)
        try:
            env_st = os.lstat(prefix / issue.path)
            cache_st = os.lstat(cached)
        except OSError:
            continue
        if (env_st.st_dev, env_st.st_ino) == (cache_st.st_dev, cache_st.st_ino):
            return f"{issue.path} is the cache's own file ({issue.detail})"
        if stat.S_ISREG(cache_st.st_mode) and not cache_st.st_mode & 0o400:
            return f"{cached.relative_to(entry)} is not readable"
    return None


def _shares_inode(prefix: Path, pkg: PackageCheck) -> bool:
    """Whether a changed file of a PyPI package is also linked elsewhere (uv's cache)."""
    for issue in pkg.changed:
        try:
            if os.lstat(prefix / issue.path).st_nlink > 1:
                return True
        except OSError:
            continue
    return False


def _in_the_way(prefix: Path, pkg: PackageCheck) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(entries that stand where a package's file or directory belongs, directories on the
    way that cannot be searched)."""
    aside, unlock = [], []
    for issue in pkg.changed:
        if issue.in_the_way:
            aside.append(issue.path)
        elif issue.detail.startswith("cannot be checked"):
            d = _unsearchable_ancestor(prefix, issue.path)
            if d is not None and d not in unlock:
                unlock.append(d)
    return tuple(aside), tuple(unlock)


def _unsearchable_ancestor(prefix: Path, rel: str) -> str | None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        try:
            st = os.lstat(prefix / d)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o500 != 0o500:
            return d
    return None


def _check_reachable(layout: Layout, prefix: Path, info, how: str) -> None:
    """A package to download from a `file://` channel that lost it: refuse now, nothing
    changed. Other URLs are tried by the fetch step, before the env is touched."""
    if how not in ("fetch", "re-extract", "record") or not info.url.startswith("file://"):
        return
    from urllib.parse import unquote, urlparse

    path = Path(unquote(urlparse(info.url).path))
    if not path.is_file():
        raise gone(layout, prefix, info, f"{path} does not exist", from_channel=True)


def gone(
    layout: Layout, prefix: Path, info, reason: str, *, from_channel: bool = False
) -> OperationError:
    """The error for a package nobody can give back: which one, and the lock to re-create from."""
    from hpcenv.envs.plan import EnvMeta

    meta = EnvMeta.load(prefix)
    env = meta.name if meta and meta.name else str(prefix)
    lock = f"the lock it was made from, {meta.lockfile}" if meta and meta.lockfile else None
    hint = (
        f"re-create the env from {lock}, with a channel that has the package"
        if lock
        else f"write a lock (`hpcenv export {env} --lock -o {Path(env).name}.lock`) and "
        f"re-create the env from it with a channel or mirror that has the package "
        f"(`hpcenv create {Path(env).name} -f {Path(env).name}.lock --force`)"
    )
    where = (
        "is gone from the package cache and from its channel"
        if from_channel
        else "is not in the package cache and cannot be downloaded again"
    )
    return OperationError(
        f"cannot repair {env}: {info.name} {info.version} ({info.build}) {where} ({reason}); "
        "nothing in the env was changed",
        hint=hint,
    )


def _pypi_origins(prefix: Path) -> Callable[[str, str], str]:
    """What installs a PyPI package again: the artifact hpcenv recorded when it installed it
    (pypi.json: the same wheel, checked by its hash, with the same direct_url.json), else
    NAME==VERSION from the env's index options."""
    from hpcenv.pypi import canonical, recorded

    known = {canonical(p.name): p for p in recorded(prefix)}

    def origin(name: str, version: str) -> str:
        rec = known.get(canonical(name))
        return rec.direct_reference if rec and rec.version == version else f"{name}=={version}"

    return origin
