"""The walk behind `treescan.scan_many`: listdir + lstat relative to directory fds, in the
calling thread, with helper threads (slow filesystems) or forked processes (big, fast ones);
see the `treescan` docstring for the rules and the numbers."""

# Automatic parallelism (threads=None and processes=None); see the module doc of treescan.

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

# Automatic parallelism (threads=None and processes=None); see the module doc.
PROBE_ENTRIES = 2000  # entries walked in the calling thread before choosing


SLOW_ENTRY_S = 20e-6  # slower than this per entry: a slow filesystem (warm local ext4: ~2 us)


SLOW_FS_THREADS = 16  # threads for a slow filesystem


FORK_AFTER_ENTRIES = 10_000  # a fast walk still going after this many entries is forked


MAX_PROCESSES = 8


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class _Walk:
    """What the workers of one tree share: a stack of directories to hand out, the
    directories already claimed (against bind-mount loops), and idle bookkeeping."""

    def __init__(self, dev0: int, workers: int) -> None:
        self.dev0 = dev0
        self.shared: deque[tuple[str, tuple[int, int]]] = deque()
        self.claimed: dict[tuple[int, int], str] = {}
        self.cond = threading.Condition()
        self.workers = workers
        self.idle = 0
        self.done = False
        self.failed: BaseException | None = None

    def add_workers(self, n: int) -> None:
        with self.cond:
            self.workers += n

    def take(self) -> tuple[str, tuple[int, int]] | None:
        """The next shared directory; None once every worker is idle (the walk is over)."""
        with self.cond:
            while not self.shared:
                if self.done:
                    return None
                self.idle += 1
                if self.idle == self.workers:
                    self.done = True
                    self.cond.notify_all()
                    return None
                self.cond.wait()
                self.idle -= 1
            return self.shared.pop()

    def give(self, stack: list) -> None:
        """Hand the shallower half of a worker's stack (the bigger subtrees) to idle workers."""
        with self.cond:
            half = len(stack) // 2
            self.shared.extend(stack[:half])
            del stack[:half]
            self.cond.notify(half)

    def stop(self, exc: BaseException) -> None:
        with self.cond:
            self.failed = self.failed or exc
            self.done = True
            self.shared.clear()
            self.cond.notify_all()


class Tally:
    """One worker's sums. Single-link inodes are summed directly (they cannot be seen twice);
    multi-link ones go to `multi`: key -> [size, blocks, nlink, links seen]."""

    __slots__ = ("size", "blocks", "files", "dirs", "inodes", "errors", "newest", "multi")

    def __init__(self) -> None:
        self.size = self.blocks = self.files = self.dirs = self.inodes = self.errors = 0
        self.newest = 0.0
        self.multi: dict = {}


def _work(walk: _Walk, stack: list, tally: Tally, budget: int | None = None) -> None:
    """Walk directories from `stack` into `tally`; the hot loop keeps everything in locals.

    budget None: when `stack` runs dry, take directories other workers hand out, until the
    walk is over. An int: stop when `stack` runs dry or about that many entries are walked
    (the rest stays on `stack`).
    """
    lstat, listdir, fstat, os_open, close = os.lstat, os.listdir, os.fstat, os.open, os.close
    S_ISDIR = stat.S_ISDIR
    dev0, claimed, multi = walk.dev0, walk.claimed, tally.multi
    size = blocks = files = dirs = inodes = errors = 0
    newest = tally.newest
    left = budget
    while True:
        if not stack:
            item = walk.take() if budget is None else None
            if item is None:
                break
            stack.append(item)
        path, expect = stack.pop()
        try:
            fd = os_open(path, _OPEN_DIR)
        except OSError:
            errors += 1
            continue
        try:
            st = fstat(fd)
            if (st.st_dev, st.st_ino) != expect:  # swapped for a link or another dir
                errors += 1
                continue
            names = listdir(fd)
            for name in names:
                try:
                    st = lstat(name, dir_fd=fd)
                except OSError:
                    errors += 1
                    continue
                if S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    child = f"{path}/{name}"
                    if claimed.setdefault(key, child) is not child:
                        continue  # seen already: a bind mount or a loop
                    dirs += 1
                    inodes += 1
                    blocks += st.st_blocks
                    stack.append((child, key))
                    continue
                files += 1
                if st.st_mtime > newest:
                    newest = st.st_mtime
                if st.st_nlink == 1:
                    size += st.st_size
                    blocks += st.st_blocks
                    inodes += 1
                    continue
                key = st.st_ino if st.st_dev == dev0 else (st.st_dev, st.st_ino)
                rec = multi.get(key)
                if rec is None:
                    multi[key] = [st.st_size, st.st_blocks, st.st_nlink, 1]
                else:
                    rec[3] += 1
        except OSError:
            errors += 1
        finally:
            close(fd)
        if left is not None:
            left -= len(names) + 1
            if left <= 0:
                break
        elif walk.idle and len(stack) > 1:
            walk.give(stack)
        if walk.failed is not None:
            break
    tally.size += size
    tally.blocks += blocks
    tally.files += files
    tally.dirs += dirs
    tally.inodes += inodes
    tally.errors += errors
    tally.newest = newest


def _helper(walk: _Walk, tally: Tally) -> None:
    try:
        _work(walk, [], tally)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        walk.stop(exc)


def _threaded(walk: _Walk, stack: list, first: Tally, helpers: int) -> list[Tally]:
    """Finish the walk with the calling thread and `helpers` more."""
    tallies = [first] + [Tally() for _ in range(helpers)]
    walk.add_workers(helpers)
    started = []
    try:
        for tally in tallies[1:]:
            thread = threading.Thread(target=_helper, args=(walk, tally), daemon=True)
            thread.start()
            started.append(thread)
        _work(walk, stack, first)
    except BaseException as exc:
        walk.stop(exc)
        raise
    finally:
        for thread in started:
            thread.join()
    if walk.failed is not None:
        raise walk.failed
    return tallies


def _forked(walk: _Walk, stack: list, first: Tally, processes: int) -> list[Tally]:
    """Finish the walk in this process and `processes - 1` forked children, round robin over
    the pending directories once the shallowest are opened up (at least 8 per process). A
    child that fails (or cannot be forked) has its share walked here instead."""
    while stack and len(stack) < 8 * processes:
        one = [stack.pop(0)]  # the bottom of the stack: the shallowest, biggest subtree
        _work(walk, one, first, budget=1)
        stack.extend(one)
    mine, *shares = (stack[i::processes] for i in range(processes))
    stack.clear()
    children: list[tuple[int, int, list]] = []
    tallies = [first]
    try:
        for share in shares:
            child = _spawn(walk, share) if share else None
            if child is None:
                mine.extend(share)
            else:
                children.append((*child, share))
        _work(walk, mine, first, budget=sys.maxsize)
        while children:
            pid, fd, share = children.pop(0)
            tally = _receive(pid, fd)
            if tally is None:
                tally = Tally()
                _work(walk, share, tally, budget=sys.maxsize)
            tallies.append(tally)
    finally:
        for pid, fd, _share in children:  # interrupted: end our own children
            os.close(fd)
            _end(pid)
    return tallies


def _spawn(walk: _Walk, share: list) -> tuple[int, int] | None:
    """Fork a child that walks `share` and sends its tally (see `spawn`)."""
    return spawn(lambda: _child_tally(walk, share))


def _child_tally(walk: _Walk, share: list) -> list:
    """In a child: walk `share`; the tally's fields, links seen in full already settled."""
    tally = Tally()
    _work(walk, share, tally, budget=sys.maxsize)
    for key, rec in list(tally.multi.items()):
        if rec[3] >= rec[2]:  # every link seen here: settled, no need to send it
            del tally.multi[key]
            tally.size += rec[0]
            tally.blocks += rec[1]
            tally.inodes += 1
    return [getattr(tally, f) for f in Tally.__slots__]


def _receive(pid: int, fd: int) -> Tally | None:
    """The child's tally (closing `fd` and reaping the child); None if it failed."""
    fields = receive(pid, fd)
    if fields is None:
        return None
    tally = Tally()
    for field, value in zip(Tally.__slots__, fields, strict=True):
        setattr(tally, field, value)
    return tally


def spawn(produce: Callable[[], Any]) -> tuple[int, int] | None:
    """Fork a child that calls `produce` and writes its pickled result to a pipe: (pid, the
    pipe's read end), or None if the system cannot fork now. The child makes os/pickle calls
    only and leaves by _exit (no atexit, no flush)."""
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:
        status = 1
        try:
            os.close(read)
            data = pickle.dumps(produce(), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write, "wb") as out:
                out.write(data)
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    return pid, read


def receive(pid: int, fd: int) -> Any | None:
    """What the child of `spawn` sent (closing `fd`, reaping the child); None if it failed."""
    try:
        with os.fdopen(fd, "rb") as inp:
            data = inp.read()
    except BaseException:
        _end(pid)
        raise
    _pid, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return None
    return pickle.loads(data)


def _end(pid: int) -> None:
    """Kill and reap one of our own children."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _auto_processes() -> int:
    """Processes for a big walk on a fast filesystem: the CPUs this process may use (a job's
    cgroup or affinity included), at most MAX_PROCESSES; 1 where forking is unsafe."""
    if not hasattr(os, "fork") or not _only_thread():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_PROCESSES))


def _only_thread() -> bool:
    """Whether this process runs one thread (native ones too: a library's runtime may start
    some). Forking a multi-threaded process can deadlock the child."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def walk_tree(
    root: str, st: os.stat_result, dev0: int, threads: int | None, processes: int | None
) -> list[Tally]:
    """Walk the directory `root` (already lstat'ed as `st`)."""
    key = (st.st_dev, st.st_ino)
    walk = _Walk(dev0, workers=1)
    walk.claimed[key] = root
    first = Tally()
    first.dirs = first.inodes = 1
    first.blocks = st.st_blocks
    stack = [(root, key)]
    if threads is None and processes is None:  # auto: probe the filesystem, then choose
        t0 = time.perf_counter()
        _work(walk, stack, first, budget=PROBE_ENTRIES)
        walked = first.files + first.dirs
        if stack and time.perf_counter() - t0 > SLOW_ENTRY_S * walked:
            threads = SLOW_FS_THREADS
        elif stack:
            _work(walk, stack, first, budget=FORK_AFTER_ENTRIES - walked)
            processes = _auto_processes() if stack else 1
    if processes is not None and processes > 1 and stack:
        return _forked(walk, stack, first, processes)
    return _threaded(walk, stack, first, max(1, threads or 1) - 1)
