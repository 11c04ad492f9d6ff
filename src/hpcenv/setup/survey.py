"""The survey behind a plan: counts, space and inodes a copy takes, the conflicts a merge
will meet, and the entries this user cannot move (refused before anything moves)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.setup.compare import CONFLICT, MERGE, MOVE, decide


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
