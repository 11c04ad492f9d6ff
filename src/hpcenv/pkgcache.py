"""The package cache on disk (`STORAGE/.cache/rattler/pkgs`), outside rattler: whether an
extracted package is whole (and, for a site layer's entry, changeable by no one untrusted),
setting damaged ones aside, rattler's per-entry metadata (`<entry>.lock`), and rattler's cache
lock on filesystems without flock. Pure os calls: no rattler here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import struct
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.storage import CACHE_TRASH

if TYPE_CHECKING:
    from hpcenv.engine import PackageInfo


def package_cache_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "pkgs"


def entry_name(package: PackageInfo) -> str:
    return package.file_name.removesuffix(".tar.bz2").removesuffix(".conda")


def cache_entry(cache_dir: Path, package: PackageInfo) -> Path:
    return package_cache_dir(cache_dir) / entry_name(package)


def has_cached(cache_dir: Path, package: PackageInfo) -> bool:
    return os.path.isdir(cache_entry(cache_dir, package))


def check_cache_entry(entry: Path, owners: Collection[int] | None = None) -> str | None:
    """Why an extracted package in the cache is damaged (a file of its info/paths.json is
    missing, of another size, or of another type), or None when it is whole.

    rattler's own validation either checks only that files exist (`ValidationMode.fast`) or
    hashes every byte (`full`): the sizes catch a truncated file at the cost of one stat.

    With `owners` (a site layer's entry), every one of those files, their directories and
    the package's info/ must also belong to one of `owners` and be writable by no group or
    other user: anything else could be changed by someone the site did not trust."""
    try:
        data = json.loads((entry / "info" / "paths.json").read_text(encoding="utf-8"))
        paths = data["paths"]
    except FileNotFoundError:
        return "info/paths.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"info/paths.json is not readable ({exc.__class__.__name__})"
    root = os.fspath(entry) + "/"
    others = {".", "info", "info/paths.json", "info/index.json"}  # checked with owners
    for item in paths if isinstance(paths, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("_path"), str):
            return "info/paths.json has an entry without a path"
        rel = item["_path"]
        try:
            st = os.lstat(root + rel)
        except OSError:
            return f"{rel} is missing"
        why = _damaged(rel, st, item)
        if why is None and owners is not None:
            why = _foreign(rel, st, owners)
            parent = os.path.dirname(rel)
            while parent and parent not in others:  # each directory on the way, once
                others.add(parent)
                parent = os.path.dirname(parent)
        if why:
            return why
    for rel in sorted(others) if owners is not None else ():
        try:
            st = os.lstat(root + rel)
        except OSError:
            return f"{rel} is missing"
        why = _foreign(rel, st, owners)  # type: ignore[arg-type]
        if why:
            return why
    return None


def _damaged(rel: str, st: os.stat_result, item: dict) -> str | None:
    kind = item.get("path_type", "hardlink")
    if kind == "softlink":
        if not stat.S_ISLNK(st.st_mode) and not stat.S_ISREG(st.st_mode):
            return f"{rel} is not a link"
    elif kind == "directory":
        if not stat.S_ISDIR(st.st_mode):
            return f"{rel} is not a directory"
    elif not stat.S_ISREG(st.st_mode):
        return f"{rel} is not a file"
    elif isinstance(item.get("size_in_bytes"), int) and st.st_size != item["size_in_bytes"]:
        return f"{rel} has {st.st_size} bytes, not {item['size_in_bytes']}"
    return None


def _foreign(rel: str, st: os.stat_result, owners: Collection[int]) -> str | None:
    """Why a layer's path could be changed by someone other than its trusted owners."""
    if stat.S_ISLNK(st.st_mode):
        return None  # a link's mode and owner change nothing: it is re-created, not read
    if st.st_uid not in owners:
        return f"{rel} belongs to uid {st.st_uid}, not to the site cache's owner"
    if st.st_mode & 0o022:
        return f"{rel} is writable by group or others"
    return None


def set_aside_damaged(cache_dir: Path, packages: Sequence[PackageInfo]) -> list[str]:
    """Move damaged cache entries of `packages` into the cache's trash (`hpcenv clean`
    empties it) so rattler extracts them again; say which."""
    warnings = []
    for package in packages:
        entry = cache_entry(cache_dir, package)
        if not entry.is_dir():
            continue
        why = check_cache_entry(entry)
        if why is None:
            continue
        set_aside(cache_dir, package)
        warnings.append(
            f"the cached package {entry.name} was damaged ({why}); it was extracted again"
        )
    return warnings


def set_aside(cache_dir: Path, package: PackageInfo) -> bool:
    """Move the cache entry of `package` into the cache's trash, whatever its state, so the
    next install extracts it again (other envs keep the files they link). False when there
    was none."""
    entry = cache_entry(cache_dir, package)
    if not entry.is_dir():
        return False
    trash = Path(cache_dir) / CACHE_TRASH
    trash.mkdir(mode=0o700, exist_ok=True)
    os.rename(entry, trash / f"{entry.name}-damaged-{os.getpid()}-{time.time_ns()}")
    try:
        os.unlink(entry.with_name(entry.name + ".lock"))
    except FileNotFoundError:
        pass
    return True


_LOCK = struct.Struct(">Q")  # rattler's cache metadata: a big-endian u64 revision, a sha256


def cached_sha256(entry: Path) -> str | None:
    """The sha256 rattler recorded for a cache entry (in `<entry>.lock`), if any."""
    try:
        with open(f"{entry}.lock", "rb") as f:
            data = f.read(_LOCK.size + 32)
    except OSError:
        return None
    return data[_LOCK.size :].hex() if len(data) == _LOCK.size + 32 else None


def write_cache_metadata(entry: Path, sha256: str | None, mode: int = 0o644) -> None:
    """Write `<entry>.lock` as rattler does for an entry it extracted (atomically)."""
    data = _LOCK.pack(1) + (bytes.fromhex(sha256) if sha256 else b"")
    path = Path(f"{entry}.lock")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


_NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


@contextlib.contextmanager
def cache_lock_where_flock_works(pkgs_dir: Path) -> Iterator[None]:
    """rattler takes an `flock` on `pkgs/.cache.lock` for every install and fails without one.
    On a filesystem with no flock (NFS without lockd, Lustre mounted noflock), that lock file
    is pointed, for this install, at a file on this node in our private runtime directory,
    where flock works. Across nodes hpcenv's own storage lock (a lock directory there) keeps
    installs one at a time; the link is removed afterwards, so nodes that can lock use the
    real file again."""
    lock_file = Path(pkgs_dir) / ".cache.lock"
    if os.path.islink(lock_file):  # left by an install that was killed
        os.unlink(lock_file)
    if not _flock_unsupported(lock_file):
        yield
        return
    import hashlib

    local = _runtime_dir() / (
        "rattler-cache-" + hashlib.sha256(str(lock_file).encode()).hexdigest()[:16] + ".lock"
    )
    link = lock_file.with_name(f".cache.lock.hpcenv-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(local, link)
    os.replace(link, lock_file)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(lock_file):
                os.unlink(lock_file)


def _flock_unsupported(lock_file: Path) -> bool:
    import fcntl

    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return False  # rattler will say what is wrong with the cache
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        return exc.errno in _NO_FLOCK
    finally:
        os.close(fd)
    return False


def _runtime_dir() -> Path:
    """A directory on this node only we can use: $XDG_RUNTIME_DIR/hpcenv, else hpcenv-UID in
    the temporary directory (refused if someone else made it)."""
    from hpcenv.storage import ensure_private_dir

    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return ensure_private_dir(Path(base) / "hpcenv")
    import tempfile

    return ensure_private_dir(Path(tempfile.gettempdir()) / f"hpcenv-{os.geteuid()}")
