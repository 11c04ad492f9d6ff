"""The lock per storage root (and per home, for setup): `StorageLock`.

Where the filesystem supports it, an `flock` on the lock file, which the kernel drops if we
die; where it cannot lock (NFS without lockd, Lustre without flock), a lock directory made by
one atomic rename, whose owner (pid, host, boot, process start) tells a stale one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcenv.errors import LockedError
from hpcenv.fsops import remove_tree
from hpcenv.journal import pid_alive

# flock(2) errors that mean "this filesystem cannot lock" (NFS without lockd: ENOLCK; Lustre
# mounted noflock: ENOSYS or EOPNOTSUPP), not "someone else holds it".
NO_FLOCK_ERRNOS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})


class StorageLock:
    """An exclusive lock on STORAGE/.hpcenv/lock, held for the `with` block.

    Where the filesystem supports it, an `flock` on that file: the kernel drops it if we die.
    Where `flock` fails with NO_FLOCK_ERRNOS, a lock directory beside it (`lock.d`) made by one
    atomic rename of a prepared directory holding `owner` (pid, host, boot id, process start,
    wall time). A lock directory whose owner ran on this host and is gone (dead pid, a pid
    reused by a later process, or an earlier boot) is stale and taken over; one held from
    another host cannot be judged from here, so we wait, and the timeout message names the host
    and pid and how to remove it. An `flock` holder also waits while a live lock directory
    exists (nodes that can lock and nodes that cannot, on one storage).

    When another process holds it, `on_wait(holder)` is called once ("PID" or "PID on host H")
    and we poll until `timeout` seconds pass, then raise `LockedError` (exit 2, nothing
    changed). `mode` says which lock was taken ("flock" or "dir").
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout: float = 60.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.on_wait = on_wait
        self.waited = False
        self.mode: str | None = None
        self._fd: int | None = None

    @property
    def dir_path(self) -> Path:
        return self.path.with_name(self.path.name + ".d")

    def __enter__(self) -> StorageLock:
        deadline = time.monotonic() + self.timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in NO_FLOCK_ERRNOS:
                    os.close(fd)
                    return self._enter_dir(deadline)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                self._wait(deadline, holder, in_dir=False)
                continue
            owner = _read_owner(self.dir_path)
            if owner is not None and not _stale(owner):  # a node without flock holds it
                os.close(fd)
                self._wait(deadline, _holder(owner), in_dir=True)
                continue
            break
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        self.mode = "flock"
        return self

    def _enter_dir(self, deadline: float) -> StorageLock:
        lock_dir = self.dir_path
        mine = _owner_record()
        while True:
            staged = lock_dir.with_name(f"{lock_dir.name}.new-{os.getpid()}")
            remove_tree(staged)
            os.mkdir(staged, 0o700)
            try:
                _write_owner(staged, mine)
            except BaseException:
                remove_tree(staged)
                raise
            try:
                os.rename(staged, lock_dir)  # atomic; fails while a (non-empty) lock dir exists
            except OSError as exc:
                remove_tree(staged)
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    raise
            else:
                self.mode = "dir"
                return self
            owner = _read_owner(lock_dir)
            if owner is None:
                if _age(lock_dir) > _OWNERLESS_GRACE_S:  # not ours: made by hand, or torn
                    _take_over(lock_dir, None)
                    continue
            elif _stale(owner):
                _take_over(lock_dir, owner)
                continue
            self._wait(deadline, _holder(owner) if owner else "?", in_dir=True)

    def _wait(self, deadline: float, holder: str, *, in_dir: bool) -> None:
        if not self.waited and self.on_wait is not None:
            self.on_wait(holder)
        self.waited = True
        if time.monotonic() >= deadline:
            hint = "wait for it to finish, then re-run"
            if in_dir:
                hint += (
                    f"; if that process is gone (its node crashed), remove the lock with "
                    f"`rm -r {self.dir_path}`"
                )
            raise LockedError(
                f"another hpcenv (pid {holder}) is working on this storage area and "
                f"did not finish within {self.timeout:g} s",
                hint=hint,
            )
        time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.mode == "dir":
            if _read_owner(self.dir_path) == _owner_record():
                remove_tree(self.dir_path)
        self.mode = None


_OWNERLESS_GRACE_S = 30.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of `pid` in clock ticks after boot ("" if unknown): tells a reused pid
    from the process that wrote a lock."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def _owner_record() -> dict[str, Any]:
    global _OWNER
    if _OWNER is None or _OWNER["pid"] != os.getpid():
        import socket

        _OWNER = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "boot": _boot_id(),
            "start": _process_start(os.getpid()),
        }
    return dict(_OWNER)


_OWNER: dict[str, Any] | None = None


def _write_owner(lock_dir: Path, owner: dict[str, Any]) -> None:
    fd = os.open(lock_dir / "owner", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps({**owner, "since": time.time()}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_owner(lock_dir: Path) -> dict[str, Any] | None:
    """The owner of a lock directory (without its time), or None if there is none/no record."""
    try:
        with open(lock_dir / "owner", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data.pop("since", None)
    return data


def _holder(owner: dict[str, Any]) -> str:
    return f"{owner.get('pid', '?')} on host {owner.get('host', '?')}"


def _stale(owner: dict[str, Any]) -> bool:
    """Whether the process that holds a lock directory is certainly gone. Only a lock taken on
    this host can be judged; another host's is never stale from here."""
    import socket

    if owner.get("host") != socket.gethostname():
        return False
    if owner.get("boot") and owner.get("boot") != _boot_id():
        return True  # written before this host rebooted
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    if pid == os.getpid():
        return owner.get("start") != _process_start(pid)
    if not pid_alive(pid):
        return True
    return bool(owner.get("start")) and owner.get("start") != _process_start(pid)


def _age(path: Path) -> float:
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _take_over(lock_dir: Path, judged: dict[str, Any] | None) -> None:
    """Remove a stale lock directory, unless someone replaced it since it was judged: it is
    renamed aside (atomic, one winner), its owner checked again, and put back if it changed."""
    aside = lock_dir.with_name(f"{lock_dir.name}.stale-{os.getpid()}")
    remove_tree(aside)
    try:
        os.rename(lock_dir, aside)
    except FileNotFoundError:
        return  # another process took it over first
    if _read_owner(aside) != judged:
        try:
            os.rename(aside, lock_dir)  # a live lock: give it back
        except OSError:
            pass
        return
    remove_tree(aside)
