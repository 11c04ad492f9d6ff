"""What `hpcenv clean` would remove, and why: a plan, made without changing anything.

archive    a downloaded *.tar.bz2 / *.conda in a package cache (re-downloadable)
package    an extracted package in the rattler cache that no environment uses: no
           `conda-meta/*.json` of any known env points to it, and none of its files has
           a hardlink outside it (a link count the known envs do not explain means an
           env we do not know about still uses it: we keep it)
pip-cache, uv-cache   emptied by `pip cache purge` / `uv cache clean`
leftover   the temporary prefix of an interrupted `create`
pack       a pack whose env is gone or changed, unless a queued job stages it
trash      what an interrupted `clean` had already set aside
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.fsops import tree_size
from hpcenv.journal import pid_alive
from hpcenv.registry import discover, is_env
from hpcenv.storage import Layout
from hpcenv.strenum import StrEnum

ARCHIVE_SUFFIXES = (".tar.bz2", ".conda")


class CleanKind(StrEnum):
    ARCHIVE = "archive"
    PACKAGE = "package"
    PIP_CACHE = "pip-cache"
    UV_CACHE = "uv-cache"
    LEFTOVER = "leftover"
    PACK = "pack"
    IMAGE = "image"  # an older version of an image env that no queued or running job mounts
    TRASH = "trash"


class CleanStatus(StrEnum):
    PLANNED = "planned"
    REMOVED = "removed"  # nothing of it is left (a cache: emptied)
    KEPT = "kept"  # in use now (`detail` says why)
    FAILED = "failed"  # not, or not all, removed (`detail` says what is left)


@dataclass(frozen=True)
class CleanItem:
    kind: CleanKind
    path: str
    bytes: int  # planned: what removing it frees; after the run: what it freed
    files: int
    reason: str
    status: CleanStatus = CleanStatus.PLANNED
    detail: str = ""

    def describe_status(self) -> str:
        """The status as one phrase: "removed", "kept: in use now", "failed: WHY"."""
        return f"{self.status}: {self.detail}" if self.detail else str(self.status)


@dataclass(frozen=True)
class CleanPlan:
    layout: Layout = field(repr=False)
    items: tuple[CleanItem, ...]
    kept_packages: tuple[str, ...]  # extracted packages kept because something links them
    envs_checked: int
    warnings: tuple[str, ...] = ()
    resuming: bool = False  # an interrupted clean's journal is there: execute finishes it

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)


def packages_in_use(prefixes: Iterable[Path]) -> tuple[set[str], set[str], list[str]]:
    """(real paths of cache dirs, package file stems, unreadable records) that the
    `conda-meta/*.json` of these prefixes point to."""
    dirs: set[str] = set()
    stems: set[str] = set()
    bad: list[str] = []
    for prefix in prefixes:
        meta = Path(prefix) / "conda-meta"
        state = is_env(prefix)
        if state is None:
            bad.append(str(meta))
        if not state:
            continue
        for record in meta.glob("*.json"):
            try:
                data = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                bad.append(str(record))
                continue
            if not isinstance(data, dict):
                continue
            link = data.get("link") if isinstance(data.get("link"), dict) else {}
            for path in (data.get("extracted_package_dir"), link.get("source")):
                if isinstance(path, str) and path:
                    dirs.add(os.path.realpath(path))
            tarball = data.get("package_tarball_full_path")
            if isinstance(tarball, str) and tarball:
                dirs.add(os.path.realpath(_strip_archive(tarball)))
            fn = data.get("fn")
            if isinstance(fn, str) and fn:
                stems.add(_strip_archive(fn))
            elif all(isinstance(data.get(k), str) for k in ("name", "version", "build")):
                stems.add(f"{data['name']}-{data['version']}-{data['build']}")
    return dirs, stems, bad


def _strip_archive(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan_clean(layout: Layout) -> CleanPlan:
    """What `hpcenv clean` would remove, and why. Changes nothing."""
    from hpcenv.envs.journal import dead_leftovers, find_leftovers

    items: list[CleanItem] = []
    kept: list[str] = []
    warnings: list[str] = []
    leftovers = dead_leftovers(layout)
    live = set(find_leftovers(layout)) - set(leftovers)
    known = discover(layout).prefixes()
    prefixes = [*known, *live]
    used_dirs, used_stems, bad = packages_in_use(prefixes)
    for record in bad:
        warnings.append(
            f"{record} is not readable; the packages its env links are kept by link count only"
        )
    for trash in _trash_entries(layout):
        size, files = tree_size(trash)
        items.append(
            CleanItem(CleanKind.TRASH, str(trash), size, files, "set aside by an interrupted clean")
        )
    candidates: list[Path] = []
    for cache in (layout.pkgs_dir, layout.conda_pkgs):
        if os.path.isdir(cache) and not os.access(cache, os.W_OK | os.X_OK):
            # a site's read-only package cache, or someone else's: never touched
            warnings.append(f"{cache} is not writable by you; clean leaves it as it is")
            continue
        try:
            entries = sorted(os.scandir(cache), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file(follow_symlinks=False) and entry.name.endswith(ARCHIVE_SUFFIXES):
                size = entry.stat(follow_symlinks=False).st_size
                reason = "downloaded archive (re-downloadable)"
                items.append(CleanItem(CleanKind.ARCHIVE, entry.path, size, 1, reason))
            elif cache == layout.pkgs_dir and entry.is_dir(follow_symlinks=False):
                if os.path.realpath(entry.path) in used_dirs or entry.name in used_stems:
                    kept.append(entry.name)
                else:
                    candidates.append(Path(entry.path))
    items += _unused_packages(candidates, leftovers, kept)
    for kind, path, reason in (
        (CleanKind.PIP_CACHE, layout.pip_cache, "pip's cache (pip cache purge)"),
        (CleanKind.UV_CACHE, layout.uv_cache, "uv's cache (uv cache clean)"),
    ):
        if path.is_dir():
            size, files = tree_size(path)
            if files:
                items.append(CleanItem(kind, str(path), size, files, reason))
    for path in leftovers:
        size, files = tree_size(path)
        items.append(CleanItem(CleanKind.LEFTOVER, str(path), size, files, "an interrupted create"))
    packs, why_kept = stale_packs(layout, known)
    items += packs
    if why_kept:
        warnings.append(why_kept)
    images, why_kept = _stale_images(known)
    items += images
    if why_kept:
        warnings.append(why_kept)
    resuming = (layout.journal_dir / "clean.jsonl").exists()
    return CleanPlan(
        layout, tuple(items), tuple(sorted(kept)), len(prefixes), tuple(warnings), resuming
    )


def _unused_packages(candidates: list[Path], leftovers: list[Path], kept: list[str]):
    """Clean items for the extracted packages no record points to and no link outside them
    (or outside the leftovers about to go) keeps alive; the others are added to `kept`."""
    from hpcenv.treescan import scan_many

    if not candidates:
        return []
    usage = scan_many([*candidates, *leftovers])  # links into the leftovers die with them
    items = []
    for path in candidates:
        u = usage[path]
        if u.linked_outside:  # hardlinked from somewhere no known env explains: still in use
            kept.append(path.name)
            continue
        items.append(
            CleanItem(
                CleanKind.PACKAGE, str(path), u.unique_bytes, u.files, "no environment links it"
            )
        )
    return items


def _trash_entries(layout: Layout) -> list[Path]:
    try:
        return sorted(layout.cache_trash.iterdir())
    except OSError:
        return []


_PACK = re.compile(r"^(?P<name>.+)-(?P<id>[0-9a-f]{12})-(?P<key>[0-9a-f]{16})\.tar\.gz$")
_OLD_PACK = re.compile(r"^(?P<name>.+)-(?P<key>[0-9a-f]{16})\.tar\.gz$")  # NAME-KEY, before ids
_PACK_TMP = re.compile(r"^\..+\.tmp-(?P<pid>\d+)\.tar\.gz$")


def stale_packs(
    layout: Layout, prefixes: Mapping[Path, str | None], *, environ: Mapping[str, str] | None = None
) -> tuple[list[CleanItem], str | None]:
    """Packs (`jobs.pack`: `packs_dir/NAME-ID-KEY.tar.gz`) whose env (by `jobs.pack_id`, its
    real path) is gone or has changed since (its `jobs.pack_key` differs), and temporary files
    of interrupted packs. A pack that the script of a queued or running job of the user names
    is kept, and all of them are kept when SLURM cannot be asked: (items, why packs were kept)."""
    from hpcenv.jobs import pack_id, pack_key

    try:
        entries = sorted(os.scandir(layout.packs_dir), key=lambda e: e.name)
    except OSError:
        return [], None
    by_id = {pack_id(prefix): prefix for prefix in prefixes}
    by_name = {(name or prefix.name): prefix for prefix, name in prefixes.items()}
    items, stale = [], []
    for entry in entries:
        if not entry.is_file(follow_symlinks=False):
            continue
        size = entry.stat(follow_symlinks=False).st_size
        tmp = _PACK_TMP.match(entry.name)
        if tmp and not pid_alive(int(tmp["pid"])):
            items.append(CleanItem(CleanKind.PACK, entry.path, size, 1, "an interrupted pack"))
            continue
        m = _PACK.match(entry.name)
        prefix = by_id.get(m["id"]) if m else None
        if m is None:
            m = _OLD_PACK.match(entry.name)
            if m is None:
                continue
            prefix = by_name.get(m["name"])
        state = False if prefix is None else is_env(prefix)  # None: cannot tell, keep it
        if state is False:
            reason = "its environment is gone"
        elif state and pack_key(prefix) != m["key"]:
            reason = "its environment changed since"
        else:
            continue
        stale.append(CleanItem(CleanKind.PACK, entry.path, size, 1, reason))
    if not stale:
        return items, None
    scripts = _queued_scripts(environ or os.environ)
    if scripts is None:
        return items, (
            f"could not ask SLURM about queued jobs: kept {len(stale)} outdated pack(s) "
            "that they may stage (check with `sinfo`)"
        )
    staged = [i for i in stale if any(os.path.basename(i.path) in s for s in scripts)]
    why = (
        f"kept {len(staged)} outdated pack(s) that queued or running jobs stage" if staged else None
    )
    return items + [i for i in stale if i not in staged], why


_queued: dict[tuple[str | None, str | None], tuple[str, ...] | None] = {}


def _queued_scripts(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """The scripts of the user's queued and running jobs (`jobs.queued_job_scripts`); None
    when SLURM cannot be asked. Asked once per process."""
    from hpcenv.jobs import queued_job_scripts

    key = (environ.get("PATH"), environ.get("SLURM_CONF"))
    if key not in _queued:
        _queued[key] = queued_job_scripts(environ)
    return _queued[key]


def _stale_images(prefixes: Iterable[Path]) -> tuple[list[CleanItem], str | None]:
    """Older versions of image envs that no queued or running job mounts (`images`)."""
    from hpcenv.registry import is_image

    envs = [p for p in prefixes if is_image(p)]
    if not envs:
        return [], None
    from hpcenv.images import stale_versions

    stale, why = stale_versions(envs)
    return [CleanItem(CleanKind.IMAGE, s.path, s.bytes, 1, s.reason) for s in stale], why
