"""One directory's steps of a setup or an undo: copy, swap the link in or out, merge the
staging copy, drain the aside directory; each looks at the filesystem to see what is left."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.errors import OperationError
from hpcenv.journal import Journal, tick
from hpcenv.setup.checks import (
    ASIDE_SUFFIXES,
    aside_dirs,
    aside_entries,
    classify,
    our_link,
    real_dir,
)
from hpcenv.setup.copy import copy_tree
from hpcenv.setup.drain import MAX_PASSES, Mover, StillWriting
from hpcenv.setup.plan import DirPlan, MigrationPlan
from hpcenv.setup.renames import exchange, free_name, rename_noreplace
from hpcenv.storage import (
    ensure_private_dir,
)


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


@dataclass
class Run:
    plan: MigrationPlan
    journal: Journal
    conflicts_root: Path
    tmp: dict[int, Path] = field(default_factory=dict)


class CopyFailed(Exception):
    """The copy into staging failed; the partial copy was removed, nothing had moved."""

    def __init__(self, dp: DirPlan, src: Path, exc: OSError) -> None:
        self.dp, self.src, self.exc = dp, src, exc


def _mkdir(path: Path, mode: int) -> None:
    os.mkdir(path, 0o700)
    os.chmod(path, mode)  # exactly, whatever the umask
    tick()


def _mode_of(directory: Path) -> int:
    return stat.S_IMODE(os.lstat(directory).st_mode) if real_dir(directory) else 0o700


def discard(path: Path) -> None:
    """Remove a staging copy or temporary file whose originals are still in their source."""
    if os.path.lexists(path):
        shutil.rmtree(path) if real_dir(path) else os.unlink(path)
        tick()


def _fs_clock(directory: Path) -> int:
    """The time of `directory`'s filesystem now (the ctime of a file just made there)."""
    fd, path = tempfile.mkstemp(prefix="clock-", dir=directory)
    try:
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)
        os.unlink(path)


def remove_our_links(home_path: Path, storage_path: Path) -> None:
    """Symlinks a swap made under an aside name and did not get to exchange or remove."""
    for path in aside_entries(home_path):
        if our_link(path, storage_path):
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
        state = classify(home_path, storage_path)
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
        if not real_dir(home_path):
            raise OperationError(
                f"{home_path} was re-created as {classify(home_path, storage_path)} while "
                "hpcenv moved it back",
                hint="move it away, then re-run `hpcenv setup --undo`",
            ) from None


def _copy_phase(run: Run, dp: DirPlan, src: Path, staging: Path, mover: Mover) -> None:
    try:
        mover.skipped += copy_tree(src, staging)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)  # partial; nothing has moved yet
        raise CopyFailed(dp, src, exc) from exc
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
            discard(staging)
    return run.journal.last(dir=dp.name, phase="merged") is not None


def _start(run: Run, dp: DirPlan, clock_dir: Path, copy_source: bool) -> dict:
    start = run.journal.last(dir=dp.name, phase="start")
    if start is None:
        clock = _fs_clock(clock_dir) if dp.cross_fs and copy_source else None
        run.journal.record(
            dir=dp.name, phase="start", cross_fs=dp.cross_fs, action=dp.action, clock=clock
        )
        start = run.journal.last(dir=dp.name, phase="start")
    return start


def setup_dir(run: Run, dp: DirPlan) -> DirResult:
    layout, journal, name = run.plan.layout, run.journal, dp.name
    home_path, storage_path = dp.home_path, dp.storage_path
    staging = layout.staging_dir / name
    mover = Mover(run.tmp)
    if dp.action == "none":
        if run.plan.takes_over:
            discard(layout.home_staging_dir / name)
        return result(dp, mover)
    start = _start(run, dp, layout.home_state_dir, real_dir(home_path))
    remove_our_links(home_path, storage_path)
    discard(layout.home_staging_dir / name)  # an undo's copy of what is still in storage
    if not real_dir(storage_path):
        _mkdir(storage_path, _mode_of(home_path))
    copied = journal.last(dir=name, phase="copied") is not None
    if dp.cross_fs and real_dir(home_path) and not copied:
        ensure_private_dir(layout.staging_dir)
        _copy_phase(run, dp, home_path, staging, mover)
        copied = True
    if real_dir(home_path):
        aside = _swap_in_link(home_path, storage_path)
        journal.record(dir=name, phase="swapped", aside=aside.name)
    elif not os.path.lexists(home_path):
        _link(home_path, storage_path)
    conflicts = run.conflicts_root / name.lstrip(".")
    merged = _merge_staging(run, dp, staging, storage_path, conflicts, copied, mover)
    swapped = journal.last(dir=name, phase="swapped")
    for aside in aside_dirs(home_path):
        trusted = merged and swapped is not None and swapped.get("aside") == aside.name
        mover.clock = start.get("clock") if trusted else None
        mover.count_duplicates = not trusted
        mover.drain(aside, storage_path, conflicts)
    journal.record(dir=name, phase="linked")
    return result(dp, mover)


def undo_dir(run: Run, dp: DirPlan) -> DirResult:
    layout, journal, name = run.plan.layout, run.journal, dp.name
    home_path, storage_path = dp.home_path, dp.storage_path
    staging = layout.home_staging_dir / name
    mover = Mover(run.tmp)
    if dp.action == "none":
        if run.plan.takes_over:
            discard(layout.staging_dir / name)
        return result(dp, mover)
    linked = our_link(home_path, storage_path)
    start = _start(run, dp, layout.state_dir, linked and real_dir(storage_path))
    remove_our_links(home_path, storage_path)
    discard(layout.staging_dir / name)  # a setup's copy of what is still in home
    copied = journal.last(dir=name, phase="copied") is not None
    if dp.cross_fs and linked and real_dir(storage_path) and not copied:
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
    for aside in aside_dirs(home_path):  # what an interrupted setup had put aside: home to home
        mover.drain(aside, home_path, conflicts)
    if real_dir(storage_path):
        mover.clock = start.get("clock") if merged else None
        mover.count_duplicates = not merged
        mover.drain(storage_path, home_path, conflicts)
    journal.record(dir=name, phase="restored")
    return result(dp, mover)


def rmdir_if_empty(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def result(dp: DirPlan, mover: Mover | None = None, after: str | None = None) -> DirResult:
    return DirResult(
        dp.name,
        str(dp.home_path),
        str(dp.storage_path),
        dp.before,
        after or classify(dp.home_path, dp.storage_path),
        dp.action,
        dp.files,
        dp.bytes,
        tuple(sorted(mover.conflicts)) if mover else dp.conflicts,
        mover.duplicates if mover else 0,
        tuple(dict.fromkeys(mover.skipped)) if mover else (),  # copy and drain both see one
    )
