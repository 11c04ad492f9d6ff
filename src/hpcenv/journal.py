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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StorageLock:
    """An exclusive `flock` on STORAGE/.hpcenv/lock; the kernel drops it if we die.

    When another process holds it, `on_wait(pid)` is called once and we poll until `timeout`
    seconds pass, then raise `LockedError` (exit 2, nothing changed).
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
        self._fd: int | None = None

    def __enter__(self) -> StorageLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                if not self.waited and self.on_wait is not None:
                    self.on_wait(holder)
                self.waited = True
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockedError(
                        f"another hpcenv (pid {holder}) is working on this storage area and "
                        f"did not finish within {self.timeout:.0f} s",
                        hint="wait for it to finish, then re-run",
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
