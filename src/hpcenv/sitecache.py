"""Site package caches: read-only layers of extracted packages that every user links from.

A site sets `package_caches = ["/apps/hpcenv/pkgs", ...]`; each is a directory of extracted
packages as rattler lays them out (`NAME-VERSION-BUILD/` and `NAME-VERSION-BUILD.lock`),
filled by an admin with `hpcenv cache fill` (`sitefill`). Every install, create and update
searches the trusted layers first, then the user's own cache (`STORAGE/.cache/rattler/pkgs`),
which gets only what no layer holds (`engine.install` links; see its notes on rattler), and
`sitelink` tells how the files came (reflink, hardlink, copy) and what that saved.

Trust (`why_untrusted`): a layer is used only if it, and every directory above it, belong to
root or to the `package_cache_owner` account and are writable by no group or other user (a
sticky directory such as /tmp aside, for the directories above); if the user reading it may
write it without being one of those owners, it is not used either. A package in a trusted
layer is used only if it is whole and the same holds for its files (`pkgcache.check_cache_entry`
with the owners); otherwise it is skipped with a warning and comes from the user's own cache.
hpcenv never repairs, cleans or writes a layer for a user: only `cache fill`, run by root or
the owner account, writes one.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcenv.settings import Settings
    from hpcenv.storage import Layout


# --------------------------------------------------------------------------- trust


@dataclass(frozen=True)
class SiteLayers:
    """The configured layers this user may link from, in search order."""

    paths: tuple[Path, ...] = ()
    owners: frozenset[int] = frozenset({0})
    warnings: tuple[str, ...] = ()  # one line per layer ignored


def layer_owners(settings: Settings) -> tuple[frozenset[int], list[str]]:
    """root, and the `package_cache_owner` account when it exists."""
    name = settings.package_cache_owner
    if not name:
        return frozenset({0}), []
    try:
        return frozenset({0, pwd.getpwnam(name).pw_uid}), []
    except KeyError:
        return frozenset({0}), [
            f"package_cache_owner {name!r} is not a user on this host; only root-owned "
            "site package caches are used"
        ]


def why_untrusted(path: Path, owners: Collection[int]) -> str | None:
    """Why this user must not link from the layer at `path` (None: it may)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    real = Path(os.path.realpath(path))
    for above in reversed(real.parents):
        why = why_loose(above, owners, sticky_ok=True)
        if why:
            return f"{above} above it {why}"
    if Path(path) != real:  # the link's own directories: whoever can write them can swap it
        for above in reversed(Path(path).parents):
            try:
                ast = os.lstat(above)
            except OSError:
                continue
            if not stat.S_ISLNK(ast.st_mode) and ast.st_mode & 0o002 and not _sticky(ast):
                return f"{above} above it is writable by everyone"
    why = why_loose(real, owners, sticky_ok=False)
    if why:
        return f"it {why}"
    if not os.access(real, os.R_OK | os.X_OK):
        return "you cannot read it"
    if os.geteuid() not in owners and os.access(real, os.W_OK):
        return "it is writable by you (an ACL?), so it is not the site's alone"
    return None


def _sticky(st: os.stat_result) -> bool:
    return bool(st.st_mode & stat.S_ISVTX) and st.st_uid == 0


def why_loose(path: Path, owners: Collection[int], *, sticky_ok: bool) -> str | None:
    """Why others than `owners` could change `path` (a phrase after its name), or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if st.st_uid not in owners:
        return f"belongs to {user_name(st.st_uid)}, not to root or package_cache_owner"
    if st.st_mode & 0o022 and not (sticky_ok and _sticky(st)):
        return f"is writable by {'everyone' if st.st_mode & 0o002 else 'its group'}"
    return None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def trusted_layers(settings: Settings) -> SiteLayers:
    """The configured layers this user may link from; a one-line warning for each other."""
    owners, warnings = layer_owners(settings)
    paths = []
    for path in dict.fromkeys(settings.package_caches):
        why = why_untrusted(path, owners)
        if why is None:
            paths.append(path)
        else:
            warnings.append(f"ignoring the site package cache {path}: {why}")
    return SiteLayers(tuple(paths), owners, tuple(warnings))


# --------------------------------------------------------------------------- list


@dataclass(frozen=True)
class CachedPackage:
    name: str  # the entry's directory name: NAME-VERSION-BUILD
    status: str  # ok | damaged: WHY


@dataclass(frozen=True)
class CacheRow:
    kind: str  # layer | own
    path: str
    trusted: bool
    why: str | None  # why a layer is not used
    packages: int
    apparent_bytes: int
    disk_bytes: int
    contents: tuple[CachedPackage, ...] = ()


@dataclass(frozen=True)
class CacheList:
    layers: tuple[CacheRow, ...]
    own: CacheRow | None  # the user's own cache (None without a storage area)
    owners: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def _entries(path: Path) -> list[str]:
    try:
        return sorted(
            e.name
            for e in os.scandir(path)
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
        )
    except OSError:
        return []


def list_caches(settings: Settings, layout: Layout | None) -> CacheList:
    """Every configured layer (used or why not, size, packages) and the user's own cache."""
    from hpcenv import engine

    owners, warnings = layer_owners(settings)
    rows = [
        _cache_row("layer", path, why_untrusted(path, owners), owners)
        for path in dict.fromkeys(settings.package_caches)
    ]
    own = None
    if layout is not None:
        own = _cache_row("own", engine.package_cache_dir(layout.package_cache), None, None)
    return CacheList(tuple(rows), own, tuple(sorted(user_name(u) for u in owners)), tuple(warnings))


def _cache_row(kind: str, path: Path, why: str | None, owners: Collection[int] | None) -> CacheRow:
    """A cache's size and its packages, each checked (`pkgcache.check_cache_entry`)."""
    from hpcenv import pkgcache
    from hpcenv.treescan import scan

    contents = []
    for name in _entries(path):
        damage = pkgcache.check_cache_entry(path / name, owners)
        contents.append(CachedPackage(name, "ok" if damage is None else f"damaged: {damage}"))
    u = scan(path)
    return CacheRow(
        kind, str(path), why is None, why, len(contents), u.apparent_bytes, u.disk_bytes,
        tuple(contents),
    )  # fmt: skip
