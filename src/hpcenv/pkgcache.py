"""The package cache on disk (`STORAGE/.cache/rattler/pkgs`), outside rattler: whether an
extracted package is whole, setting damaged ones aside, and rattler's cache lock on
filesystems without flock. Pure os calls: no rattler here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.storage import CACHE_TRASH

if TYPE_CHECKING:
    from hpcenv.engine import PackageInfo


def package_cache_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "pkgs"


def cache_entry(cache_dir: Path, package: PackageInfo) -> Path:
    stem = package.file_name.removesuffix(".tar.bz2").removesuffix(".conda")
    return package_cache_dir(cache_dir) / stem


def check_cache_entry(entry: Path) -> str | None:
    """Why an extracted package in the cache is damaged (a file of its info/paths.json is
    missing, of another size, or of another type), or None when it is whole.

    rattler's own validation either checks only that files exist (`ValidationMode.fast`) or
    hashes every byte (`full`): the sizes catch a truncated file at the cost of one stat."""
    try:
        data = json.loads((entry / "info" / "paths.json").read_text(encoding="utf-8"))
        paths = data["paths"]
    except FileNotFoundError:
        return "info/paths.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"info/paths.json is not readable ({exc.__class__.__name__})"
    root = os.fspath(entry) + "/"
    for item in paths if isinstance(paths, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("_path"), str):
            return "info/paths.json has an entry without a path"
        rel = item["_path"]
        try:
            st = os.lstat(root + rel)
        except OSError:
            return f"{rel} is missing"
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
        trash = Path(cache_dir) / CACHE_TRASH
        trash.mkdir(mode=0o700, exist_ok=True)
        target = trash / f"{entry.name}-damaged-{os.getpid()}-{time.time_ns()}"
        os.rename(entry, target)
        try:
            os.unlink(entry.with_name(entry.name + ".lock"))
        except FileNotFoundError:
            pass
        warnings.append(
            f"the cached package {entry.name} was damaged ({why}); it was extracted again"
        )
    return warnings


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
