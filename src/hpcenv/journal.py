"""Crash safety: a write-ahead journal, and the fault-injection hook.

Every command that moves or deletes user files holds `lock.StorageLock`, writes what it is about to
do to a `Journal` (flushed and fsynced) before doing it, and calls `tick()` after each atomic
filesystem action. A journal that exists when a command starts was left by a run that died;
the command resumes from it.

Test hooks (private: the `_HPCENV_TEST_` prefix, never a setting), read once per process:
`_HPCENV_TEST_KILL_AFTER=K` SIGKILLs the process right after its K-th tick (the fault-injection
tests kill an executor after every step in turn); `_HPCENV_TEST_TICKS_FILE=PATH` writes the tick
count there at each tick; `_HPCENV_TEST_PAUSE_AT=K` with `_HPCENV_TEST_RESUME_FILE=PATH` pauses
the process after its K-th tick, having created `PATH.paused`, until PATH exists (a barrier:
a test holds a run at a known step, e.g. holding the lock, while another starts). In-process
runs (tests/moving.py) may also set a delay per tick through `_hooks`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcenv.fsops import fsync_dir

_ticks = 0


@dataclass(frozen=True)
class Hooks:
    """The test hooks of this process (see the module docstring); all off by default."""

    ticks_file: str | None = None
    delay: float = 0.0
    kill_after: int = 0
    pause_at: int = 0
    resume_file: str | None = None


_hooks: Hooks | None = None


def tick() -> None:
    """Mark the end of one atomic step (the fault-injection point). Free unless a test hook
    is set: the environment is read once per process."""
    global _ticks, _hooks
    _ticks += 1
    if _hooks is None:
        env = os.environ
        _hooks = Hooks(
            ticks_file=env.get("_HPCENV_TEST_TICKS_FILE") or None,
            kill_after=int(env.get("_HPCENV_TEST_KILL_AFTER") or 0),
            pause_at=int(env.get("_HPCENV_TEST_PAUSE_AT") or 0),
            resume_file=env.get("_HPCENV_TEST_RESUME_FILE") or None,
        )
    hooks = _hooks
    if hooks.ticks_file:
        Path(hooks.ticks_file).write_text(str(_ticks))
    if hooks.delay:
        time.sleep(hooks.delay)
    if hooks.pause_at and _ticks == hooks.pause_at and hooks.resume_file:
        Path(hooks.resume_file + ".paused").write_text(str(os.getpid()))
        while not os.path.exists(hooks.resume_file):
            time.sleep(0.005)
    if hooks.kill_after and _ticks == hooks.kill_after:
        os.kill(os.getpid(), signal.SIGKILL)


def changed_anything() -> bool:
    """Whether this process has finished any step yet: with none, an error leaves the disk as
    it was (the CLI may then call it a refusal, exit 2)."""
    return _ticks > 0


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
        fsync_dir(self.path.parent)
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
