"""`Mover.drain`: move everything from one directory into another (a rename on one filesystem,
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
from hpcenv.setup.compare import DUPLICATE, MERGE, MOVE, decide, identical, same_content, unchanged
from hpcenv.setup.copy import copy_node, copy_range, set_meta
from hpcenv.setup.renames import free_name, rename_noreplace

REMOVING = ".hpcenv-removing."  # an entry being checked before removal: `REMOVING + name`


MAX_PASSES = 500  # listings of one directory before giving up on a writer that never stops


BUSY_WAIT = 5.0  # seconds a drain waits, in all, for files open elsewhere to be closed


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
            set_meta(target, s_st)
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
                        and unchanged(s_st, c_st, self.clock)
                    )
                    or same_content(fd, copy)
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
            copy_range(fd, out, 0, os.fstat(fd).st_size)
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
