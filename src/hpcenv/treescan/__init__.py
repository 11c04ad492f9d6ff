"""The disk-usage walker (the one tree walker that counts): `os.listdir` + `os.lstat` relative to a directory fd, hardlinks
counted once, optionally parallel over subtrees.

Nothing is ever followed: every entry is `lstat`ed, a symlink counts as the link itself, and
each directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` and checked (by ``fstat``) to be
the very inode that was listed, so a directory swapped for a symlink during the walk (a link
into someone else's space) is skipped and counted in ``errors``. Mount points are crossed and
counted, as `du` does without ``-x``; a directory seen twice (a bind mount inside the tree) is
walked once. Permission errors and entries that vanish mid-walk are counted in ``errors``,
never raised.

Per tree (a `TreeUsage`):

    apparent_bytes  st_size of every non-directory entry (files, symlinks), each inode once
    unique_bytes    the part of apparent_bytes whose inodes have all their links inside the
                    tree (st_nlink == links seen): what deleting the tree frees
    shared_bytes    (scan_many) the part of apparent_bytes whose inodes are also linked from
                    another tree of the same call; apparent - unique - shared is linked only
                    from outside every scanned tree
    disk_bytes      st_blocks * 512 of every inode once, directories included (= `du -sB1`)
    files           non-directory entries, every link counted (= `find ! -type d | wc -l`)
    dirs            directories, the root included (= `find -type d | wc -l`)
    inodes          distinct inodes, directories included (= `du -s --inodes`)
    linked_outside  (scan_many) inodes also linked from outside every tree of the call: a
                    link count the scanned trees do not explain (`clean` keeps such a
                    package: something it does not know of still uses it)
    last_used       the newest mtime of a non-directory entry: when the tree's content last
                    changed. atime is not used: relatime/noatime make it unreliable.

Speed (numbers in bench/bench_scan.py). On a local filesystem with a warm cache the walk is
bound by per-entry interpreter work: threads only add GIL hand-offs (4 threads: ~2.5x slower
than 1), so a big walk is split over forked processes instead. Where each `lstat` waits on a
server (NFS, Lustre, GPFS, FUSE) or a disk, threads overlap the waits. By default the walk
chooses: it walks PROBE_ENTRIES entries in the calling thread; slower than SLOW_ENTRY_S
each, it goes on with SLOW_FS_THREADS threads; otherwise, still unfinished after
FORK_AFTER_ENTRIES entries, it splits the rest over as many processes as it may use CPUs
(affinity, so a SLURM job's share; at most MAX_PROCESSES), this one included. It forks only
while it is the process's only thread; children send their sums back through a pipe, and a
child that fails has its share walked again here. Trees split over processes count a
directory reached twice through bind mounts in two shares twice.

The walk itself (threads, forked processes, the automatic choice) is in `treescan.walk`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcenv.treescan.walk import Tally, walk_tree


@dataclass(frozen=True)
class TreeUsage:
    path: str
    exists: bool = True
    apparent_bytes: int = 0
    unique_bytes: int = 0
    shared_bytes: int = 0
    disk_bytes: int = 0
    files: int = 0
    dirs: int = 0
    inodes: int = 0
    linked_outside: int = 0
    last_used: float | None = None
    errors: int = 0


def _tree(path: Path, dev0: int | None, threads: int | None, processes: int | None):
    """(exists, tallies, dev0) for one root; the root itself is never followed."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False, [], dev0
    except OSError:
        tally = Tally()
        tally.errors = 1
        return True, [tally], dev0
    dev0 = st.st_dev if dev0 is None else dev0
    if stat.S_ISDIR(st.st_mode):
        return True, walk_tree(os.fspath(path), st, dev0, threads, processes), dev0
    tally = Tally()  # a file or a symlink: measured as the entry itself
    tally.files = 1
    tally.newest = st.st_mtime
    if st.st_nlink == 1:
        tally.size, tally.blocks, tally.inodes = st.st_size, st.st_blocks, 1
    else:
        key = st.st_ino if st.st_dev == dev0 else (st.st_dev, st.st_ino)
        tally.multi[key] = [st.st_size, st.st_blocks, st.st_nlink, 1]
    return True, [tally], dev0


def _merge_multi(tallies: list[Tally]) -> dict:
    multi = tallies[0].multi if tallies else {}
    for tally in tallies[1:]:
        for key, rec in tally.multi.items():
            have = multi.get(key)
            if have is None:
                multi[key] = rec
            else:
                have[3] += rec[3]
    return multi


def _related(paths: list[Path]) -> list[int]:
    """For each tree, a bit mask of the trees it is (or contains, or equals): never 'shared'.
    Found through each path's ancestors, so thousands of sibling trees cost little."""
    real = [os.path.realpath(p) for p in paths]
    index: dict[str, list[int]] = {}
    for i, r in enumerate(real):
        index.setdefault(r, []).append(i)
    masks = [1 << i for i in range(len(real))]
    for i, r in enumerate(real):
        probe = r
        while True:
            for j in index.get(probe, ()):
                masks[i] |= 1 << j
                masks[j] |= 1 << i
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
    return masks


def scan(path: Path, *, threads: int | None = None, processes: int | None = None) -> TreeUsage:
    """Usage of one tree (see the module doc for each number).

    By default the walk chooses (see the module doc). `threads=n` walks with exactly n
    threads (1: the calling thread alone); `processes=n` forks n processes.
    """
    return scan_many([path], threads=threads, processes=processes)[Path(path)]


def scan_many(
    paths: Sequence[Path], *, threads: int | None = None, processes: int | None = None
) -> dict[Path, TreeUsage]:
    """Usage of several trees, keyed by the paths as given. An inode linked from two of them
    counts in both trees' `shared_bytes` and in neither's `unique_bytes`. Trees may nest (a
    tree is never 'shared' with one inside it), but nested trees are walked twice."""
    roots = list(dict.fromkeys(Path(p) for p in paths))
    dev0 = None
    walked = []
    for root in roots:
        exists, tallies, dev0 = _tree(root, dev0, threads, processes)
        walked.append((exists, tallies, _merge_multi(tallies)))
    holders: dict = {}
    seen_all: dict = {}
    if len(roots) > 1:
        for i, (_exists, _tallies, multi) in enumerate(walked):
            bit = 1 << i
            for key, rec in multi.items():
                holders[key] = holders.get(key, 0) | bit
                seen_all[key] = seen_all.get(key, 0) + rec[3]
    related = _related(roots) if len(roots) > 1 else [1]
    out: dict[Path, TreeUsage] = {}
    for i, (root, (exists, tallies, multi)) in enumerate(zip(roots, walked, strict=True)):
        single = sum(t.size for t in tallies)
        apparent = unique = single
        shared = 0
        blocks = sum(t.blocks for t in tallies)
        others = ~related[i]
        outside = 0
        for key, (size, nblocks, nlink, seen) in multi.items():
            apparent += size
            blocks += nblocks
            if seen >= nlink:
                unique += size
                continue
            if holders and holders[key] & others:
                shared += size
            if nlink > seen_all.get(key, seen):
                outside += 1
        newest = max((t.newest for t in tallies), default=0.0)
        out[root] = TreeUsage(
            path=str(root),
            exists=exists,
            apparent_bytes=apparent,
            unique_bytes=unique,
            shared_bytes=shared,
            disk_bytes=blocks * 512,
            files=sum(t.files for t in tallies),
            dirs=sum(t.dirs for t in tallies),
            inodes=sum(t.inodes for t in tallies) + len(multi),
            linked_outside=outside,
            last_used=newest if any(t.files for t in tallies) else None,
            errors=sum(t.errors for t in tallies),
        )
    return out
