"""What a merge does with one entry: move it, merge two directories, drop a duplicate (checked
identical), or keep a conflict aside. The survey and the drain call the same `decide`, so
`--dry-run` predicts the conflicts of the real run."""

from __future__ import annotations

import os
import stat

MOVE, MERGE, DUPLICATE, CONFLICT = "move", "merge", "duplicate", "conflict"


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
            if clock is not None and unchanged(s_st, d_st, clock):
                return True
            fd = os.open(s, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                return same_content(fd, d)
            finally:
                os.close(fd)
    except OSError:  # unreadable or gone: not provably identical
        return False
    if stat.S_ISCHR(s_st.st_mode) or stat.S_ISBLK(s_st.st_mode):
        return s_st.st_rdev == d_st.st_rdev
    return True  # FIFOs and sockets carry nothing but their type and mode


def unchanged(s_st, d_st, clock: int) -> bool:
    return (
        s_st.st_ctime_ns < clock
        and s_st.st_mtime_ns == d_st.st_mtime_ns
        and s_st.st_size == d_st.st_size
    )


def same_content(fd: int, other: str) -> bool:
    with open(other, "rb") as f:
        offset = 0
        while True:
            a, b = os.pread(fd, 1 << 20, offset), f.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True
            offset += len(a)
