"""The plans of `hpcenv setup` and `--undo`: what happens to each redirected directory,
decided by looking at the filesystem and changing nothing (refusals, exit 2, come here:
before anything moves)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import RefusedError, UsageError
from hpcenv.report import human_bytes
from hpcenv.setup.checks import (
    add,
    aside_entries,
    block_size,
    check_home_dir,
    check_home_writable,
    check_redirect,
    check_storage_dir,
    checked_asides,
    classify,
    condarc_warnings,
    dev,
    our_link,
    pending_ops,
    real_dir,
    refuse_problems,
)
from hpcenv.setup.survey import Survey, survey
from hpcenv.storage import (
    Layout,
    check_storage,
)

SPACE_MARGIN = 1024 * 1024  # plus 1% of what moves


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class DirPlan:
    """What will happen to one redirected directory."""

    name: str
    home_path: Path
    storage_path: Path
    before: str  # absent | linked | directory | dangling
    action: str  # none | link | move | restore
    cross_fs: bool = False
    files: int | None = None  # counted when a copy is needed, or for --dry-run
    bytes: int | None = None
    conflicts: tuple[str, ...] = ()  # predicted by the same decisions the run makes
    space: int | None = None  # what the copy takes on the target filesystem
    inodes: int | None = None


@dataclass(frozen=True)
class MigrationPlan:
    op: str  # setup | undo
    layout: Layout
    dirs: tuple[DirPlan, ...]
    warnings: tuple[str, ...] = ()
    resuming: bool = False  # this op's journal is unfinished
    takes_over: bool = False  # the other op's journal is unfinished: this run reverses it
    seen: tuple = ()  # what the plan was made from (`seen`): unchanged, it still holds

    @property
    def changes(self) -> bool:
        return any(d.action != "none" for d in self.dirs)


def plan_setup(layout: Layout, *, allow_home: bool = False, count: bool = False) -> MigrationPlan:
    """Decide, for each redirected directory, what `hpcenv setup` must do. Changes nothing.

    Refuses (exit 2): a redirect that overlaps hpcenv's state, an unusable storage area, a
    symlink that points elsewhere or dangles, a non-directory, a read-only home, entries this
    user cannot move, and a cross-filesystem move that cannot fit (blocks and inodes).
    """
    check_redirect(layout)
    check_storage(layout, allow_home=allow_home)
    pending = pending_ops(layout)
    found = []
    for name in layout.redirect:
        home_path, storage_path = layout.in_home(name), layout.in_storage(name)
        state = classify(home_path, storage_path)
        check_storage_dir(layout, storage_path)
        ours = state == "dangling" and our_link(home_path, storage_path)
        if state == "link-elsewhere":
            raise RefusedError(
                f"{home_path} is a symlink to {os.readlink(home_path)}, not to {storage_path}",
                hint=f"move that data yourself and remove the link (`rm {home_path}`), "
                "then re-run `hpcenv setup`",
            )
        if state == "dangling" and not ours:
            raise RefusedError(
                f"{home_path} is a dangling symlink to {os.readlink(home_path)}",
                hint=f"remove it (`rm {home_path}`) or restore its target, then re-run",
            )
        if state == "other":
            raise RefusedError(
                f"{home_path} exists but is not a directory",
                hint="move it away, then re-run `hpcenv setup`",
            )
        check_home_dir(layout, home_path)
        asides = checked_asides(home_path, storage_path)
        if state == "linked" and not asides:
            action = "none"
        elif state in ("absent", "dangling") and not asides:
            action = "link"
        else:
            action = "move"
        found.append((name, home_path, storage_path, state, action, asides))
    if any(f[4] != "none" for f in found):
        check_home_writable(layout.home)
    block = block_size(layout.root)
    dirs, problems, roots = [], [], []
    for name, home_path, storage_path, state, action, asides in found:
        if action != "move":
            dirs.append(DirPlan(name, home_path, storage_path, state, action))
            continue
        cross = dev(layout.home) != dev(storage_path if real_dir(storage_path) else layout.root)
        dst = storage_path if real_dir(storage_path) else None
        sources = ([home_path] if state == "directory" else []) + asides
        sv = Survey()
        for src in sources:
            add(sv, survey(src, dst, copy=cross, count=count or cross, block=block))
        problems += sv.problems
        roots += sources
        sized = cross or count
        dirs.append(
            DirPlan(
                name,
                home_path,
                storage_path,
                state,
                action,
                cross,
                sv.files if sized else None,
                sv.bytes if sized else None,
                tuple(sorted(sv.conflicts)),
                sv.space if cross else None,
                sv.inodes if cross else None,
            )
        )
    refuse_problems(problems, roots)
    _check_space(layout.root, [d for d in dirs if d.cross_fs])
    warnings = condarc_warnings(layout.home)
    if "undo" in pending:
        warnings.append(
            "an interrupted `hpcenv setup --undo` is reversed: everything moves to storage"
        )
    return MigrationPlan(
        "setup",
        layout,
        tuple(dirs),
        tuple(warnings),
        "setup" in pending,
        "undo" in pending,
        seen(layout),
    )


def plan_undo(layout: Layout, *, count: bool = False) -> MigrationPlan:
    """Decide what `hpcenv setup --undo` must do: move each linked directory back home (and
    what an interrupted setup left aside). Changes nothing; refuses as `plan_setup` does."""
    check_redirect(layout)
    if not layout.root.is_dir():
        raise UsageError(f"storage area {layout.root} does not exist", hint="pass --storage DIR")
    pending = pending_ops(layout)
    found = []
    for name in layout.redirect:
        home_path, storage_path = layout.in_home(name), layout.in_storage(name)
        state = classify(home_path, storage_path)
        ours = state == "dangling" and our_link(home_path, storage_path)
        if state in ("link-elsewhere", "other") or (state == "dangling" and not ours):
            raise RefusedError(
                f"{home_path} was not redirected by hpcenv ({state.replace('-', ' ')})",
                hint="leave it as it is or fix it by hand; nothing was changed",
            )
        check_storage_dir(layout, storage_path)
        check_home_dir(layout, home_path)
        asides = checked_asides(home_path, storage_path)
        in_storage = real_dir(storage_path)
        half_done = bool(pending) and in_storage and state in ("directory", "absent")
        action = "restore" if state in ("linked", "dangling") or asides or half_done else "none"
        found.append((name, home_path, storage_path, state, action, asides))
    restoring = [f for f in found if f[4] == "restore"]
    if restoring:
        check_home_writable(layout.home)
        if not os.access(layout.root, os.W_OK | os.X_OK):
            raise UsageError(
                f"storage area {layout.root} is not writable by you, so its directories "
                "cannot be removed after moving them home",
                hint="ask its owner; nothing was changed",
            )
    block = block_size(layout.home)
    dirs, problems, roots = [], [], []
    for name, home_path, storage_path, state, action, asides in found:
        if action != "restore":
            dirs.append(DirPlan(name, home_path, storage_path, state, action))
            continue
        in_storage = real_dir(storage_path)
        cross = dev(layout.home) != dev(storage_path if in_storage else layout.root)
        dst = home_path if state == "directory" else None
        sv = Survey()
        for aside in asides:  # home to home: renames
            add(sv, survey(aside, dst, copy=False, count=count, block=block))
        moved = Survey()
        if in_storage:
            into = dst or (asides[0] if asides else None)
            moved = survey(storage_path, into, copy=cross, count=count or cross, block=block)
            add(sv, moved)
        problems += sv.problems
        roots += asides + ([storage_path] if in_storage else [])
        sized = cross or count
        dirs.append(
            DirPlan(
                name,
                home_path,
                storage_path,
                state,
                "restore",
                cross,
                sv.files if sized else None,
                sv.bytes if sized else None,
                tuple(sorted(sv.conflicts)),
                moved.space if cross else None,
                moved.inodes if cross else None,
            )
        )
    refuse_problems(problems, roots)
    _check_space(layout.home, [d for d in dirs if d.cross_fs])
    warnings = []
    if "setup" in pending:
        warnings.append("an interrupted `hpcenv setup` is reversed: everything moves back home")
    return MigrationPlan(
        "undo",
        layout,
        tuple(dirs),
        tuple(warnings),
        "undo" in pending,
        "setup" in pending,
        seen(layout),
    )


def seen(layout: Layout) -> tuple:
    """What a plan depends on that another hpcenv run changes: each directory's state, the
    names aside, the unfinished journals. (Counting a tree again is what this saves.)"""
    dirs = []
    for name in layout.redirect:
        home_path, storage_path = layout.in_home(name), layout.in_storage(name)
        link = os.readlink(home_path) if os.path.islink(home_path) else None
        asides = tuple(str(p) for p in aside_entries(home_path))
        dirs.append((classify(home_path, storage_path), link, real_dir(storage_path), asides))
    return tuple(dirs), tuple(sorted(pending_ops(layout)))


def _check_space(target: Path, dirs: list[DirPlan]) -> None:
    """Refuse a copy that cannot fit: blocks (what the files take on disk, not their apparent
    size; sparse files stay sparse) and inodes."""
    need = sum(d.space or 0 for d in dirs)
    inodes = sum(d.inodes or 0 for d in dirs)
    if not need and not inodes:
        return
    st = os.statvfs(target)
    have = st.f_bavail * st.f_frsize
    names = ", ".join(d.name for d in dirs)
    if need + SPACE_MARGIN + need // 100 > have:
        raise RefusedError(
            f"not enough space on {target}: moving {names} needs {human_bytes(need)} of disk "
            f"blocks plus a margin, {human_bytes(have)} is free",
            hint="free space there or choose another --storage; nothing was changed",
        )
    if st.f_files and inodes + inodes // 100 + 64 > st.f_favail:
        raise RefusedError(
            f"not enough inodes on {target}: moving {names} needs {inodes:,} files and "
            f"directories, {st.f_favail:,} more fit there",
            hint="remove files there (or ask for a larger inode quota) or choose another "
            "--storage; nothing was changed",
        )
