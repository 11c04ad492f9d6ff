"""Crash safety: a lock per storage root, a write-ahead journal, and the fault-injection hook.

Every command that moves or deletes user files holds `StorageLock`, writes what it is about to
do to a `Journal` (flushed and fsynced) before doing it, and calls `tick()` after each atomic
filesystem action. A journal that exists when a command starts was left by a run that died;
the command resumes from it.

Test hook: with `HPCENV_TEST_KILL_AFTER=K` in the environment the process SIGKILLs itself right
after its K-th tick; `HPCENV_TEST_TICKS_FILE=PATH` makes it write its tick count there at each
tick; `HPCENV_TEST_TICK_DELAY=SECONDS` slows each step (to make two runs overlap). The
fault-injection tests use them to kill an executor after every step in turn.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcenv.errors import LockedError

_ticks = 0
_hooks: tuple[str | None, float, int] | None = None


def tick() -> None:
    """Mark the end of one atomic step (the fault-injection point). Free unless a test hook
    is set: the environment is read once per process."""
    global _ticks, _hooks
    _ticks += 1
    if _hooks is None:
        env = os.environ
        _hooks = (
            env.get("HPCENV_TEST_TICKS_FILE") or None,
            float(env.get("HPCENV_TEST_TICK_DELAY") or 0),
            int(env.get("HPCENV_TEST_KILL_AFTER") or 0),
        )
    counter, delay, kill_after = _hooks
    if counter:
        Path(counter).write_text(str(_ticks))
    if delay:
        time.sleep(delay)
    if kill_after and _ticks == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)


def changed_anything() -> bool:
    """Whether this process has finished any step yet: with none, an error leaves the disk as
    it was (the CLI may then call it a refusal, exit 2)."""
    return _ticks > 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            shutil.rmtree(staged, ignore_errors=True)
            os.mkdir(staged, 0o700)
            try:
                _write_owner(staged, mine)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
            try:
                os.rename(staged, lock_dir)  # atomic; fails while a (non-empty) lock dir exists
            except OSError as exc:
                shutil.rmtree(staged, ignore_errors=True)
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
                shutil.rmtree(self.dir_path, ignore_errors=True)
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
    shutil.rmtree(aside, ignore_errors=True)
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
    shutil.rmtree(aside, ignore_errors=True)


@dataclass
class Journal:
    """An append-only JSON-lines log of one operation: a header, then `begin`/`done` records.

    `Journal.open` returns the unfinished journal of an earlier, interrupted run if there is
    one (`resumed` is then true), else a new one. `finish` moves it to `journal/done/`.
    """

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False

    @classmethod
    def open(cls, journal_dir: Path, op: str, header: dict[str, Any]) -> Journal:
        from hpcenv.storage import ensure_private_dir

        ensure_private_dir(journal_dir)
        path = journal_dir / f"{op}.jsonl"
        if path.exists():
            lines = [json.loads(line) for line in _complete_lines(path)]
            if lines:
                return cls(path=path, header=lines[0], records=lines[1:], resumed=True)
        journal = cls(path=path, header={"op": op, "started": time.time(), **header})
        journal._append(journal.header)
        return journal

    @staticmethod
    def pending(journal_dir: Path) -> list[str]:
        """The operations with an unfinished journal (interrupted runs)."""
        if not journal_dir.is_dir():
            return []
        return sorted(p.stem for p in journal_dir.glob("*.jsonl"))

    def _append(self, record: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def record(self, **record: Any) -> None:
        """Write a record (durably) and count it as a step."""
        self.records.append(record)
        self._append(record)
        tick()

    def last(self, **match: Any) -> dict[str, Any] | None:
        for rec in reversed(self.records):
            if all(rec.get(k) == v for k, v in match.items()):
                return rec
        return None

    def finish(self, outcome: str = "done") -> None:
        self._append({"finished": outcome, "at": time.time()})
        done = self.path.parent / "done"
        done.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.header.get("started", 0)))
        os.replace(self.path, done / f"{self.path.stem}-{stamp}-{os.getpid()}.jsonl")
        _fsync_dir(self.path.parent)
        tick()


def _complete_lines(path: Path) -> Iterator[str]:
    """Lines of a journal, ignoring a torn last line from a crash mid-write."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        yield line


def pid_alive(pid: int) -> bool:
    """Whether another process with this pid exists (ours never counts: it is not a leftover)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True
