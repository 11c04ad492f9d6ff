"""A fast disk-usage walker: `os.scandir`, parallel over subtrees, hardlinks counted once.

Symlinks are never followed (a link into someone else's space is not walked). For each tree:

    apparent_bytes  st_size of every file and symlink, each inode once
    unique_bytes    bytes of inodes all of whose links are inside this tree (what deleting
                    the tree would free)
    disk_bytes      st_blocks * 512, each inode once
    files           non-directory entries; inodes: distinct inodes; dirs: directories
    last_used       the newest mtime seen (atime is unreliable under relatime/noatime)

`scan_many` walks several trees in one pass so a file hardlinked between a package cache and
two envs is "shared", not counted as unique to any of them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TreeUsage:
    path: str
    apparent_bytes: int = 0
    unique_bytes: int = 0
    disk_bytes: int = 0
    files: int = 0
    dirs: int = 0
    inodes: int = 0
    last_used: float | None = None
    errors: int = 0
    exists: bool = True


# per inode: (size, blocks, nlink, links seen per tree index)
_Inode = tuple[int, int, int]


def _walk(top: str) -> tuple[dict[tuple[int, int], list], int, int, int, float]:
    """Walk one subtree: inode table {(dev, ino): [size, blocks, nlink, count]}, files, dirs,
    errors, newest mtime."""
    table: dict[tuple[int, int], list] = {}
    files = dirs = errors = 0
    newest = 0.0
    stack = [top]
    while stack:
        path = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            errors += 1
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    errors += 1
                    continue
                if stat.S_ISDIR(st.st_mode):
                    dirs += 1
                    stack.append(entry.path)
                    continue
                files += 1
                if st.st_mtime > newest:
                    newest = st.st_mtime
                key = (st.st_dev, st.st_ino)
                rec = table.get(key)
                if rec is None:
                    table[key] = [st.st_size, st.st_blocks, st.st_nlink, 1]
                else:
                    rec[3] += 1
    return table, files, dirs, errors, newest


def _split(root: str) -> tuple[list[str], int, int, int, float, dict]:
    """The top level of a tree: its subdirectories to walk in parallel, plus its own files."""
    table: dict[tuple[int, int], list] = {}
    subdirs: list[str] = []
    files = errors = 0
    newest = 0.0
    with os.scandir(root) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                errors += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.path)
                continue
            files += 1
            newest = max(newest, st.st_mtime)
            key = (st.st_dev, st.st_ino)
            rec = table.get(key)
            if rec is None:
                table[key] = [st.st_size, st.st_blocks, st.st_nlink, 1]
            else:
                rec[3] += 1
    return subdirs, files, len(subdirs), errors, newest, table


def _merge(into: dict, table: dict) -> None:
    for key, rec in table.items():
        have = into.get(key)
        if have is None:
            into[key] = rec
        else:
            have[3] += rec[3]


def _scan_tree(path: Path, pool: ThreadPoolExecutor) -> tuple[dict, int, int, int, float]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {}, 0, 0, 0, 0.0
    if not stat.S_ISDIR(st.st_mode):
        return (
            {(st.st_dev, st.st_ino): [st.st_size, st.st_blocks, st.st_nlink, 1]},
            1,
            0,
            0,
            st.st_mtime,
        )
    subdirs, files, dirs, errors, newest, table = _split(str(path))
    for sub_table, f, d, e, n in pool.map(_walk, subdirs):
        _merge(table, sub_table)
        files, dirs, errors, newest = files + f, dirs + d, errors + e, max(newest, n)
    return table, files, dirs, errors, newest


def _pool(threads: int | None) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads or min(8, (os.cpu_count() or 2) * 2))


def scan(path: Path, *, threads: int | None = None) -> TreeUsage:
    """Usage of one tree."""
    return scan_many([path], threads=threads)[Path(path)]


def scan_many(paths: Sequence[Path], *, threads: int | None = None) -> dict[Path, TreeUsage]:
    """Usage of several trees in one pass; an inode linked from two trees is unique to none."""
    tables = []
    with _pool(threads) as pool:
        for path in paths:
            tables.append(_scan_tree(Path(path), pool))
    owners: dict[tuple[int, int], int] = {}
    seen_links: dict[tuple[int, int], int] = {}
    for table, *_ in tables:
        for key, rec in table.items():
            owners[key] = owners.get(key, 0) + 1
            seen_links[key] = seen_links.get(key, 0) + rec[3]
    out: dict[Path, TreeUsage] = {}
    for path, (table, files, dirs, errors, newest) in zip(paths, tables, strict=True):
        apparent = disk = unique = 0
        for key, (size, blocks, nlink, _count) in table.items():
            apparent += size
            disk += blocks * 512
            if owners[key] == 1 and seen_links[key] >= nlink:
                unique += size
        out[Path(path)] = TreeUsage(
            path=str(path),
            apparent_bytes=apparent,
            unique_bytes=unique,
            disk_bytes=disk,
            files=files,
            dirs=dirs,
            inodes=len(table),
            last_used=newest or None,
            errors=errors,
            exists=os.path.lexists(path),
        )
    return out
