"""How an env's files came from site package caches, and what that saved.

A file linked from a layer (`sitecache`) is a reflink where the filesystem shares extents
(XFS with reflink=1, btrfs), a hardlink where the kernel allows it (`fs.protected_hardlinks=1`
allows it only to the files' owner and root), a copy otherwise; rattler chooses, in that
order (its install/link.rs). Which one happened is read back from the files: the same inode
is a hardlink; a first extent that FIEMAP reports shared, at the layer file's physical
address, a reflink; anything else a copy.

- `expected_methods`: before an install, how it will link (for the space check);
- `site_use`: after one, what came from a layer, how, and the bytes not downloaded and not
  duplicated (`create` and `install` report it);
- `site_share`: the part of an env that is the site's (`usage`);
- `protected_entries`: layer entries whose files an install may have hardlinked (root, the
  owner account), which no chmod of the env may touch.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.sitecache import SiteLayers

SAMPLE_FILES = 8  # per package, the largest: enough to tell how a package was linked


def expected_methods(layers: SiteLayers, packages: Sequence, target_dir: Path) -> dict[str, str]:
    """{package name: reflink | hardlink | copy} for the packages (engine.PackageInfo) that a
    trusted layer holds, as linking them into `target_dir` will go: a reflink where one
    probe clone of a layer file into `target_dir` works, a hardlink on the same filesystem
    for the files' owner or root, else a copy. By name only (a damaged entry is found, and
    skipped, at install time): what `create` needs to know to estimate the space it takes."""
    try:
        dev = os.stat(target_dir).st_dev
    except OSError:
        return {}
    me = os.geteuid()
    probed: dict[Path, bool] = {}
    out = {}
    for package in packages:
        name = package.file_name.removesuffix(".tar.bz2").removesuffix(".conda")
        for layer in layers.paths:
            try:
                st = os.stat(layer / name)
            except OSError:
                continue
            if st.st_dev != dev:
                out[package.name] = "copy"
            elif probed.setdefault(
                layer, _can_clone(layer / name / "info" / "index.json", target_dir)
            ):
                out[package.name] = "reflink"
            elif me in (0, st.st_uid):
                out[package.name] = "hardlink"
            else:
                out[package.name] = "copy"
            break
    return out


def _can_clone(source: Path, target_dir: Path) -> bool:
    """Whether a FICLONE of `source` into an unnamed file in `target_dir` works."""
    from hpcenv.perms import FICLONE

    try:
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        dst = os.open(target_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        os.close(src)
        return False
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return True
    except OSError:
        return False
    finally:
        os.close(src)
        os.close(dst)


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
