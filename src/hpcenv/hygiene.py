"""Storage hygiene: what takes the space and the inodes (`usage`), and what can go (`clean`).

`usage_report` measures home (against its quota: `quota -s` where it exists, else the
`home_quota` setting), the storage area, each cache and each environment, with hardlinks
counted once: the caches and the environments are walked in one `usage.scan_many` pass, so a
file linked from the package cache into two envs is unique to none of them.

`plan_clean` decides (changing nothing) what `clean` would remove, and `execute_clean` removes
it under the storage lock:

    archive   a downloaded *.tar.bz2 / *.conda in a package cache (re-downloadable)
    package   an extracted package in the rattler cache that no environment uses: no
              `conda-meta/*.json` of any known env points to it, and none of its files has a
              hardlink outside it (a link count the known envs do not explain means an env we
              do not know about still uses it: we keep it)
    pip-cache, uv-cache   emptied by `pip cache purge` / `uv cache clean`
    leftover  the temporary prefix of an interrupted `create`
    trash     what an interrupted `clean` had already set aside
    image     an older version of an image env that no queued or running job mounts

A package directory is first renamed into `.hpcenv-trash/` beside the cache's `pkgs/` (one
atomic step: rattler then sees no entry and re-extracts when needed; it must never see a
half-deleted one as valid), then its `.lock` file goes, then the trash. Each step is journaled
(`journal/clean.jsonl`), so a killed run is finished by the next `hpcenv clean`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from hpcenv.journal import Journal, StorageLock, pid_alive, tick
from hpcenv.storage import Layout, ensure_state_dir, free_bytes

ARCHIVE_SUFFIXES = (".tar.bz2", ".conda")
TRASH_NAME = ".hpcenv-trash"


# --------------------------------------------------------------------------- where things are


def package_dir(layout: Layout) -> Path:
    """Where rattler keeps extracted packages (and archives, if any) under our cache dir."""
    return layout.package_cache / "pkgs"


def cache_dirs(layout: Layout) -> dict[str, Path]:
    """The caches hpcenv knows, by name."""
    return {
        "rattler": layout.package_cache,
        "pip": layout.cache_root / "pip",
        "uv": layout.uv_cache,
        "conda-pkgs": layout.conda_dir / "pkgs",
    }


def trash_dir(layout: Layout) -> Path:
    return layout.package_cache / TRASH_NAME


def registered_in_environments_txt(layout: Layout) -> list[Path]:
    """The prefixes listed in conda's ~/.conda/environments.txt (read leniently)."""
    from hpcenv.registry import read_environments_txt

    return list(read_environments_txt(layout).prefixes)


def all_known_prefixes(layout: Layout) -> dict[Path, str | None]:
    """Every env the user has (`registry.discover`): hpcenv's, conda's, mamba's."""
    from hpcenv.registry import discover

    return discover(layout).prefixes()


def is_env(prefix: Path) -> bool | None:
    """Whether `prefix` holds an environment (a conda-meta dir); None when it cannot be read."""
    from hpcenv.registry import is_env as registry_is_env

    return registry_is_env(prefix)


def dead_leftovers(layout: Layout) -> list[Path]:
    """Temporary prefixes of interrupted env operations whose process is gone."""
    from hpcenv.envjournal import find_leftovers

    out = []
    for path in find_leftovers(layout):
        pid = path.name.rsplit("-", 1)[-1]
        restorable = "-tmp-old-" in path.name and not os.path.lexists(
            path.with_name(path.name[1:].split(".hpcenv-tmp-", 1)[0])
        )  # the old copy of a replaced env whose name is free: restored, never cleaned
        if not (pid.isdigit() and pid_alive(int(pid))) and not restorable:
            out.append(path)
    return sorted(out)


# --------------------------------------------------------------------------- quota


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
            from hpcenv.usage import scan

            used = scan(home).disk_bytes
        return Quota(
            source="home_quota setting",
            filesystem=None,
            used_bytes=used,
            limit_bytes=configured,
            used_percent=_percent(used, configured),
        )
    return None


# --------------------------------------------------------------------------- usage


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


@dataclass(frozen=True)
class UsageReport:
    home: UsageRow
    storage: UsageRow
    caches: tuple[UsageRow, ...]
    envs: tuple[UsageRow, ...]
    home_quota: Quota | None
    storage_free_bytes: int | None
    warnings: tuple[str, ...] = ()


def _row(kind: str, name: str, path: Path, u) -> UsageRow:
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


def usage_report(layout: Layout, home_quota_setting: int | None = None) -> UsageReport:
    """Measure home, storage, each cache and each known env (hardlinks counted once)."""
    from hpcenv.usage import scan_many

    # home and storage are disjoint trees (storage is never in home; home's links to storage
    # are not followed); caches and envs lie inside storage, so they get their own pass where
    # an inode shared between the package cache and envs is unique to none of them.
    outer = scan_many([layout.home, layout.root])
    caches = cache_dirs(layout)
    prefixes = all_known_prefixes(layout)
    inner_paths = [Path(os.path.realpath(p)) for p in [*caches.values(), *prefixes]]
    inner = scan_many(list(dict.fromkeys(inner_paths)))
    warnings = []
    cache_rows = []
    for name, path in caches.items():
        cache_rows.append(_row("cache", name, path, inner[Path(os.path.realpath(path))]))
    env_rows = []
    for prefix, name in prefixes.items():
        u = inner[Path(os.path.realpath(prefix))]
        env_rows.append(_row("env", name or str(prefix), prefix, u))
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
    )


# --------------------------------------------------------------------------- clean: plan


@dataclass(frozen=True)
class CleanItem:
    kind: str  # archive | package | pip-cache | uv-cache | leftover | pack | image | trash
    path: str
    bytes: int
    files: int
    reason: str
    status: str = "planned"  # planned | removed | kept: WHY | failed: WHY


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


@dataclass(frozen=True)
class CleanReport:
    dry_run: bool
    items: tuple[CleanItem, ...]
    freed_bytes: int
    kept_packages: tuple[str, ...]
    envs_checked: int
    warnings: tuple[str, ...] = ()
    resumed: bool = False
    waited_for_lock: bool = False


def _walk_inodes(top: Path, table: dict | None = None) -> tuple[dict, int]:
    """{(dev, ino): [size, nlink, links seen here]} of every non-directory under `top`
    (symlinks not followed), and the number of entries."""
    table = {} if table is None else table
    files = 0
    stack = [str(top)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                    continue
                files += 1
                rec = table.get((st.st_dev, st.st_ino))
                if rec is None:
                    table[(st.st_dev, st.st_ino)] = [st.st_size, st.st_nlink, 1]
                else:
                    rec[2] += 1
    return table, files


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


def _tree_size(path: Path) -> tuple[int, int]:
    from hpcenv.usage import scan

    u = scan(path)
    return u.unique_bytes, u.files


def plan_clean(layout: Layout) -> CleanPlan:
    """What `hpcenv clean` would remove, and why. Changes nothing."""
    items: list[CleanItem] = []
    kept: list[str] = []
    warnings: list[str] = []
    leftovers = dead_leftovers(layout)
    live = set(_all_leftovers(layout)) - set(leftovers)
    known = all_known_prefixes(layout)
    prefixes = [*known, *live]
    used_dirs, used_stems, bad = packages_in_use(prefixes)
    for record in bad:
        warnings.append(
            f"{record} is not readable; the packages its env links are kept by link count only"
        )
    # links that vanish with the leftovers do not keep a package alive
    dying: dict = {}
    for path in leftovers:
        _walk_inodes(path, dying)

    for trash in _trash_dirs(layout):
        size, files = _tree_size(trash)
        items.append(
            CleanItem("trash", str(trash), size, files, "set aside by an interrupted clean")
        )

    for cache in (package_dir(layout), layout.conda_dir / "pkgs"):
        try:
            entries = sorted(os.scandir(cache), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file(follow_symlinks=False) and entry.name.endswith(ARCHIVE_SUFFIXES):
                size = entry.stat(follow_symlinks=False).st_size
                items.append(
                    CleanItem(
                        "archive", entry.path, size, 1, "downloaded archive (re-downloadable)"
                    )
                )
            elif cache == package_dir(layout) and entry.is_dir(follow_symlinks=False):
                item = _package_item(Path(entry.path), used_dirs, used_stems, dying)
                if item is None:
                    kept.append(entry.name)
                else:
                    items.append(item)

    for kind, name, reason in (
        ("pip-cache", "pip", "pip's cache (pip cache purge)"),
        ("uv-cache", "uv", "uv's cache (uv cache clean)"),
    ):
        path = cache_dirs(layout)[name]
        if path.is_dir():
            size, files = _tree_size(path)
            if files:
                items.append(CleanItem(kind, str(path), size, files, reason))

    for path in leftovers:
        size, files = _tree_size(path)
        items.append(CleanItem("leftover", str(path), size, files, "an interrupted create"))
    packs, why_kept = stale_packs(layout, known)
    items += packs
    if why_kept:
        warnings.append(why_kept)
    images, why_kept = _stale_images(known)
    items += images
    if why_kept:
        warnings.append(why_kept)
    resuming = (layout.journal_dir / "clean.jsonl").exists()
    return CleanPlan(layout, tuple(items), tuple(kept), len(prefixes), tuple(warnings), resuming)


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
            items.append(CleanItem("pack", entry.path, size, 1, "an interrupted pack"))
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
            stale.append(CleanItem("pack", entry.path, size, 1, "its environment is gone"))
        elif state and pack_key(prefix) != m["key"]:
            stale.append(CleanItem("pack", entry.path, size, 1, "its environment changed since"))
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
    return [CleanItem("image", s.path, s.bytes, 1, s.reason) for s in stale], why


def _all_leftovers(layout: Layout) -> list[Path]:
    from hpcenv.envjournal import find_leftovers

    return find_leftovers(layout)


def _trash_dirs(layout: Layout) -> list[Path]:
    try:
        return sorted(trash_dir(layout).iterdir())
    except OSError:
        return []


def _package_item(
    path: Path, used_dirs: set[str], used_stems: set[str], dying: Mapping
) -> CleanItem | None:
    """A clean item for an extracted package nothing uses, or None to keep it."""
    if os.path.realpath(path) in used_dirs or path.name in used_stems:
        return None
    table, files = _walk_inodes(path)
    size = 0
    for key, (nbytes, nlink, here) in table.items():
        elsewhere = nlink - here - (dying[key][2] if key in dying else 0)
        if elsewhere > 0:
            return None  # hardlinked from somewhere no known env explains: still in use
        size += nbytes
    return CleanItem("package", str(path), size, files, "no environment links it")


# --------------------------------------------------------------------------- clean: execute


def dry_run_report(plan: CleanPlan) -> CleanReport:
    return CleanReport(
        dry_run=True,
        items=plan.items,
        freed_bytes=0,
        kept_packages=plan.kept_packages,
        envs_checked=plan.envs_checked,
        warnings=plan.warnings,
    )


def execute_clean(
    plan: CleanPlan,
    *,
    lock_timeout: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> CleanReport:
    """Remove what `plan` lists, under the storage lock, journaled.

    The plan is made again once the lock is held and only what is in both is removed: what the
    user was shown and agreed to, and what is still unused now (an env created in between keeps
    its packages)."""
    layout = plan.layout
    ensure_state_dir(layout)
    lock = StorageLock(layout.lock_path, timeout=lock_timeout, on_wait=on_wait)
    with lock:
        fresh = plan_clean(layout)
        now = {(i.kind, i.path): i for i in fresh.items}
        journal = Journal.open(layout.journal_dir, "clean", {"items": len(plan.items)})
        results = []
        for item in plan.items:
            current = now.get((item.kind, item.path))
            if current is None:
                gone = not os.path.lexists(item.path)
                status = "removed" if gone else "kept: in use now"
                results.append(replace(item, bytes=0, status=status))
                continue
            try:
                _remove(layout, current, journal, environ or os.environ)
            except (OSError, subprocess.SubprocessError) as exc:
                results.append(replace(current, bytes=0, status=f"failed: {exc}"))
                continue
            freed = current.bytes
            if current.kind in ("pip-cache", "uv-cache"):  # the tools keep a few files
                freed = max(0, freed - _tree_size(Path(current.path))[0])
            journal.record(item=current.path, kind=current.kind, step="removed")
            results.append(replace(current, bytes=freed, status="removed"))
        try:
            trash_dir(layout).rmdir()
        except OSError:
            pass  # absent, or not empty (something failed): the next clean retries
        journal.finish()
    return CleanReport(
        dry_run=False,
        items=tuple(results),
        freed_bytes=sum(i.bytes for i in results if i.status == "removed"),
        kept_packages=fresh.kept_packages,
        envs_checked=fresh.envs_checked,
        warnings=fresh.warnings,
        resumed=journal.resumed,
        waited_for_lock=lock.waited,
    )


def _remove(layout: Layout, item: CleanItem, journal: Journal, environ: Mapping[str, str]) -> None:
    path = Path(item.path)
    if item.kind in ("archive", "pack"):
        path.unlink(missing_ok=True)
    elif item.kind == "image":
        from hpcenv.images import remove_version

        remove_version(path)
    elif item.kind == "package":
        aside = _set_aside(layout, path)
        journal.record(item=item.path, kind=item.kind, step="set-aside", to=str(aside))
        path.with_name(path.name + ".lock").unlink(missing_ok=True)
        tick()
        rmtree(aside)
    elif item.kind == "trash":
        rmtree(path)
    elif item.kind == "leftover":
        from hpcenv.envjournal import recover

        for r in recover(layout):
            if r.action == "failed" and r.path == item.path:
                raise OSError(r.detail)
        if os.path.lexists(path):
            raise OSError(f"{path} is still there")
    elif item.kind == "pip-cache":
        if not _run_tool(_pip_command(), {"PIP_CACHE_DIR": str(path)}, environ):
            _empty_dir(layout, path)
    elif item.kind == "uv-cache":
        if not _run_tool(_uv_command(), {"UV_CACHE_DIR": str(path)}, environ):
            _empty_dir(layout, path)
    else:
        raise AssertionError(item.kind)
    tick()


def _set_aside(layout: Layout, path: Path) -> Path:
    """Rename a cache entry into the trash (same filesystem): it vanishes in one step."""
    root = trash_dir(layout)
    root.mkdir(mode=0o700, exist_ok=True)
    target = root / f"{path.name}-{os.getpid()}"
    n = 0
    while os.path.lexists(target):
        n += 1
        target = root / f"{path.name}-{os.getpid()}.{n}"
    os.rename(path, target)
    return target


def _empty_dir(layout: Layout, path: Path) -> None:
    """Without the tool: set every entry aside, then delete it."""
    for entry in sorted(path.iterdir()):
        rmtree(_set_aside(layout, entry))


def rmtree(path: Path) -> None:
    """Delete a tree, making read-only directories writable first where needed."""

    def retry(func, p, _exc):
        parent = os.path.dirname(p)
        for d in (parent, p):
            try:
                if os.path.isdir(d) and not os.path.islink(d):
                    os.chmod(d, stat.S_IMODE(os.lstat(d).st_mode) | stat.S_IRWXU)
            except OSError:
                pass
        func(p)

    if os.path.islink(path) or path.is_file():
        path.unlink()
    elif path.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)


def _pip_command() -> list[str] | None:
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "cache", "purge"]
    exe = shutil.which("pip") or shutil.which("pip3")
    return [exe, "cache", "purge"] if exe else None


def _uv_command() -> list[str] | None:
    try:
        from uv import find_uv_bin

        exe = find_uv_bin()
    except (ImportError, FileNotFoundError):
        exe = shutil.which("uv")
    return [exe, "cache", "clean"] if exe else None


def _run_tool(argv: list[str] | None, extra: dict[str, str], environ: Mapping[str, str]) -> bool:
    """Run pip/uv against our cache dir; False when the tool is absent or refused."""
    if argv is None:
        return False
    env = {**environ, **extra, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_YES": "1"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    return result.returncode == 0
