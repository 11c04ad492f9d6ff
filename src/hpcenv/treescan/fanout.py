"""Independent pieces of filesystem work (one package's files to check, say), run the way the
walker runs its walk (`treescan.walk`): where the filesystem answers fast, in this
process and, for a big job, in forked processes (Python threads only add GIL hand-offs
there); where each `lstat` waits on a server (NFS, Lustre, GPFS), in threads that overlap
the waits.

`run(pieces, work)`: `work(piece)` returns a picklable result with `entries` (how many paths
it looked at) and `seconds`, or None when the caller's deadline passed (then the rest is
not started and `run` says the job is incomplete). Each piece has a `weight` (its expected
cost, in any unit `fork_after` shares).

Auto mode (threads and processes None): pieces in this process, lightest first, until
walk.PROBE_ENTRIES paths are done; slower than walk.SLOW_ENTRY_S a path, the rest with
walk.SLOW_FS_THREADS threads; else, when more than `fork_after` weight is left, split over
as many processes as this one may use CPUs (it forks only while it is the process's only
thread). A child that fails, or cannot be forked, has its share done here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from hpcenv.treescan import walk

Work = Callable[[Any], Any]


def run(
    pieces: Sequence[Any],
    work: Work,
    *,
    threads: int | None = None,
    processes: int | None = None,
    fork_after: int = 0,
) -> tuple[list[Any], bool]:
    """Every piece's result (in no particular order) and whether all pieces were done."""
    todo = sorted(pieces, key=lambda p: p.weight)
    out: list[Any] = []
    if threads is None and processes is None:
        probed = 0
        spent = 0.0
        while todo and probed < walk.PROBE_ENTRIES:
            done = work(todo.pop(0))
            if done is None:
                return out, False
            out.append(done)
            probed += done.entries
            spent += done.seconds
        if not todo:
            return out, True
        if probed and spent / probed > walk.SLOW_ENTRY_S:
            threads = walk.SLOW_FS_THREADS
        elif sum(p.weight for p in todo) > fork_after:
            processes = walk._auto_processes()
    if processes is not None and processes > 1 and len(todo) > 1:
        more, complete = _forked(todo, work, processes)
    elif threads is not None and threads > 1 and len(todo) > 1:
        more, complete = _threaded(todo, work, threads)
    else:
        more, complete = _serial(todo, work)
    return out + more, complete


def _serial(pieces: Sequence[Any], work: Work) -> tuple[list[Any], bool]:
    out = []
    for piece in pieces:
        done = work(piece)
        if done is None:
            return out, False
        out.append(done)
    return out, True


def _threaded(pieces: Sequence[Any], work: Work, threads: int) -> tuple[list[Any], bool]:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def one(piece):
        if stop.is_set():
            return None
        done = work(piece)
        if done is None:
            stop.set()
        return done

    with ThreadPoolExecutor(max_workers=min(threads, len(pieces))) as pool:
        results = list(pool.map(one, pieces))
    out = [r for r in results if r is not None]
    return out, len(out) == len(pieces)


def shares(pieces: Sequence[Any], n: int) -> list[list[Any]]:
    """n lists of pieces of about equal weight (heaviest first, each to the lightest list)."""
    lists: list[list[Any]] = [[] for _ in range(n)]
    loads = [0] * n
    for piece in sorted(pieces, key=lambda p: -p.weight):
        i = loads.index(min(loads))
        lists[i].append(piece)
        loads[i] += piece.weight
    return [s for s in lists if s]


def _forked(pieces: Sequence[Any], work: Work, processes: int) -> tuple[list[Any], bool]:
    """This process and `processes - 1` forked children, a share each."""
    mine, *others = shares(pieces, processes)
    children: list[tuple[int, int, list[Any]]] = []
    try:
        for share in others:
            child = walk.spawn(lambda share=share: _serial(share, work))
            if child is None:
                mine += share
            else:
                children.append((*child, share))
        out, complete = _serial(mine, work)
        while children:
            pid, fd, share = children.pop(0)
            got = walk.receive(pid, fd)
            if got is None:
                got = _serial(share, work)
            out += got[0]
            complete = complete and got[1]
    finally:
        for pid, fd, _share in children:  # interrupted: end our own children
            os.close(fd)
            walk._end(pid)
    return out, complete
