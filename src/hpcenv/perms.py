"""File permissions of envs and caches: the umask rule, own copies of hardlinked files, and
the search for world-writable entries.

- `apply_umask(tree)`: no file or directory under `tree` keeps more permission than the
  user's umask allows (and no file keeps a setuid/setgid bit). Package archives carry their
  own modes (a file packed 0666 is extracted 0666, whatever the umask); this is the one walk
  that takes it back, after every install, create and update. It only ever removes bits.
- `make_public(tree)`: what a site package cache holds is readable by everyone and writable
  by its owner alone (no group/world write, no setuid/setgid): `hpcenv cache fill` runs it
  on each package before it is renamed into the layer.
- `own_copy(dir_fd, name, ...)`: give one path its own inode (a reflink where the
  filesystem can, else a copy) with a new mode and group, replacing the path atomically, so
  the inode that the package cache and other envs also link is never changed.

Every walk here goes through directory file descriptors and never follows a symlink: a
link planted in a tree cannot redirect a chmod to a file elsewhere.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

_LOADED = time.time()  # package dirs older than this process were checked by their extractor
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_TEMP = re.compile(r"^\.hpcenv-copy-(\d+)-\d+$")
_FILE_ONLY_BITS = stat.S_ISUID | stat.S_ISGID


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def chmod_nofollow(dir_fd: int, name: str, mode: int) -> bool:
    """chmod `name` in `dir_fd` unless it is a symlink (Python has no lchmod on Linux: open it
    with O_PATH and chmod the descriptor through /proc). Returns False for a symlink."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            return False
        os.chmod(f"/proc/self/fd/{fd}", mode)
        return True
    finally:
        os.close(fd)


def walk(tree: Path) -> Iterator[tuple[int, str, str, os.stat_result]]:
    """(dir_fd, dir_path, name, lstat) for `tree` itself (in its parent) and everything under
    it, top-down; symlinks are reported, never followed (each directory is opened with
    O_NOFOLLOW through its parent's descriptor). Entries that vanish are skipped."""
    tree = Path(tree)
    try:
        parent = os.open(tree.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        try:
            st = os.stat(tree.name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return
        yield parent, str(tree.parent), tree.name, st
        if not stat.S_ISDIR(st.st_mode):
            return
        try:
            fd = os.open(tree.name, _DIR_FLAGS, dir_fd=parent)
        except OSError:
            return
    finally:
        os.close(parent)
    yield from _walk_fd(fd, str(tree))


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk_fd(fd: int, path: str) -> Iterator[tuple[int, str, str, os.stat_result]]:
    """Everything under the open directory `fd` (closed at the end)."""
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        subdirs = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield fd, path, entry.name, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.name)
        for name in subdirs:
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue
            yield from _walk_fd(sub, f"{path}/{name}")
    finally:
        os.close(fd)


def apply_umask(
    tree: Path,
    *,
    umask: int | None = None,
    keep: int = 0,
    skip: Collection[tuple[int, int]] = (),
    atime_ns: int | None = None,
) -> int:
    """chmod every file and directory under `tree` whose mode exceeds what `umask` allows
    (default: this process's), keeping the bits in `keep` (a shared env's group bits); files
    also lose setuid/setgid. Symlinks are never followed, and the inodes in `skip` ((st_dev,
    st_ino): a site cache's files hardlinked into the tree) keep their modes. Returns how
    many were changed.

    With `atime_ns`, in the same walk, every entry (links included) whose access time is
    more than ATIME_SLACK_S older gets that access time; its mtime is kept (see
    `limit_installed`)."""
    mask = (current_umask() if umask is None else umask) & 0o777 & ~keep
    changed = 0
    older = None if atime_ns is None else atime_ns - int(ATIME_SLACK_S * 1e9)
    for dir_fd, _dir, name, st in walk(tree):
        if older is not None and st.st_atime_ns < older:
            _set_atime(dir_fd, name, atime_ns, st.st_mtime_ns)
        if stat.S_ISLNK(st.st_mode) or (skip and (st.st_dev, st.st_ino) in skip):
            continue
        mode = stat.S_IMODE(st.st_mode)
        new = mode & ~mask
        if stat.S_ISREG(st.st_mode):
            new &= ~_FILE_ONLY_BITS
        elif not stat.S_ISDIR(st.st_mode):
            continue
        if new != mode:
            try:
                changed += chmod_nofollow(dir_fd, name, new)
            except FileNotFoundError:
                continue
    return changed


def limit_installed(
    prefix: Path, cache_dir: Path, packages: Iterable, protect: Iterable[Path] = ()
) -> int:
    """After an install: the package cache dirs of `packages` (engine.PackageInfo) that this
    process extracted, then the whole env, carry no more permission than the umask allows. A
    shared env keeps the group bits its share gave it; the cache never does.

    Package dirs extracted before this process started were checked by the process that
    extracted them, and are skipped (a walk costs ~10 us per file). Their files linked into
    the env are the same inodes as the env's, which the env's walk checks in any case.

    The same walk of the env gives every entry the install's access time (its mtime kept:
    a .pyc is valid only for its source's mtime). Extracted files keep the archive's times,
    so without it an env made today looks years old to a scratch purge that deletes what
    was not accessed for N days. A hardlinked file is the package cache's inode: the cache
    entry (and every other env linking it) gets the same access time and a new ctime.

    `protect`: site cache entries the env linked from. Their files hardlinked into the env
    (only root or the cache's owner can hardlink them) are the site's, never chmodded here:
    a strict umask of root's would otherwise take every user's read access away."""
    from hpcenv.pkgcache import package_cache_dir
    from hpcenv.trust import read_share_info

    pkgs = package_cache_dir(cache_dir)
    changed = 0
    for p in packages:
        path = pkgs / p.file_name.removesuffix(".tar.bz2").removesuffix(".conda")
        try:
            if os.lstat(path).st_ctime < _LOADED - 1:
                continue
        except OSError:
            continue
        changed += apply_umask(path)
    share = read_share_info(prefix)
    keep = 0
    if share is not None:
        keep = 0o070 if share.group_writable else 0o050
    skip: set[tuple[int, int]] = set()
    for entry in protect:
        skip.update((st.st_dev, st.st_ino) for *_, st in walk(Path(entry)))
    return changed + apply_umask(prefix, keep=keep, skip=skip, atime_ns=time.time_ns())


# Entries accessed this recently are left as they are: a fresh extraction already has the
# install's access time, and purges count in days. A utime costs as much as the walk's lstat.
ATIME_SLACK_S = 3600.0


def _set_atime(dir_fd: int, name: str, atime_ns: int, mtime_ns: int) -> None:
    """Set one entry's access time, keeping its mtime; never follows a symlink. A file we may
    not touch (another user's inode, a read-only cache layer) keeps its time."""
    try:
        os.utime(name, ns=(atime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        pass


def make_public(tree: Path) -> int:
    """Everything under `tree` readable (and directories searchable) by everyone, writable by
    no group or other user, and without setuid/setgid bits; an executable file stays
    executable for everyone. Symlinks are never followed. Returns how many were changed."""
    changed = 0
    for dir_fd, _dir, name, st in walk(tree):
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            new = (mode | 0o555) & ~0o022 & ~_FILE_ONLY_BITS
        elif stat.S_ISREG(st.st_mode):
            new = (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & ~0o022 & ~_FILE_ONLY_BITS
        else:
            continue
        if new != mode:
            try:
                changed += chmod_nofollow(dir_fd, name, new)
            except FileNotFoundError:
                continue
    return changed


def world_writable(trees: Iterable[Path], *, mine_only: bool = True) -> Iterator[Path]:
    """Files and directories under `trees` that anyone may write (symlinks excluded; a
    sticky directory counts too: anyone may still add files to it)."""
    me = os.geteuid()
    for tree in trees:
        for _fd, directory, name, st in walk(tree):
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & stat.S_IWOTH:
                continue
            if mine_only and st.st_uid != me:
                continue
            yield Path(directory, name)


# --------------------------------------------------------------------------- own copies


def temp_name(counter: int) -> str:
    return f".hpcenv-copy-{os.getpid()}-{counter}"


def is_stale_temp(name: str) -> bool:
    """A temp copy left by an `own_copy` whose process died (kill -9): safe to delete."""
    from hpcenv.journal import pid_alive

    m = _TEMP.match(name)
    return bool(m) and not pid_alive(int(m.group(1)))


def copy_to_temp(dir_fd: int, name: str, temp: str, mode: int, gid: int) -> None:
    """Write a copy of `name` (a regular file) as `temp` in the same directory: same content
    and times, `mode` and group `gid`. A reflink (FICLONE) where the filesystem shares
    blocks, else a plain copy. The original is not touched."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        dst = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
        )
        try:
            _clone_or_copy(src, dst, st.st_size)
            os.fchown(dst, -1, gid)
            os.fchmod(dst, mode)  # after chown, which may clear bits
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        except BaseException:
            os.close(dst)
            os.unlink(temp, dir_fd=dir_fd)
            raise
        os.close(dst)
    finally:
        os.close(src)


def _clone_or_copy(src: int, dst: int, size: int) -> None:
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
            raise
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(src, dst, size - done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = os.sendfile(dst, src, None, size - done)
        if n == 0:
            break
        done += n


def syncfs(fd: int) -> None:
    """Flush the filesystem holding `fd` (one call for a whole batch of copies)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
        os.sync()
