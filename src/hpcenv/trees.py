"""Moving directory trees without losing a file while other processes keep writing into them.

The primitives behind `hpcenv setup` (see `migrate`):

- `decide` / `identical`: what a merge does with one entry (move it, merge two directories,
  drop a duplicate, keep a conflict aside). The planner's `survey` calls the same function,
  so `--dry-run` predicts the conflicts of the real run.
- `copy_tree`: the bulk copy across filesystems into a private staging directory, keeping
  modes, times, owners (as root), symlinks, hardlinks within the tree, holes of sparse files,
  FIFOs and sockets (as new nodes) and, as root, device files.
- `Mover.drain`: move everything from one directory into another (a rename on one filesystem,
  a copy across two) and remove the source. An entry is removed only after it was checked, at
  that moment and under a private name nobody else can reach by path, to be identical to a
  copy that exists, while a write lease shows that no other process has it open (so no write
  can land after the check); a file open elsewhere is never removed (on one filesystem it is
  moved, inode and all; across two the drain waits, then stops with `StillOpen`). Anything
  new, changed or conflicting is moved, or kept under the conflicts directory. The directory
  is listed again until it can be removed, so what other processes create meanwhile (through
  open directory descriptors or working directories) is moved too.

Every atomic filesystem action is followed by `tick()` (the fault-injection point).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.journal import tick

MOVE, MERGE, DUPLICATE, CONFLICT = "move", "merge", "duplicate", "conflict"
REMOVING = ".hpcenv-removing."  # an entry being checked before removal: `REMOVING + name`
MAX_PASSES = 500  # listings of one directory before giving up on a writer that never stops
BUSY_WAIT = 5.0  # seconds a drain waits, in all, for files open elsewhere to be closed
_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_renameat2 = None  # the libc function once looked up, or False where there is none


class StillWriting(Exception):
    """Something kept creating entries in a directory that was being emptied."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class StillOpen(Exception):
    """Files that must be removed after their copy stayed open in other programs."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(", ".join(paths))
        self.paths = paths


# --------------------------------------------------------------------------- renames


def _rename2(src: str | Path, dst: str | Path, flags: int) -> bool:
    """renameat2(2) with `flags`; False where the kernel, libc or filesystem lacks it."""
    global _renameat2
    if _renameat2 is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
            fn.argtypes += [ctypes.c_uint]
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    if not _renameat2:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def rename_noreplace(src: str | Path, dst: str | Path) -> None:
    """Rename, raising FileExistsError instead of replacing an existing `dst`."""
    if _rename2(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):  # no renameat2 here: a check, then the rename
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two paths atomically (RENAME_EXCHANGE); False where that is not supported."""
    return _rename2(a, b, _RENAME_EXCHANGE)


def free_name(directory: str | Path, name: str) -> str:
    """`directory/name`, or `name.1`, `name.2`, ... : the first that does not exist."""
    path, n = os.path.join(directory, name), 0
    while os.path.lexists(path):
        n += 1
        path = os.path.join(directory, f"{name}.{n}")
    return path


# --------------------------------------------------------------------------- comparison


def decide(s: str, s_st: os.stat_result, d: str, clock: int | None = None):
    """What merging entry `s` into the place `d` does: (MOVE | MERGE | DUPLICATE | CONFLICT,
    the stat of `d` or None)."""
    try:
        d_st = os.lstat(d)
    except FileNotFoundError:
        return MOVE, None
    if stat.S_ISDIR(s_st.st_mode) and stat.S_ISDIR(d_st.st_mode):
        return MERGE, d_st
    if identical(s, s_st, d, d_st, clock):
        return DUPLICATE, d_st
    return CONFLICT, d_st


def identical(s: str, s_st, d: str, d_st, clock: int | None = None) -> bool:
    """Whether `d` holds what `s` holds: type, mode and content (a mode difference is a
    conflict, so an executable bit is never lost). With `clock` (a time of the source's
    filesystem taken before `s` was copied), a regular file not changed since (ctime older)
    with the size, mtime and mode of `d` counts as identical without being read."""
    if (s_st.st_dev, s_st.st_ino) == (d_st.st_dev, d_st.st_ino):
        return True
    if stat.S_IFMT(s_st.st_mode) != stat.S_IFMT(d_st.st_mode):
        return False
    try:
        if stat.S_ISLNK(s_st.st_mode):
            return os.readlink(s) == os.readlink(d)
        if stat.S_IMODE(s_st.st_mode) != stat.S_IMODE(d_st.st_mode):
            return False
        if stat.S_ISREG(s_st.st_mode):
            if s_st.st_size != d_st.st_size:
                return False
            if clock is not None and _unchanged(s_st, d_st, clock):
                return True
            fd = os.open(s, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                return _same_content(fd, d)
            finally:
                os.close(fd)
    except OSError:  # unreadable or gone: not provably identical
        return False
    if stat.S_ISCHR(s_st.st_mode) or stat.S_ISBLK(s_st.st_mode):
        return s_st.st_rdev == d_st.st_rdev
    return True  # FIFOs and sockets carry nothing but their type and mode


def _unchanged(s_st, d_st, clock: int) -> bool:
    return (
        s_st.st_ctime_ns < clock
        and s_st.st_mtime_ns == d_st.st_mtime_ns
        and s_st.st_size == d_st.st_size
    )


def _same_content(fd: int, other: str) -> bool:
    with open(other, "rb") as f:
        offset = 0
        while True:
            a, b = os.pread(fd, 1 << 20, offset), f.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True
            offset += len(a)


# --------------------------------------------------------------------------- planning


@dataclass
class Survey:
    """What moving one tree into another takes, found without changing anything."""

    files: int = 0  # entries other than directories (hardlinks once)
    bytes: int = 0  # their apparent size
    space: int = 0  # what a copy takes on the target: allocated blocks, rounded to its block
    inodes: int = 0
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def survey(src: Path, dst: Path | None, *, copy: bool, count: bool, block: int = 4096) -> Survey:
    """Walk `src` as a drain into `dst` would (decisions by `decide`), collecting conflicts and
    the entries this user cannot move: with `copy` (across filesystems) every directory must be
    readable, writable and searchable and every file readable; by rename, the directories that
    are listed must be, and a directory that changes parent must be writable itself. `count`
    (or `copy`) also sizes the whole tree."""
    sv = Survey()
    seen: set[tuple[int, int]] = set()
    me = os.geteuid()
    root_st = os.lstat(src)
    if not _may(src, os.R_OK | os.W_OK | os.X_OK):
        sv.problems.append(_problem(src, root_st, "a directory you cannot read and write"))
        return sv
    stack = [(str(src), str(dst) if dst is not None else None, "", True, root_st)]
    while stack:
        path, dpath, rel, listed, dir_st = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            continue
        except PermissionError:
            if listed:
                sv.problems.append(_problem(path, dir_st, "a directory you cannot list"))
            continue
        sticky = dir_st.st_mode & stat.S_ISVTX and dir_st.st_uid != me and me != 0
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = MOVE
            if dpath is not None:
                kind, _ = decide(entry.path, st, os.path.join(dpath, entry.name))
                if kind == CONFLICT:
                    sv.conflicts.append(rel + entry.name)
            is_dir = stat.S_ISDIR(st.st_mode)
            if copy or count:
                _tally(sv, st, seen, block)
            if listed and sticky and st.st_uid != me:
                sv.problems.append(_problem(entry.path, st, "another user's entry in a sticky dir"))
            if copy and stat.S_ISREG(st.st_mode) and not _may(entry.path, os.R_OK):
                sv.problems.append(_problem(entry.path, st, "a file you cannot read"))
            if not copy and listed and is_dir and kind in (MOVE, CONFLICT):
                if not _may(entry.path, os.W_OK):
                    sv.problems.append(_problem(entry.path, st, "a directory you cannot write"))
            if kind == MERGE and not _may(os.path.join(dpath, entry.name), os.W_OK | os.X_OK):
                target = os.path.join(dpath, entry.name)
                sv.problems.append(
                    _problem(target, os.lstat(target), "a directory you cannot write")
                )
            if not is_dir or not (copy or count or kind == MERGE):
                continue
            child_listed = listed and (copy or kind == MERGE)
            if child_listed and not _may(entry.path, os.R_OK | os.W_OK | os.X_OK):
                sv.problems.append(
                    _problem(entry.path, st, "a directory you cannot read and write")
                )
                if not _may(entry.path, os.R_OK | os.X_OK):
                    continue
            child_dst = os.path.join(dpath, entry.name) if kind == MERGE else None
            stack.append((entry.path, child_dst, f"{rel}{entry.name}/", child_listed, st))
    return sv


def _may(path: str | Path, mode: int) -> bool:
    return os.access(path, mode)


def _tally(sv: Survey, st: os.stat_result, seen: set, block: int) -> None:
    sv.inodes += 1
    if stat.S_ISDIR(st.st_mode):
        sv.space += block
        return
    if st.st_nlink > 1:
        if (st.st_dev, st.st_ino) in seen:
            sv.inodes -= 1
            sv.files += 1
            return
        seen.add((st.st_dev, st.st_ino))
    sv.files += 1
    sv.bytes += st.st_size
    if stat.S_ISREG(st.st_mode):
        allocated = st.st_blocks * 512 or st.st_size  # 0 blocks: data inline in the inode
        sv.space += -(-allocated // block) * block


def _problem(path: str | Path, st: os.stat_result, what: str) -> str:
    owner = _user(st.st_uid)
    mine = st.st_uid == os.geteuid()
    return (
        f"{path} ({what}: mode {stat.S_IMODE(st.st_mode):03o}{'' if mine else ', owner ' + owner})"
    )


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --------------------------------------------------------------------------- copying


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
    _set_meta(dst, st)


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
    _set_meta(dst, st)
    return True


def _foreign_owner(st: os.stat_result) -> bool:
    """Root copying another user's entry: its owner is kept."""
    return os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, os.getegid())


def _set_meta(path: str, st: os.stat_result) -> None:
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
                _copy_range(fin, fout, 0, st.st_size)
            if _foreign_owner(st):
                os.fchown(fout, st.st_uid, st.st_gid)
            os.fchmod(fout, stat.S_IMODE(st.st_mode))
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))  # last: marks the copy whole
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_range(fin: int, fout: int, offset: int, count: int) -> None:
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
            _copy_range(fin, fout, data, min(hole, size) - data)
            pos = hole
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        _copy_range(fin, fout, pos, size - pos)  # no SEEK_DATA here: copy the rest whole
    os.ftruncate(fout, size)


# --------------------------------------------------------------------------- draining


@dataclass
class Mover:
    """One drain's settings and findings.

    `tmp` maps a filesystem (st_dev) to a private directory on it for copies in progress;
    `clock` (see `identical`) may be set only when the source was copied after that time.
    """

    tmp: dict[int, Path]
    clock: int | None = None
    count_duplicates: bool = True
    conflicts: list[str] = field(default_factory=list)
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)
    busy: dict[str, None] = field(default_factory=dict)  # files open elsewhere, kept
    _serial: int = 0
    _busy_hits: int = 0
    _waited: float = 0.0

    def drain(self, src: str | Path, dst: str | Path, conflicts: str | Path, rel: str = "") -> None:
        """Move everything in `src` into the directory `dst`, then remove `src`."""
        src, dst, conflicts = str(src), str(dst), str(conflicts)
        for _ in range(MAX_PASSES):
            busy = self._busy_hits
            self._pass(src, dst, conflicts, rel)
            try:
                os.rmdir(src)
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if self._busy_hits > busy:  # files open elsewhere: give them time to close
                    if self._waited >= BUSY_WAIT:
                        raise StillOpen(list(self.busy)) from None
                    time.sleep(0.1)
                    self._waited += 0.1
                continue  # something arrived meanwhile, or is still open: list again
            tick()
            return
        raise StillWriting(src)

    def _pass(self, src: str, dst: str, conflicts: str, rel: str) -> None:
        try:
            with os.scandir(src) as it:
                names = sorted(e.name for e in it)
        except FileNotFoundError:
            return
        for name in names:
            s = os.path.join(src, name)
            try:
                s_st = os.lstat(s)
            except FileNotFoundError:
                continue
            if name.startswith(REMOVING) and len(name) > len(REMOVING):
                name = name[len(REMOVING) :]  # left by a run that died while checking it
            self._entry(s, s_st, dst, conflicts, name, rel + name)

    def _entry(self, s: str, s_st, dst: str, conflicts: str, name: str, rel: str) -> None:
        d = os.path.join(dst, name)
        kind, d_st = decide(s, s_st, d, self.clock)
        if kind == MERGE:
            self.drain(s, d, os.path.join(conflicts, name), rel + "/")
        elif kind == MOVE:
            self._place(s, s_st, d, os.path.join(conflicts, name), conflicts, name, rel)
        elif kind == DUPLICATE:
            if self._remove_verified(s, s_st, d, d_st, conflicts, name) and self.count_duplicates:
                self.duplicates += 1
        else:
            self._keep(s, s_st, conflicts, name, rel)

    def _keep(self, s: str, s_st, conflicts: str, name: str, rel: str) -> None:
        """A conflict: `s` goes under `conflicts`, unless a copy of it is already kept there."""
        for n in range(MAX_PASSES):
            kept = os.path.join(conflicts, name if n == 0 else f"{name}.{n}")
            try:
                k_st = os.lstat(kept)
            except FileNotFoundError:
                break
            if stat.S_ISDIR(s_st.st_mode) and stat.S_ISDIR(k_st.st_mode):
                self.drain(s, kept, kept, rel + "/")  # merge into the copy kept earlier
                return
            if identical(s, s_st, kept, k_st, self.clock):
                self._remove_verified(s, s_st, kept, k_st, conflicts, name)
                return
        os.makedirs(conflicts, 0o700, exist_ok=True)
        target = free_name(conflicts, name)
        if self._place(s, s_st, target, target, conflicts, name, rel):
            self.conflicts.append(rel)

    def _place(self, s, s_st, target: str, nested: str, conflicts: str, name: str, rel) -> bool:
        """Put `s` at the absent `target`: renamed, or copied and then removed after checking.
        `nested` is where conflicts inside a directory go. False if the world changed first
        (the next pass decides again)."""
        try:
            rename_noreplace(s, target)
        except (FileExistsError, FileNotFoundError):
            return False
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            tick()
            return True
        if stat.S_ISDIR(s_st.st_mode):
            try:
                os.mkdir(target, 0o700)
            except FileExistsError:
                return False
            tick()
            self.drain(s, target, nested, rel + "/")
            _set_meta(target, s_st)
            return True
        tmp = self._tmp_path(os.path.dirname(target))
        try:
            if not copy_node(s, s_st, tmp):
                self.skipped.append(rel)  # a device file, and we are not root: reported
                os.unlink(s)
                tick()
                return True
        except FileNotFoundError:
            _unlink_quietly(tmp)
            return False
        try:
            rename_noreplace(tmp, target)
        except FileExistsError:
            os.unlink(tmp)
            return False
        tick()
        self._remove_verified(s, s_st, target, os.lstat(target), conflicts, name)
        return True

    def _tmp_path(self, target_dir: str) -> str:
        directory = self.tmp[os.lstat(target_dir).st_dev]
        directory.mkdir(mode=0o700, exist_ok=True)
        self._serial += 1
        return str(directory / f"{os.getpid()}-{self._serial}")

    def _remove_verified(self, s: str, s_st, copy: str, c_st, conflicts: str, name: str) -> bool:
        """Remove `s` if it is, now, identical to `copy`. It is first renamed to a private
        name, so no one can replace or open it by path while it is compared; a write through
        a descriptor opened earlier that lands during the comparison is saved under
        `conflicts`. False (and `s` is back in place) if it differs."""
        base = os.path.basename(s)
        trash = (
            s if base.startswith(REMOVING) else os.path.join(os.path.dirname(s), REMOVING + base)
        )
        if trash != s:
            try:
                rename_noreplace(s, trash)
            except FileExistsError:
                trash = s  # an older leftover holds the private name: compare in place
            except FileNotFoundError:
                return False
            else:
                tick()
        try:
            if not stat.S_ISREG(s_st.st_mode):
                t_st = os.lstat(trash)
                if t_st.st_ino != s_st.st_ino or not identical(trash, t_st, copy, c_st):
                    return self._put_back(trash, s)
                os.unlink(trash)
                tick()
                return True
            fd = os.open(trash, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.ELOOP, errno.EPERM):
                raise
            return self._put_back(trash, s)
        try:
            lease = _lease(fd)
            if lease is False:
                return self._open_elsewhere(trash, s, conflicts, name)
            st1 = os.fstat(fd)
            same = (
                stat.S_ISREG(st1.st_mode)
                and stat.S_IMODE(st1.st_mode) == stat.S_IMODE(c_st.st_mode)
                and st1.st_size == c_st.st_size
                and (
                    (
                        self.clock is not None
                        and st1.st_ino == s_st.st_ino
                        and (st1.st_mtime_ns, st1.st_size) == (s_st.st_mtime_ns, s_st.st_size)
                        and _unchanged(s_st, c_st, self.clock)
                    )
                    or _same_content(fd, copy)
                )
            )
            if not same:
                return self._put_back(trash, s)
            os.unlink(trash)
            tick()
            if lease is None:  # no lease here: check for a write that landed meanwhile
                st2 = os.fstat(fd)
                if (st2.st_size, st2.st_mtime_ns) != (st1.st_size, st1.st_mtime_ns):
                    self._rescue(fd, st2, conflicts, name)
            return True
        finally:
            os.close(fd)  # and with it the lease

    def _open_elsewhere(self, trash: str, s: str, conflicts: str, name: str) -> bool:
        """A file another program has open is never removed: on the conflicts' filesystem it
        moves there (the inode, so later writes follow it); elsewhere it waits."""
        if os.lstat(trash).st_dev == _dev_of(conflicts):
            os.makedirs(conflicts, 0o700, exist_ok=True)
            target = free_name(conflicts, name)
            try:
                rename_noreplace(trash, target)
            except FileExistsError:
                return self._put_back(trash, s)
            tick()
            self.conflicts.append(os.path.basename(target))
            return True
        self.busy[s] = None
        self._busy_hits += 1
        return self._put_back(trash, s)

    def _put_back(self, trash: str, s: str) -> bool:
        if trash != s:
            try:
                rename_noreplace(trash, s)
                tick()
            except FileExistsError:
                pass  # a new `s` arrived: the next pass handles both
        return False

    def _rescue(self, fd: int, st: os.stat_result, conflicts: str, name: str) -> None:
        os.makedirs(conflicts, 0o700, exist_ok=True)
        target = free_name(conflicts, name)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            _copy_range(fd, out, 0, os.fstat(fd).st_size)
            os.fchmod(out, stat.S_IMODE(st.st_mode))
        finally:
            os.close(out)
        self.conflicts.append(os.path.basename(target))
        tick()


def _lease(fd: int) -> bool | None:
    """Take a write lease: True when no other process has the file open (and none can open it
    until `fd` is closed), False when one has, None where leases do not work (NFS, another
    user's file): the caller then checks for writes after the fact."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        return False if exc.errno == errno.EAGAIN else None
    return True


def _dev_of(path: str) -> int:
    """The filesystem of `path`, or of its nearest existing parent."""
    while True:
        try:
            return os.lstat(path).st_dev
        except FileNotFoundError:
            path = os.path.dirname(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
