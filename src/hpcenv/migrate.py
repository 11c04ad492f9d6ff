"""Moving the redirected directories (`~/.cache`, `~/.conda`, ...) to storage and back.

The promise: a file that is in the source directory at any moment before the link is in place
ends up in the destination or under `STORAGE/.hpcenv/conflicts/<time>/`, never deleted,
whatever runs beside hpcenv, whenever it is killed and however often it is re-run.

`plan_setup` / `plan_undo` look at the filesystem and return a plan (pure: no changes; they
refuse, exit 2, what cannot work before anything moves); `execute` carries it out under two
locks (this home, this storage root), journaling each phase. Setup of one directory:

1. Across filesystems, copy `~/.cache` into `STORAGE/.hpcenv/staging/.cache` while it stays in
   use (journal: `copied`). Running out of space here changes nothing.
2. Swap: `~/.cache.hpcenv-moving` is made a symlink to `STORAGE/.cache` and exchanged with
   `~/.cache` in one atomic rename (two renames where the filesystem lacks RENAME_EXCHANGE).
   From then on new files land in storage; the old directory is aside (journal: `swapped`).
3. Merge the staging copy into `STORAGE/.cache` by renames (`trees.Mover.drain`; `merged`).
4. Drain the aside directory into `STORAGE/.cache`: by renames on one filesystem; across two,
   each entry is removed only once checked identical to its copy at that moment, and what is
   new or changed (written through open descriptors or working directories) is copied or kept
   in conflicts. Then the journal says `linked`.

`--undo` is the mirror image (`copied`, `unlinked`, `merged`, `restored`): `~/.cache` becomes
a real directory at once and `STORAGE/.cache` is drained into it. Each step looks at the
filesystem to see what is left to do, so a re-run finishes an interrupted run and either
direction takes over from the other (`--undo` after a killed setup moves back what had moved).
The journal keeps only what the filesystem cannot show: that the staging copy is complete
(`copied`) and merged (`merged`), the aside it was copied from (`swapped`), and the source
filesystem's time before the copy (`clock`, which lets the drain skip re-reading files not
changed since: see `trees.identical`).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.errors import HpcenvError, LockedError, OperationError, RefusedError, UsageError
from hpcenv.journal import Journal, StorageLock, tick
from hpcenv.report import human_bytes
from hpcenv.storage import (
    STATE_DIR_NAME,
    Layout,
    check_storage,
    ensure_private_dir,
    ensure_state_dir,
    is_within,
)
from hpcenv.trees import (
    MAX_PASSES,
    Mover,
    StillOpen,
    StillWriting,
    Survey,
    copy_tree,
    exchange,
    free_name,
    rename_noreplace,
    survey,
)

SPACE_MARGIN = 1024 * 1024  # plus 1% of what moves
ASIDE_SUFFIXES = (".hpcenv-moving", ".hpcenv-restoring")  # ~/.cache.hpcenv-moving[.N]
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


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
    seen: tuple = ()  # what the plan was made from (`_seen`): unchanged, it still holds

    @property
    def changes(self) -> bool:
        return any(d.action != "none" for d in self.dirs)


@dataclass(frozen=True)
class DirResult:
    name: str
    home_path: str
    storage_path: str
    before: str
    after: str
    action: str
    files: int | None
    bytes: int | None
    conflicts: tuple[str, ...] = ()
    duplicates: int = 0
    skipped: tuple[str, ...] = ()  # device files not recreated (only root may)


@dataclass(frozen=True)
class SetupReport:
    op: str
    storage: str
    dirs: tuple[DirResult, ...]
    dry_run: bool
    resumed: bool
    waited_for_lock: bool
    conflicts_dir: str | None
    warnings: tuple[str, ...]
    next_command: str


# --------------------------------------------------------------------------- inspection


def _classify(home_path: Path, storage_path: Path) -> str:
    """absent | linked | link-elsewhere | dangling | directory | other"""
    try:
        st = os.lstat(home_path)
    except FileNotFoundError:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        if not os.path.exists(home_path):
            return "dangling"
        if os.path.realpath(home_path) == os.path.realpath(storage_path):
            return "linked"
        return "link-elsewhere"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    return "other"


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _our_link(home_path: Path, storage_path: Path) -> bool:
    """A symlink to the storage directory, even while that does not exist."""
    return os.path.islink(home_path) and os.readlink(home_path) == str(storage_path)


def _aside_entries(home_path: Path) -> list[Path]:
    """`~/.cache.hpcenv-moving`, `~/.cache.hpcenv-moving.1`, `~/.cache.hpcenv-restoring`..."""
    found = []
    with os.scandir(home_path.parent) as it:
        for entry in it:
            for suffix in ASIDE_SUFFIXES:
                base = home_path.name + suffix
                rest = entry.name[len(base) :]
                if entry.name.startswith(base) and (
                    not rest or rest[1:].isdigit() and rest[0] == "."
                ):
                    found.append(Path(entry.path))
    return sorted(found)


def _asides(home_path: Path) -> list[Path]:
    """The aside directories (a swap put the old directory there)."""
    return [p for p in _aside_entries(home_path) if _real_dir(p)]


def _checked_asides(home_path: Path, storage_path: Path) -> list[Path]:
    for path in _aside_entries(home_path):
        if not _real_dir(path) and not _our_link(path, storage_path):
            raise RefusedError(
                f"{path} is in the way: hpcenv uses that name while moving {home_path}",
                hint=f"move it away (`mv {shlex.quote(str(path))} ...`), then re-run",
            )
    return _asides(home_path)


def _condarc_warnings(home: Path) -> list[str]:
    from hpcenv.condarc import entries_in_home

    found = entries_in_home(home)
    warnings = [f"{why}; check it by hand" for why in found.unreadable]
    for e in found.entries:
        warnings.append(
            f"{e.condarc}: {e.key} entry {e.entry!r} points into home; remove it so conda "
            "uses the redirected ~/.conda (hpcenv did not change it)"
        )
    return warnings


def _pending(layout: Layout) -> set[str]:
    return set(Journal.pending(layout.journal_dir)) & {"setup", "undo"}


def _check_redirect(layout: Layout) -> None:
    """Refuse a redirected directory that is, holds or overlaps hpcenv's own state."""
    for name in layout.redirect:
        if name.startswith(STATE_DIR_NAME) or ".hpcenv-" in name:
            raise UsageError(
                f"the redirected directory {name!r} would overlap hpcenv's own state "
                f"({layout.state_dir}, {layout.home_state_dir})",
                hint="remove it from the `redirect` setting",
            )
        home_path = layout.in_home(name)
        if os.path.lexists(home_path) and not os.path.islink(home_path):
            if is_within(layout.root, home_path):
                raise UsageError(
                    f"the storage area {layout.root} is inside {home_path}, which would move",
                    hint="pass --storage DIR outside it, or remove it from `redirect`",
                )


def _check_home_writable(home: Path) -> None:
    if not os.access(home, os.W_OK | os.X_OK):
        raise RefusedError(
            f"your home directory {home} is not writable (read-only filesystem or "
            "permissions), so its directories cannot become links",
            hint="run it where home is writable (a login node); nothing was changed",
        )


def _check_storage_dir(layout: Layout, storage_path: Path) -> None:
    if os.path.lexists(storage_path) and not _real_dir(storage_path):
        raise RefusedError(
            f"{storage_path} exists but is not a directory",
            hint="move it away, then re-run `hpcenv setup`",
        )
    if _real_dir(storage_path) and _dev(storage_path) != _dev(layout.root):
        raise RefusedError(
            f"{storage_path} is a mount point; hpcenv cannot move it",
            hint="remove it from the `redirect` setting",
        )


def _check_home_dir(layout: Layout, home_path: Path) -> None:
    if _real_dir(home_path) and _dev(home_path) != _dev(layout.home):
        raise RefusedError(
            f"{home_path} is a mount point; hpcenv cannot move it",
            hint="remove it from the `redirect` setting",
        )


def _dev(path: Path) -> int:
    return os.lstat(path).st_dev


def _refuse_problems(problems: list[str], roots: list[Path]) -> None:
    if not problems:
        return
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    shown = "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    n = len(problems)
    roots = [
        r for r in roots if any(p.startswith(f"{r}/") or p.startswith(f"{r} ") for p in problems)
    ]
    fixes = " and ".join(f"`chmod -R u+rwX {shlex.quote(str(r))}`" for r in roots)
    raise RefusedError(
        f"{n} entr{'y' if n == 1 else 'ies'} cannot be moved by {user}: {shown}",
        hint=f"run {fixes} (entries of another user need that user or root), then re-run; "
        "nothing was changed",
    )


def _add(total: Survey, part: Survey) -> Survey:
    for name in ("files", "bytes", "space", "inodes"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.conflicts += part.conflicts
    total.problems += part.problems
    return total


def _block(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_frsize or st.f_bsize or 4096


def plan_setup(layout: Layout, *, allow_home: bool = False, count: bool = False) -> MigrationPlan:
    """Decide, for each redirected directory, what `hpcenv setup` must do. Changes nothing.

    Refuses (exit 2): a redirect that overlaps hpcenv's state, an unusable storage area, a
    symlink that points elsewhere or dangles, a non-directory, a read-only home, entries this
    user cannot move, and a cross-filesystem move that cannot fit (blocks and inodes).
    """
    _check_redirect(layout)
    check_storage(layout, allow_home=allow_home)
    pending = _pending(layout)
    found = []
    for name in layout.redirect:
        home_path, storage_path = layout.in_home(name), layout.in_storage(name)
        state = _classify(home_path, storage_path)
        _check_storage_dir(layout, storage_path)
        ours = state == "dangling" and _our_link(home_path, storage_path)
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
        _check_home_dir(layout, home_path)
        asides = _checked_asides(home_path, storage_path)
        if state == "linked" and not asides:
            action = "none"
        elif state in ("absent", "dangling") and not asides:
            action = "link"
        else:
            action = "move"
        found.append((name, home_path, storage_path, state, action, asides))
    if any(f[4] != "none" for f in found):
        _check_home_writable(layout.home)
    block = _block(layout.root)
    dirs, problems, roots = [], [], []
    for name, home_path, storage_path, state, action, asides in found:
        if action != "move":
            dirs.append(DirPlan(name, home_path, storage_path, state, action))
            continue
        cross = _dev(layout.home) != _dev(storage_path if _real_dir(storage_path) else layout.root)
        dst = storage_path if _real_dir(storage_path) else None
        sources = ([home_path] if state == "directory" else []) + asides
        sv = Survey()
        for src in sources:
            _add(sv, survey(src, dst, copy=cross, count=count or cross, block=block))
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
    _refuse_problems(problems, roots)
    _check_space(layout.root, [d for d in dirs if d.cross_fs])
    warnings = _condarc_warnings(layout.home)
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
        _seen(layout),
    )


def plan_undo(layout: Layout, *, count: bool = False) -> MigrationPlan:
    """Decide what `hpcenv setup --undo` must do: move each linked directory back home (and
    what an interrupted setup left aside). Changes nothing; refuses as `plan_setup` does."""
    _check_redirect(layout)
    if not layout.root.is_dir():
        raise UsageError(f"storage area {layout.root} does not exist", hint="pass --storage DIR")
    pending = _pending(layout)
    found = []
    for name in layout.redirect:
        home_path, storage_path = layout.in_home(name), layout.in_storage(name)
        state = _classify(home_path, storage_path)
        ours = state == "dangling" and _our_link(home_path, storage_path)
        if state in ("link-elsewhere", "other") or (state == "dangling" and not ours):
            raise RefusedError(
                f"{home_path} was not redirected by hpcenv ({state.replace('-', ' ')})",
                hint="leave it as it is or fix it by hand; nothing was changed",
            )
        _check_storage_dir(layout, storage_path)
        _check_home_dir(layout, home_path)
        asides = _checked_asides(home_path, storage_path)
        in_storage = _real_dir(storage_path)
        half_done = bool(pending) and in_storage and state in ("directory", "absent")
        action = "restore" if state in ("linked", "dangling") or asides or half_done else "none"
        found.append((name, home_path, storage_path, state, action, asides))
    restoring = [f for f in found if f[4] == "restore"]
    if restoring:
        _check_home_writable(layout.home)
        if not os.access(layout.root, os.W_OK | os.X_OK):
            raise UsageError(
                f"storage area {layout.root} is not writable by you, so its directories "
                "cannot be removed after moving them home",
                hint="ask its owner; nothing was changed",
            )
    block = _block(layout.home)
    dirs, problems, roots = [], [], []
    for name, home_path, storage_path, state, action, asides in found:
        if action != "restore":
            dirs.append(DirPlan(name, home_path, storage_path, state, action))
            continue
        in_storage = _real_dir(storage_path)
        cross = _dev(layout.home) != _dev(storage_path if in_storage else layout.root)
        dst = home_path if state == "directory" else None
        sv = Survey()
        for aside in asides:  # home to home: renames
            _add(sv, survey(aside, dst, copy=False, count=count, block=block))
        moved = Survey()
        if in_storage:
            into = dst or (asides[0] if asides else None)
            moved = survey(storage_path, into, copy=cross, count=count or cross, block=block)
            _add(sv, moved)
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
    _refuse_problems(problems, roots)
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
        _seen(layout),
    )


def _seen(layout: Layout) -> tuple:
    """What a plan depends on that another hpcenv run changes: each directory's state, the
    names aside, the unfinished journals. (Counting a tree again is what this saves.)"""
    dirs = []
    for name in layout.redirect:
        home_path, storage_path = layout.in_home(name), layout.in_storage(name)
        link = os.readlink(home_path) if os.path.islink(home_path) else None
        asides = tuple(str(p) for p in _aside_entries(home_path))
        dirs.append((_classify(home_path, storage_path), link, _real_dir(storage_path), asides))
    return tuple(dirs), tuple(sorted(_pending(layout)))


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


# --------------------------------------------------------------------------- execution


@dataclass
class _Run:
    plan: MigrationPlan
    journal: Journal
    conflicts_root: Path
    tmp: dict[int, Path] = field(default_factory=dict)


class _CopyFailed(Exception):
    """The copy into staging failed; the partial copy was removed, nothing had moved."""

    def __init__(self, dp: DirPlan, src: Path, exc: OSError) -> None:
        self.dp, self.src, self.exc = dp, src, exc


def _mkdir(path: Path, mode: int) -> None:
    os.mkdir(path, 0o700)
    os.chmod(path, mode)  # exactly, whatever the umask
    tick()


def _mode_of(directory: Path) -> int:
    return stat.S_IMODE(os.lstat(directory).st_mode) if _real_dir(directory) else 0o700


def _discard(path: Path) -> None:
    """Remove a staging copy or temporary file whose originals are still in their source."""
    if os.path.lexists(path):
        shutil.rmtree(path) if _real_dir(path) else os.unlink(path)
        tick()


def _fs_clock(directory: Path) -> int:
    """The time of `directory`'s filesystem now (the ctime of a file just made there)."""
    fd, path = tempfile.mkstemp(prefix="clock-", dir=directory)
    try:
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)
        os.unlink(path)


def _remove_our_links(home_path: Path, storage_path: Path) -> None:
    """Symlinks a swap made under an aside name and did not get to exchange or remove."""
    for path in _aside_entries(home_path):
        if _our_link(path, storage_path):
            os.unlink(path)
            tick()


def _link(home_path: Path, storage_path: Path) -> None:
    """Make `home_path` the link; a directory re-created there meanwhile is put aside too."""
    for _ in range(MAX_PASSES):
        try:
            os.symlink(str(storage_path), home_path)
            tick()
            return
        except FileExistsError:
            pass
        state = _classify(home_path, storage_path)
        if state == "linked":
            return
        if state != "directory":
            raise OperationError(
                f"{home_path} was re-created as {state} while hpcenv replaced it with a link",
                hint="move it away, then re-run `hpcenv setup`",
            )
        aside = free_name(home_path.parent, home_path.name + ASIDE_SUFFIXES[0])
        try:
            rename_noreplace(home_path, aside)
            tick()
        except (FileExistsError, FileNotFoundError):
            continue
    raise StillWriting(str(home_path))


def _swap_in_link(home_path: Path, storage_path: Path) -> Path:
    """Replace the directory `home_path` by the link at once; return where the directory went."""
    aside = Path(free_name(home_path.parent, home_path.name + ASIDE_SUFFIXES[0]))
    os.symlink(str(storage_path), aside)
    tick()
    if exchange(aside, home_path):
        tick()
        return aside
    os.unlink(aside)  # no RENAME_EXCHANGE here: two renames, and `_link` handles the gap
    rename_noreplace(home_path, aside)
    tick()
    _link(home_path, storage_path)
    return aside


def _swap_out_link(home_path: Path, storage_path: Path) -> None:
    """Replace the link `home_path` by an empty directory at once."""
    mode = _mode_of(storage_path)
    fresh = Path(free_name(home_path.parent, home_path.name + ASIDE_SUFFIXES[1]))
    _mkdir(fresh, mode)
    if exchange(fresh, home_path):
        tick()
        os.unlink(fresh)  # the link, now under the other name
        tick()
        return
    os.rmdir(fresh)
    os.unlink(home_path)
    tick()
    try:
        _mkdir(home_path, mode)
    except FileExistsError:
        if not _real_dir(home_path):
            raise OperationError(
                f"{home_path} was re-created as {_classify(home_path, storage_path)} while "
                "hpcenv moved it back",
                hint="move it away, then re-run `hpcenv setup --undo`",
            ) from None


def _copy_phase(run: _Run, dp: DirPlan, src: Path, staging: Path, mover: Mover) -> None:
    try:
        mover.skipped += copy_tree(src, staging)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)  # partial; nothing has moved yet
        raise _CopyFailed(dp, src, exc) from exc
    run.journal.record(dir=dp.name, phase="copied")


def _merge_staging(run, dp, staging: Path, dst: Path, conflicts: Path, copied: bool, mover) -> bool:
    """Merge a complete staging copy into `dst` (renames); drop a partial one (its originals
    are all still in the source). True once the journal says the copy is merged: only then
    may the drain of the source trust its clock."""
    if os.path.lexists(staging):
        if copied:
            mover.drain(staging, dst, conflicts)
            run.journal.record(dir=dp.name, phase="merged")
        else:
            _discard(staging)
    return run.journal.last(dir=dp.name, phase="merged") is not None


def _start(run: _Run, dp: DirPlan, clock_dir: Path, copy_source: bool) -> dict:
    start = run.journal.last(dir=dp.name, phase="start")
    if start is None:
        clock = _fs_clock(clock_dir) if dp.cross_fs and copy_source else None
        run.journal.record(
            dir=dp.name, phase="start", cross_fs=dp.cross_fs, action=dp.action, clock=clock
        )
        start = run.journal.last(dir=dp.name, phase="start")
    return start


def _setup_dir(run: _Run, dp: DirPlan) -> DirResult:
    layout, journal, name = run.plan.layout, run.journal, dp.name
    home_path, storage_path = dp.home_path, dp.storage_path
    staging = layout.staging_dir / name
    mover = Mover(run.tmp)
    if dp.action == "none":
        if run.plan.takes_over:
            _discard(layout.home_staging_dir / name)
        return _result(dp, mover)
    start = _start(run, dp, layout.home_state_dir, _real_dir(home_path))
    _remove_our_links(home_path, storage_path)
    _discard(layout.home_staging_dir / name)  # an undo's copy of what is still in storage
    if not _real_dir(storage_path):
        _mkdir(storage_path, _mode_of(home_path))
    copied = journal.last(dir=name, phase="copied") is not None
    if dp.cross_fs and _real_dir(home_path) and not copied:
        ensure_private_dir(layout.staging_dir)
        _copy_phase(run, dp, home_path, staging, mover)
        copied = True
    if _real_dir(home_path):
        aside = _swap_in_link(home_path, storage_path)
        journal.record(dir=name, phase="swapped", aside=aside.name)
    elif not os.path.lexists(home_path):
        _link(home_path, storage_path)
    conflicts = run.conflicts_root / name.lstrip(".")
    merged = _merge_staging(run, dp, staging, storage_path, conflicts, copied, mover)
    swapped = journal.last(dir=name, phase="swapped")
    for aside in _asides(home_path):
        trusted = merged and swapped is not None and swapped.get("aside") == aside.name
        mover.clock = start.get("clock") if trusted else None
        mover.count_duplicates = not trusted
        mover.drain(aside, storage_path, conflicts)
    journal.record(dir=name, phase="linked")
    return _result(dp, mover)


def _undo_dir(run: _Run, dp: DirPlan) -> DirResult:
    layout, journal, name = run.plan.layout, run.journal, dp.name
    home_path, storage_path = dp.home_path, dp.storage_path
    staging = layout.home_staging_dir / name
    mover = Mover(run.tmp)
    if dp.action == "none":
        if run.plan.takes_over:
            _discard(layout.staging_dir / name)
        return _result(dp, mover)
    linked = _our_link(home_path, storage_path)
    start = _start(run, dp, layout.state_dir, linked and _real_dir(storage_path))
    _remove_our_links(home_path, storage_path)
    _discard(layout.staging_dir / name)  # a setup's copy of what is still in home
    copied = journal.last(dir=name, phase="copied") is not None
    if dp.cross_fs and linked and _real_dir(storage_path) and not copied:
        ensure_private_dir(layout.home_staging_dir)
        _copy_phase(run, dp, storage_path, staging, mover)
        copied = True
    if linked:
        _swap_out_link(home_path, storage_path)
        journal.record(dir=name, phase="unlinked")
    elif not os.path.lexists(home_path):
        _mkdir(home_path, _mode_of(storage_path))
    conflicts = run.conflicts_root / name.lstrip(".")
    merged = _merge_staging(run, dp, staging, home_path, conflicts, copied, mover)
    for aside in _asides(home_path):  # what an interrupted setup had put aside: home to home
        mover.drain(aside, home_path, conflicts)
    if _real_dir(storage_path):
        mover.clock = start.get("clock") if merged else None
        mover.count_duplicates = not merged
        mover.drain(storage_path, home_path, conflicts)
    journal.record(dir=name, phase="restored")
    return _result(dp, mover)


def _rmdir_if_empty(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _result(dp: DirPlan, mover: Mover | None = None, after: str | None = None) -> DirResult:
    return DirResult(
        dp.name,
        str(dp.home_path),
        str(dp.storage_path),
        dp.before,
        after or _classify(dp.home_path, dp.storage_path),
        dp.action,
        dp.files,
        dp.bytes,
        tuple(sorted(mover.conflicts)) if mover else dp.conflicts,
        mover.duplicates if mover else 0,
        tuple(dict.fromkeys(mover.skipped)) if mover else (),  # copy and drain both see one
    )


def dry_run_report(plan: MigrationPlan) -> SetupReport:
    dirs = tuple(_result(d, after=d.before) for d in plan.dirs)
    return SetupReport(
        plan.op,
        str(plan.layout.root),
        dirs,
        True,
        plan.resuming,
        False,
        None,
        plan.warnings,
        _next_command(plan.op, dry_run=True),
    )


def _next_command(op: str, dry_run: bool = False) -> str:
    if dry_run:
        return "hpcenv setup --undo" if op == "undo" else "hpcenv setup"
    if op == "undo":
        return "hpcenv setup  (to redirect the caches again)"
    return 'hpcenv create NAME python  (then: eval "$(hpcenv activate NAME)")'


@contextmanager
def _locks(layout: Layout, timeout: float, on_wait) -> Iterator[bool]:
    """This home's lock (two storage roots must not race for one ~/.cache), then the storage
    root's; yields whether we waited for either."""
    home_lock = StorageLock(layout.home_lock_path, timeout=timeout, on_wait=on_wait)
    try:
        home_lock.__enter__()
    except LockedError:
        holder = layout.home_lock_path.read_text(errors="replace").strip() or "?"
        raise LockedError(
            f"another hpcenv (pid {holder}) is moving the directories of {layout.home} and "
            f"did not finish within {timeout:.0f} s",
            hint="wait for it to finish, then re-run",
        ) from None
    try:
        with StorageLock(layout.lock_path, timeout=timeout, on_wait=on_wait) as storage_lock:
            yield home_lock.waited or storage_lock.waited
    finally:
        home_lock.__exit__(None, None, None)


def settled_plan(
    layout: Layout,
    make_plan: Callable[[], MigrationPlan],
    *,
    lock_timeout: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
) -> MigrationPlan:
    """`make_plan()`, but when it refuses while another hpcenv is moving this home's
    directories (it may have seen that run half way), wait for that run and plan again."""
    try:
        return make_plan()
    except RefusedError:
        if not layout.home_lock_path.exists():
            raise
        try:
            with StorageLock(layout.home_lock_path, timeout=0):
                raise  # nobody else is at work: the refusal stands
        except LockedError:
            pass
    with StorageLock(layout.home_lock_path, timeout=lock_timeout, on_wait=on_wait):
        pass
    return make_plan()


def _supersede(layout: Layout, op: str) -> None:
    other = "undo" if op == "setup" else "setup"
    if (layout.journal_dir / f"{other}.jsonl").exists():
        Journal.open(layout.journal_dir, other, {}).finish(f"reversed by {op}")


def execute(
    plan: MigrationPlan,
    *,
    lock_timeout: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
    replan: Callable[[], MigrationPlan] | None = None,
) -> SetupReport:
    """Carry out a plan under this home's and the storage root's locks, journaled. `replan`
    recomputes the plan once the locks are held if another run changed what it was made
    from."""
    layout = plan.layout
    if not (plan.changes or plan.resuming or plan.takes_over):
        return _report(plan, [_result(d) for d in plan.dirs], None, False, False)
    ensure_private_dir(layout.home_state_dir)
    ensure_state_dir(layout)
    with _locks(layout, lock_timeout, on_wait) as waited:
        if replan is not None and _seen(layout) != plan.seen:
            plan = replan()  # another run changed things since the plan was made
        if not (plan.changes or plan.resuming or plan.takes_over):
            return _report(plan, [_result(d) for d in plan.dirs], None, False, waited)
        _supersede(layout, plan.op)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        journal = Journal.open(layout.journal_dir, plan.op, {"conflicts_stamp": stamp})
        conflicts_root = layout.conflicts_dir / journal.header.get("conflicts_stamp", stamp)
        run = _Run(plan, journal, conflicts_root)
        step = _setup_dir if plan.op == "setup" else _undo_dir
        results = []
        try:
            for parent in (layout.home_state_dir, layout.state_dir):
                run.tmp[_dev(parent)] = parent / "tmp"
                _discard(parent / "tmp")  # copies in progress when a run died
            for dp in plan.dirs:
                results.append(step(run, dp))
            journal.finish()
        except (OSError, StillWriting, StillOpen, _CopyFailed) as exc:
            raise _stopped(run, exc) from None
        for directory in (*run.tmp.values(), layout.home_staging_dir):
            _rmdir_if_empty(directory)
        any_conflicts = any(r.conflicts for r in results)
        return _report(
            plan, results, conflicts_root if any_conflicts else None, journal.resumed, waited
        )


def _describe(op: str, dp: DirPlan) -> tuple[str, bool]:
    """Where one directory stands now, in words, and whether it is half moved."""
    state = _classify(dp.home_path, dp.storage_path)
    asides = [str(p) for p in _asides(dp.home_path)]
    if op == "setup":
        if state == "linked" and not asides:
            return f"{dp.home_path} was moved", False
        if state == "directory" and not asides:
            return f"{dp.home_path} was not moved", False
        return f"{dp.home_path} is half moved (the rest waits in {', '.join(asides)})", True
    if state == "directory" and not asides and not _real_dir(dp.storage_path):
        return f"{dp.home_path} was moved back", False
    if state == "linked" and not asides:
        return f"{dp.home_path} was not moved back", False
    rest = ", ".join(asides + [str(dp.storage_path)] * _real_dir(dp.storage_path))
    return f"{dp.home_path} is half moved back (the rest waits in {rest})", True


def _stopped(run: _Run, exc: BaseException) -> HpcenvError:
    """The error for a run that stopped, saying exactly what moved and what did not. The
    journal stays unfinished while a directory is half moved (a re-run finishes it)."""
    plan = run.plan
    cmd = "hpcenv setup" if plan.op == "setup" else "hpcenv setup --undo"
    back = "hpcenv setup --undo" if plan.op == "setup" else "hpcenv setup"
    states = [_describe(plan.op, d) for d in plan.dirs if d.action != "none"]
    where = "; ".join(s for s, _ in states)
    half = any(h for _, h in states)
    target = plan.layout.root if plan.op == "setup" else plan.layout.home
    if isinstance(exc, _CopyFailed) and exc.exc.errno in _NO_SPACE:
        what = (
            f"ran out of {_space_kind(exc.exc, target)} while copying {exc.src} "
            f"({human_bytes(exc.dp.space)} needed); the partial copy was removed"
        )
    elif isinstance(exc, _CopyFailed):
        what = (
            f"stopped while copying {exc.src}: {exc.exc.strerror}: {exc.exc.filename}; "
            "the partial copy was removed"
        )
    elif isinstance(exc, StillWriting):
        what = f"{exc.path} kept receiving new files while hpcenv emptied it"
    elif isinstance(exc, StillOpen):
        shown = ", ".join(exc.paths[:3]) + (" ..." if len(exc.paths) > 3 else "")
        what = f"found {len(exc.paths)} file(s) still open in other programs ({shown})"
        what += "; they were kept (close them: `lsof FILE` names the program)"
    elif isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        what = f"ran out of {_space_kind(exc, target)} while moving files"
    else:
        what = f"stopped: {exc.strerror or exc}: {exc.filename}"
    if half:
        hint = f"fix that, then re-run `{cmd}` to finish, or run `{back}` to go back"
    else:
        _tidy(run)
        if run.journal.path.exists():
            run.journal.finish(f"stopped: {what}")
        hint = f"fix that, then re-run `{cmd}`"
    return OperationError(f"{plan.op} {what}: {where}", hint=hint)


def _tidy(run: _Run) -> None:
    """After a stop that left no directory half moved: remove what only that run needed (its
    links under aside names, staging copies of sources that are all still in place)."""
    layout = run.plan.layout
    try:
        for dp in run.plan.dirs:
            _remove_our_links(dp.home_path, dp.storage_path)
            _discard(layout.staging_dir / dp.name)
            _discard(layout.home_staging_dir / dp.name)
        _rmdir_if_empty(layout.home_staging_dir)
    except OSError:
        pass  # best effort: a re-run tidies up as well


def _space_kind(exc: OSError, target: Path) -> str:
    """'space on X' or 'inodes on X', X the filesystem that is full."""
    where = str(exc.filename or target)
    try:
        st = os.statvfs(os.path.dirname(where) if exc.filename else where)
        if st.f_files and st.f_favail == 0:
            return f"inodes on the filesystem of {where}"
    except OSError:
        pass
    return f"space on the filesystem of {where}"


def _report(plan, results, conflicts_root, resumed, waited) -> SetupReport:
    return SetupReport(
        plan.op,
        str(plan.layout.root),
        tuple(results),
        False,
        resumed,
        waited,
        str(conflicts_root) if conflicts_root else None,
        plan.warnings,
        _next_command(plan.op),
    )
