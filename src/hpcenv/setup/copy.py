"""`copy_tree`: the bulk copy across filesystems into a private staging directory, keeping
modes, times, owners (as root), symlinks, hardlinks within the tree, holes of sparse files,
FIFOs and sockets (as new nodes) and, as root, device files."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from hpcenv.journal import tick


def copy_tree(src: Path, dst: Path) -> list[str]:
    """Copy `src` into `dst` (created). Resumable: a file already copied whole (same size and
    mtime, which is set last) is skipped. Entries that vanish while copying are left out (the
    drain that follows moves whatever the copy missed). Returns the device files not copied
    (only root may create them)."""
    links: dict[tuple[int, int], str] = {}
    skipped: list[str] = []
    resume = os.path.lexists(dst)
    _copy_dir(str(src), str(dst), os.lstat(src), links, skipped, "", resume)
    return skipped


def _copy_dir(src: str, dst: str, st: os.stat_result, links, skipped, rel, resume) -> None:
    try:
        os.mkdir(dst, 0o700)
    except FileExistsError:
        pass
    try:
        with os.scandir(src) as it:
            entries = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        entries = []
    for entry in entries:
        s, d = entry.path, f"{dst}/{entry.name}"
        try:
            est = entry.stat(follow_symlinks=False)
            mode = est.st_mode
            if stat.S_ISDIR(mode):
                _copy_dir(s, d, est, links, skipped, f"{rel}{entry.name}/", resume)
                continue
            key = (est.st_dev, est.st_ino)
            if stat.S_ISREG(mode) and est.st_nlink > 1 and key in links:
                first = links[key]
                if resume and os.path.lexists(d):
                    if os.path.samestat(os.lstat(d), os.lstat(first)):
                        continue
                    os.unlink(d)
                os.link(first, d)
                tick()
                continue
            if stat.S_ISREG(mode) and est.st_nlink > 1:
                links[key] = d
            if resume and os.path.lexists(d):  # an earlier run's
                if not stat.S_ISREG(mode) or _copied_whole(d, est):
                    continue
                os.unlink(d)
            if copy_node(s, est, d):
                tick()
            else:
                skipped.append(f"{rel}{entry.name}")
        except FileNotFoundError:
            continue
    set_meta(dst, st)


def _copied_whole(dst: str, st: os.stat_result) -> bool:
    """A file an earlier run copied completely: its mtime, set last, matches."""
    try:
        d = os.lstat(dst)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(d.st_mode) and d.st_size == st.st_size and d.st_mtime_ns == st.st_mtime_ns


def copy_node(src: str, st: os.stat_result, dst: str) -> bool:
    """Create `dst` (absent) as a copy of the non-directory `src`, with its mode, times and (as
    root) owner. False for a device file when not root: only root may create one."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        _copy_file(src, dst)
        return True
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        os.mknod(dst, stat.S_IFMT(mode) | 0o600)  # a socket's listener does not move with it
    elif os.geteuid() == 0:
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    else:
        return False
    set_meta(dst, st)
    return True


def _foreign_owner(st: os.stat_result) -> bool:
    """Root copying another user's entry: its owner is kept."""
    return os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, os.getegid())


def set_meta(path: str, st: os.stat_result) -> None:
    link = stat.S_ISLNK(st.st_mode)
    if _foreign_owner(st):
        os.lchown(path, st.st_uid, st.st_gid)
    if not link:
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_file(src: str, dst: str) -> None:
    """Copy one regular file; holes of a sparse file stay holes. Times are set last."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fin)
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if st.st_blocks * 512 < st.st_size:
                _copy_sparse(fin, fout, st.st_size)
            else:
                copy_range(fin, fout, 0, st.st_size)
            if _foreign_owner(st):
                os.fchown(fout, st.st_uid, st.st_gid)
            os.fchmod(fout, stat.S_IMODE(st.st_mode))
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))  # last: marks the copy whole
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def copy_range(fin: int, fout: int, offset: int, count: int) -> None:
    os.lseek(fout, offset, os.SEEK_SET)
    while count > 0:
        sent = os.sendfile(fout, fin, offset, min(count, 1 << 30))
        if sent == 0:
            break  # the file shrank meanwhile; the drain compares before removing anything
        offset += sent
        count -= sent


def _copy_sparse(fin: int, fout: int, size: int) -> None:
    pos = 0
    try:
        while pos < size:
            try:
                data = os.lseek(fin, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            hole = os.lseek(fin, data, os.SEEK_HOLE)
            copy_range(fin, fout, data, min(hole, size) - data)
            pos = hole
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        copy_range(fin, fout, pos, size - pos)  # no SEEK_DATA here: copy the rest whole
    os.ftruncate(fout, size)
