"""Site package caches: read-only layers of extracted packages that every user links from.

A site sets `package_caches = ["/apps/hpcenv/pkgs", ...]`; each is a directory of extracted
packages as rattler lays them out (`NAME-VERSION-BUILD/` and `NAME-VERSION-BUILD.lock`),
filled by an admin with `hpcenv cache fill`. Every install, create and update searches the
trusted layers first, then the user's own cache (`STORAGE/.cache/rattler/pkgs`), which gets
only what no layer holds (`engine.install` does the linking; see its notes on rattler).

Trust (`why_untrusted`): a layer is used only if it, and every directory above it, belong to
root or to the `package_cache_owner` account and are writable by no group or other user (a
sticky directory such as /tmp aside, for the directories above); if the user reading it may
write it without being one of those owners, it is not used either. A package in a trusted
layer is used only if it is whole and the same holds for its files (`engine.check_cache_entry`
with the owners); otherwise it is skipped with a warning and comes from the user's own cache.
hpcenv never repairs, cleans or writes a layer for a user: only `cache fill`, run by root or
the owner account, writes one.

What linking from a layer costs (`site_use`, `site_share`): a file linked from a layer is a
reflink where the filesystem shares extents (XFS with reflink=1, btrfs), a hardlink where the
kernel allows it (`fs.protected_hardlinks=1` allows it only to the files' owner and root), a
copy otherwise. Which one happened is read back from the files: the same inode is a hardlink;
a first extent that FIEMAP reports shared, at the layer file's physical address, a reflink.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import stat
import struct
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.errors import OperationError, RefusedError, UsageError

if TYPE_CHECKING:
    from hpcenv.settings import Settings
    from hpcenv.storage import Layout

STATE = ".hpcenv"  # in a layer: the filler's lock, repodata cache and trash (mode 0700)
TEMP_PREFIX = ".hpcenv-fill-"
SAMPLE_FILES = 8  # per package, the largest: enough to tell how a package was linked


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
        why = _loose(above, owners, sticky_ok=True)
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
    why = _loose(real, owners, sticky_ok=False)
    if why:
        return f"it {why}"
    if not os.access(real, os.R_OK | os.X_OK):
        return "you cannot read it"
    if os.geteuid() not in owners and os.access(real, os.W_OK):
        return "it is writable by you (an ACL?), so it is not the site's alone"
    return None


def _sticky(st: os.stat_result) -> bool:
    return bool(st.st_mode & stat.S_ISVTX) and st.st_uid == 0


def _loose(path: Path, owners: Collection[int], *, sticky_ok: bool) -> str | None:
    """Why others than `owners` could change `path` (a phrase after its name), or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if st.st_uid not in owners:
        return f"belongs to {_user(st.st_uid)}, not to root or package_cache_owner"
    if st.st_mode & 0o022 and not (sticky_ok and _sticky(st)):
        return f"is writable by {'everyone' if st.st_mode & 0o002 else 'its group'}"
    return None


def _user(uid: int) -> str:
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


# --------------------------------------------------------------------------- what an env used


@dataclass(frozen=True)
class SiteUse:
    """How an operation linked packages from site layers (sampled per package)."""

    packages: int  # packages linked from a layer
    layers: tuple[str, ...]
    method: str  # reflink | hardlink | copy | mixed
    methods: dict[str, int] = field(default_factory=dict)  # packages per method
    not_downloaded_bytes: int = 0  # archive bytes this user did not download
    not_duplicated_bytes: int = 0  # file bytes shared with the layer (reflink/hardlink)
    copied_bytes: int = 0  # file bytes copied out of the layer
    sampled_files: int = 0


@dataclass(frozen=True)
class _Linked:
    """One package of an env that was linked from a layer."""

    name: str
    layer: Path
    entry: Path  # the layer's entry (real path)
    size: int  # its archive's size
    files: tuple[tuple[str, str, int], ...]  # (path in env, path in entry, bytes), linkable


def linked_from_layers(
    prefix: Path, layers: Sequence[Path], names: Collection[str] | None = None
) -> list[_Linked]:
    """The packages in `prefix` (or those of `names`) whose extracted package directory is
    an entry of one of `layers`, read from conda-meta (conda's own records work too)."""
    roots = [Path(os.path.realpath(p)) for p in layers]
    out = []
    try:
        records = sorted((Path(prefix) / "conda-meta").glob("*.json"))
    except OSError:
        return []
    pyver = _python_dir(Path(prefix))
    for path in records:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or (names is not None and data.get("name") not in names):
            continue
        source = data.get("extracted_package_dir") or (data.get("link") or {}).get("source")
        if not isinstance(source, str) or not source:
            continue
        entry = Path(os.path.realpath(source))
        layer = next((r for r in roots if entry.parent == r), None)
        if layer is None:
            continue
        noarch = data.get("noarch") == "python" or (
            isinstance(data.get("noarch"), dict) and data["noarch"].get("type") == "python"
        )
        files = []
        entries = ((data.get("paths_data") or {}).get("paths")) or []
        for item in entries if isinstance(entries, list) else []:
            if not isinstance(item, dict) or item.get("path_type", "hardlink") != "hardlink":
                continue
            if item.get("prefix_placeholder") or item.get("no_link"):
                continue  # rewritten or copied on purpose: never shared with the layer
            rel = item.get("_path")
            size = item.get("size_in_bytes")
            if not isinstance(rel, str) or not isinstance(size, int):
                continue
            source_rel = _source_path(rel, pyver) if noarch else rel
            if source_rel is not None:
                files.append((rel, source_rel, size))
        out.append(
            _Linked(str(data.get("name")), layer, entry, int(data.get("size") or 0), tuple(files))
        )
    return out


def _python_dir(prefix: Path) -> str | None:
    try:
        return next(n for n in sorted(os.listdir(prefix / "lib")) if n.startswith("python3"))
    except (OSError, StopIteration):
        return None


def _source_path(rel: str, pyver: str | None) -> str | None:
    """Where a noarch:python file installed at `rel` lies in its package."""
    if pyver and rel.startswith(f"lib/{pyver}/site-packages/"):
        return "site-packages/" + rel[len(f"lib/{pyver}/site-packages/") :]
    if rel.startswith("bin/"):
        return "python-scripts/" + rel[4:]
    return None


FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
_FIEMAP = struct.Struct("=QQIIII")  # start, length, flags, mapped, count, reserved
_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 reserved, flags, 3 reserved
FIEMAP_EXTENT_SHARED = 0x2000


def _first_extent(path: str) -> tuple[int, int] | None:
    """(physical address, flags) of a file's first extent; None without one, or without
    FIEMAP (tmpfs, NFS)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = bytearray(_FIEMAP.size + _EXTENT.size)
        _FIEMAP.pack_into(buf, 0, 0, 2**64 - 1, 0, 0, 1, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    if _FIEMAP.unpack_from(buf, 0)[3] < 1:
        return None
    extent = _EXTENT.unpack_from(buf, _FIEMAP.size)
    return extent[1], extent[5]


def link_method(env_file: str, layer_file: str) -> str | None:
    """hardlink, reflink or copy: how `env_file` came from `layer_file`; None if either is
    gone or not a regular file."""
    try:
        a, b = os.lstat(env_file), os.lstat(layer_file)
    except OSError:
        return None
    if not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)):
        return None
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return "hardlink"
    if a.st_dev != b.st_dev or a.st_size == 0:
        return "copy"
    mine, theirs = _first_extent(env_file), _first_extent(layer_file)
    if mine and theirs and mine[1] & FIEMAP_EXTENT_SHARED and mine[0] == theirs[0]:
        return "reflink"
    return "copy"


def site_use(
    prefix: Path, layers: Sequence[Path], names: Collection[str] | None = None
) -> SiteUse | None:
    """How the packages of `prefix` (or those of `names`) that came from a layer were
    linked, from a sample of each one's largest files. None when none came from a layer."""
    linked = linked_from_layers(prefix, layers, names)
    if not linked:
        return None
    methods: dict[str, int] = {}
    shared = copied = sampled = 0
    for package in linked:
        total = sum(size for *_, size in package.files)
        sample = sorted((f for f in package.files if f[2] > 0), key=lambda f: -f[2])
        got = [
            (link_method(f"{prefix}/{rel}", f"{package.entry}/{src}"), size)
            for rel, src, size in sample[:SAMPLE_FILES]
        ]
        got = [(m, size) for m, size in got if m is not None]
        sampled += len(got)
        if not got:
            continue
        kinds = {m for m, _ in got}
        kind = kinds.pop() if len(kinds) == 1 else "mixed"
        methods[kind] = methods.get(kind, 0) + 1
        seen = sum(size for _, size in got)
        share = sum(size for m, size in got if m != "copy") / seen if seen else 0.0
        shared += int(total * share)
        copied += total - int(total * share)
    kinds = [k for k in methods if methods[k]]
    return SiteUse(
        packages=len(linked),
        layers=tuple(dict.fromkeys(str(p.layer) for p in linked)),
        method=kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "none"),
        methods=methods,
        not_downloaded_bytes=sum(p.size for p in linked),
        not_duplicated_bytes=shared,
        copied_bytes=copied,
        sampled_files=sampled,
    )


def protected_entries(prefix: Path, layers: SiteLayers) -> list[Path]:
    """The layer entries whose files this process may have hardlinked into `prefix` (only
    root and the layers' owner can): `perms.limit_installed` must not chmod them."""
    if os.geteuid() not in layers.owners or not layers.paths:
        return []
    return [p.entry for p in linked_from_layers(prefix, layers.paths)]


@dataclass(frozen=True)
class SiteShare:
    """The part of an env that is the site's: files hardlinked to a layer, or reflinked
    from it (shared extents), counted when FIEMAP can tell."""

    bytes: int = 0
    files: int = 0
    reflinked_bytes: int = 0  # the part that is the user's inode sharing the layer's extents
    extents_counted: bool = True  # False: the filesystem cannot tell (no FIEMAP)


def site_share(prefix: Path, layers: Sequence[Path]) -> SiteShare:
    """Every linkable file of `prefix` that came from a layer, checked (one lstat, and one
    FIEMAP for a file that is not the layer's own inode on the layer's filesystem)."""
    total = files = reflinked = 0
    counted = True
    for package in linked_from_layers(prefix, layers):
        for rel, src, size in package.files:
            method = link_method(f"{prefix}/{rel}", f"{package.entry}/{src}")
            if method in ("hardlink", "reflink"):
                total += size
                files += 1
                reflinked += size if method == "reflink" else 0
            elif method == "copy" and size and counted:
                if _first_extent(f"{package.entry}/{src}") is None:
                    counted = False  # FIEMAP does not answer there: cannot tell
    return SiteShare(total, files, reflinked, counted)


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
    from hpcenv.usage import scan

    owners, warnings = layer_owners(settings)
    rows = []
    for path in dict.fromkeys(settings.package_caches):
        why = why_untrusted(path, owners)
        names = _entries(path)
        contents = tuple(
            CachedPackage(
                n,
                "ok"
                if (w := engine.check_cache_entry(path / n, owners)) is None
                else f"damaged: {w}",
            )
            for n in names
        )
        u = scan(path)
        rows.append(
            CacheRow(
                "layer",
                str(path),
                why is None,
                why,
                len(names),
                u.apparent_bytes,
                u.disk_bytes,
                contents,
            )
        )
    own = None
    if layout is not None:
        pkgs = engine.package_cache_dir(layout.package_cache)
        u = scan(pkgs)
        names = _entries(pkgs)
        own = CacheRow(
            "own", str(pkgs), True, None, len(names), u.apparent_bytes, u.disk_bytes,
            tuple(CachedPackage(n, "ok") for n in names),
        )  # fmt: skip
    return CacheList(tuple(rows), own, tuple(sorted(_user(u) for u in owners)), tuple(warnings))


# --------------------------------------------------------------------------- fill


@dataclass(frozen=True)
class FilledPackage:
    name: str  # NAME-VERSION-BUILD
    status: str  # added | present | replaced: WHY
    bytes: int  # archive size


@dataclass(frozen=True)
class FillReport:
    layer: str
    packages: tuple[FilledPackage, ...]
    downloaded_bytes: int
    modes_fixed: int
    configured: bool  # the layer is in package_caches
    unused_because: str | None = None  # why users would not link from it (see why_untrusted)
    removed_leftovers: tuple[str, ...] = ()

    @property
    def added(self) -> int:
        return sum(p.status != "present" for p in self.packages)


def fill_target(settings: Settings, to: Path | None) -> Path:
    """The layer `cache fill` writes: --to, else the first configured one."""
    if to is not None:
        return Path(os.path.abspath(os.path.expanduser(str(to))))
    if not settings.package_caches:
        raise UsageError(
            "no site package cache is configured",
            hint='give --to DIR, or set package_caches = ["/apps/hpcenv/pkgs"] in the site config',
        )
    return settings.package_caches[0]


def check_filler(settings: Settings, target: Path) -> frozenset[int]:
    """Refuse (exit 2, nothing changed) anyone but root or the owner account, and a target
    they do not own; return the layer owners."""
    owners, _ = layer_owners(settings)
    me = os.geteuid()
    if me not in owners:
        raise RefusedError(
            f"only root or the site's package cache account fills a site package cache; "
            f"{target} is not changed",
            hint="ask your site admins to add the packages (`hpcenv cache fill SPEC`); "
            "what you install goes to your own cache by itself",
        )
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return owners
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{target} is not a directory", hint="give --to a directory")
    if st.st_uid != me:
        raise RefusedError(
            f"{target} belongs to {_user(st.st_uid)}, not to you; it is not changed",
            hint=f"run `hpcenv cache fill` as {_user(st.st_uid)}",
        )
    return owners


def fill(
    settings: Settings,
    specs: Sequence[str],
    *,
    channels: Sequence[str] = (),
    to: Path | None = None,
    cuda: str | None = None,
    on_wait=None,
) -> FillReport:
    """Solve `specs` and put every package of the solution into the layer, each one whole
    before it appears: extracted under a temporary name in the layer, checked, its modes
    made public (`perms.make_public`), then renamed into place. Under the layer's own lock;
    a killed fill leaves only temporary names, which the next fill removes."""
    from hpcenv import engine, perms
    from hpcenv.envs import channel_urls, normalize_channel
    from hpcenv.journal import StorageLock, pid_alive, tick

    if not specs:
        raise UsageError("give at least one package spec", hint="hpcenv cache fill numpy")
    engine.check_specs(specs)
    target = fill_target(settings, to)
    owners = check_filler(settings, target)
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} does not exist", hint="create it first")
    chans = [normalize_channel(c) for c in (channels or settings.channels)]
    target.mkdir(mode=0o755, exist_ok=True)
    state = target / STATE
    state.mkdir(mode=0o700, exist_ok=True)
    os.chmod(state, 0o700)
    solution = engine.solve(channel_urls(settings, chans), specs, cache_dir=state, cuda=cuda)
    done: list[FilledPackage] = []
    downloaded = fixed = 0
    leftovers = []
    with StorageLock(state / "lock", timeout=settings.lock_timeout, on_wait=on_wait):
        for name in os.listdir(target):
            if name.startswith(TEMP_PREFIX):
                pid = name[len(TEMP_PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    _remove(target / name)
                    leftovers.append(str(target / name))
        for package in solution.packages:
            name = engine.entry_name(package)
            entry = target / name
            why = None
            if entry.is_dir() and not entry.is_symlink():
                why = engine.check_cache_entry(entry, owners)
                sha = engine.cached_sha256(entry)
                if why is None and package.sha256 and sha and sha != package.sha256:
                    why = "another build under that name (sha256 differs)"
                if why is None:
                    done.append(FilledPackage(name, "present", package.size))
                    continue
            tmp = target / f"{TEMP_PREFIX}{os.getpid()}-{name}"
            _remove(tmp)
            sha = engine.fetch_package(package, tmp)
            downloaded += package.size
            tick()
            damage = engine.check_cache_entry(tmp)
            if damage is not None:
                _remove(tmp)
                raise OperationError(
                    f"{package.file_name} extracted incomplete ({damage}); the layer is unchanged",
                    hint="re-run `hpcenv cache fill`",
                )
            fixed += perms.make_public(tmp)
            if os.path.lexists(entry):  # first out of sight, so no user links from it meanwhile
                trash = state / "trash"
                trash.mkdir(mode=0o700, exist_ok=True)
                os.rename(entry, trash / f"{name}-{time.time_ns()}")
                tick()
            engine.write_cache_metadata(entry, sha)
            os.rename(tmp, entry)  # the one step that makes it visible, whole
            tick()
            done.append(FilledPackage(name, f"replaced: {why}" if why else "added", package.size))
        _remove(state / "trash")
        mode = stat.S_IMODE(os.stat(target).st_mode)
        if (mode | 0o555) & ~0o022 != mode:
            os.chmod(target, (mode | 0o555) & ~0o022)
            fixed += 1
    return FillReport(
        str(target), tuple(done), downloaded, fixed, target in settings.package_caches,
        _untrusted_for_users(target, owners), tuple(leftovers),
    )  # fmt: skip


def _untrusted_for_users(target: Path, owners: Collection[int]) -> str | None:
    """Why users would ignore the layer (the checks that do not depend on who reads it)."""
    real = Path(os.path.realpath(target))
    for above in reversed(real.parents):
        why = _loose(above, owners, sticky_ok=True)
        if why:
            return f"{above} above it {why}"
    why = _loose(real, owners, sticky_ok=False)
    return f"it {why}" if why else None


def _remove(path: Path) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
