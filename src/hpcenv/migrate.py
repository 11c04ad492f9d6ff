"""Moving the redirected directories (`~/.cache`, `~/.conda`, ...) to storage and back.

`plan_setup` / `plan_undo` look at the filesystem and the journal and return a plan (pure: no
changes); `execute` carries a plan out, journaling each phase before it starts, so that after
`kill -9` at any point the same command finishes the job. Nothing is ever deleted that has not
first been proven to exist elsewhere: a merge never overwrites, a conflicting copy is kept under
`STORAGE/.hpcenv/conflicts/<time>/`, and a source tree is removed only after its copy was
verified and merged.

Phases of one directory, each recorded in the journal before the next begins:

    setup, same filesystem:   start -> (renames) merged -> linked
    setup, across filesystems: start -> (copy to staging, verify) copied -> (renames) merged
                               -> (remove the home tree) linked
    undo:                     start -> unlinked -> [copied ->] merged -> restored
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.journal import Journal, StorageLock, tick
from hpcenv.report import human_bytes
from hpcenv.storage import (
    Layout,
    check_storage,
    ensure_private_dir,
    ensure_state_dir,
    free_bytes,
    same_filesystem,
)

SPACE_MARGIN = 1024 * 1024  # plus 1% of what moves; block and inode overhead is not counted
PHASES = ("start", "unlinked", "copied", "merged", "linked", "restored")


@dataclass(frozen=True)
class DirPlan:
    """What will happen to one redirected directory."""

    name: str
    home_path: Path
    storage_path: Path
    before: str  # absent | linked | directory | (undo) unlinked
    action: str  # none | link | move | restore
    cross_fs: bool = False
    files: int | None = None  # counted when a copy is needed, or for --dry-run
    bytes: int | None = None
    resume_phase: str | None = None


@dataclass(frozen=True)
class MigrationPlan:
    op: str  # setup | undo
    layout: Layout
    dirs: tuple[DirPlan, ...]
    warnings: tuple[str, ...] = ()
    resuming: bool = False

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
    skipped: tuple[str, ...] = ()


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


def count_tree(path: Path) -> tuple[int, int]:
    """(files, bytes) under `path`, hardlinks once, symlinks not followed."""
    files = size = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(path)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                files += 1
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                size += st.st_size
    return files, size


def _condarc_warnings(home: Path) -> list[str]:
    path = home / ".condarc"
    if not path.is_file():
        return []
    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except Exception as exc:  # a broken .condarc is conda's business; report, don't fail
        return [f"{path} could not be read ({exc.__class__.__name__}); check it by hand"]
    warnings = []
    for key in ("envs_dirs", "pkgs_dirs"):
        for entry in data.get(key) or [] if isinstance(data, dict) else []:
            expanded = os.path.expanduser(str(entry))
            if os.path.realpath(expanded).startswith(os.path.realpath(home) + "/"):
                warnings.append(
                    f"{path}: {key} entry {entry!r} points into home; remove it so conda "
                    "uses the redirected ~/.conda (hpcenv did not change it)"
                )
    return warnings


def _journal_phases(layout: Layout, op: str) -> dict[str, str] | None:
    path = layout.journal_dir / f"{op}.jsonl"
    if not path.is_file():
        return None
    import json

    phases: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "dir" in rec and "phase" in rec:
            phases[rec["dir"]] = rec["phase"]
    return phases


def _refuse_pending_other(layout: Layout, op: str) -> None:
    other = "undo" if op == "setup" else "setup"
    if (layout.journal_dir / f"{other}.jsonl").exists():
        cmd = "hpcenv setup --undo" if other == "undo" else "hpcenv setup"
        raise RefusedError(
            f"an interrupted `{cmd}` has not been finished",
            hint=f"run `{cmd}` first to finish it, then re-run this command",
        )


def plan_setup(layout: Layout, *, allow_home: bool = False, count: bool = False) -> MigrationPlan:
    """Decide, for each redirected directory, what `hpcenv setup` must do. Changes nothing.

    Refuses (exit 2) a symlink that points elsewhere or dangles, a non-directory, a storage
    area that is unusable, and a cross-filesystem move that cannot fit.
    """
    check_storage(layout, allow_home=allow_home)
    _refuse_pending_other(layout, "setup")
    phases = _journal_phases(layout, "setup") or {}
    dirs = []
    for name in layout.redirect:
        home_path, storage_path = layout.home_dir(name), layout.storage_dir(name)
        state = _classify(home_path, storage_path)
        if os.path.lexists(storage_path) and (
            os.path.islink(storage_path) or not storage_path.is_dir()
        ):
            raise RefusedError(
                f"{storage_path} exists but is not a directory",
                hint="move it away, then re-run `hpcenv setup`",
            )
        if state == "link-elsewhere":
            raise RefusedError(
                f"{home_path} is a symlink to {os.readlink(home_path)}, not to {storage_path}",
                hint=f"move that data yourself and remove the link (`rm {home_path}`), "
                "then re-run `hpcenv setup`",
            )
        if state == "dangling":
            raise RefusedError(
                f"{home_path} is a dangling symlink to {os.readlink(home_path)}",
                hint=f"remove it (`rm {home_path}`) or restore its target, then re-run",
            )
        if state == "other":
            raise RefusedError(
                f"{home_path} exists but is not a directory",
                hint="move it away, then re-run `hpcenv setup`",
            )
        phase = phases.get(name)
        if state == "linked":
            dirs.append(DirPlan(name, home_path, storage_path, state, "none"))
            continue
        if state == "absent" and phase not in ("copied", "merged"):
            dirs.append(DirPlan(name, home_path, storage_path, state, "link"))
            continue
        probe = storage_path if storage_path.exists() else layout.root
        cross = state == "directory" and not same_filesystem(home_path, probe)
        if phase is not None:
            cross = bool(_journal_cross(layout, "setup", name, default=cross))
        files = size = None
        if state == "directory" and (cross or count) and phase not in ("copied", "merged"):
            files, size = count_tree(home_path)
        dirs.append(
            DirPlan(name, home_path, storage_path, state, "move", cross, files, size, phase)
        )
    _check_space(layout.root, [d for d in dirs if d.cross_fs and d.bytes])
    return MigrationPlan(
        "setup", layout, tuple(dirs), tuple(_condarc_warnings(layout.home)), bool(phases)
    )


def plan_undo(layout: Layout, *, count: bool = False) -> MigrationPlan:
    """Decide what `hpcenv setup --undo` must do: move each linked directory back home."""
    if not layout.root.is_dir():
        raise UsageError(f"storage area {layout.root} does not exist", hint="pass --storage DIR")
    _refuse_pending_other(layout, "undo")
    phases = _journal_phases(layout, "undo") or {}
    dirs = []
    for name in layout.redirect:
        home_path, storage_path = layout.home_dir(name), layout.storage_dir(name)
        state = _classify(home_path, storage_path)
        phase = phases.get(name)
        if state in ("link-elsewhere", "dangling", "other"):
            raise RefusedError(
                f"{home_path} was not redirected by hpcenv ({state.replace('-', ' ')})",
                hint="leave it as it is or fix it by hand; nothing was changed",
            )
        resuming = phase is not None and phase != "restored"
        if state == "linked" or (resuming and storage_path.exists()):
            cross = not same_filesystem(layout.home, storage_path)
            if phase is not None:
                cross = bool(_journal_cross(layout, "undo", name, default=cross))
            files = size = None
            if (cross or count) and phase not in ("copied", "merged"):
                files, size = count_tree(storage_path)
            dirs.append(
                DirPlan(name, home_path, storage_path, state, "restore", cross, files, size, phase)
            )
        else:
            dirs.append(DirPlan(name, home_path, storage_path, state, "none"))
    _check_space(layout.home, [d for d in dirs if d.cross_fs and d.bytes])
    return MigrationPlan("undo", layout, tuple(dirs), (), bool(phases))


def _journal_cross(layout: Layout, op: str, name: str, default: bool) -> bool:
    import json

    path = layout.journal_dir / f"{op}.jsonl"
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("dir") == name and rec.get("phase") == "start":
            return bool(rec.get("cross_fs", default))
    return default


def _check_space(target: Path, dirs: list[DirPlan]) -> None:
    need = sum(d.bytes or 0 for d in dirs)
    if not need:
        return
    have = free_bytes(target)
    if need + SPACE_MARGIN + need // 100 > have:
        raise RefusedError(
            f"not enough space on {target}: moving {', '.join(d.name for d in dirs)} needs "
            f"{human_bytes(need)} plus a margin, {human_bytes(have)} is free",
            hint="free space there or choose another --storage; nothing was changed",
        )


# --------------------------------------------------------------------------- primitives


@dataclass
class _MergeStats:
    conflicts: list[str] = field(default_factory=list)
    duplicates: int = 0


def _same_content(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _identical(src: str, src_st: os.stat_result, dst: str, dst_st: os.stat_result) -> bool:
    if (src_st.st_dev, src_st.st_ino) == (dst_st.st_dev, dst_st.st_ino):
        return True
    if stat.S_ISLNK(src_st.st_mode) and stat.S_ISLNK(dst_st.st_mode):
        return os.readlink(src) == os.readlink(dst)
    if stat.S_ISREG(src_st.st_mode) and stat.S_ISREG(dst_st.st_mode):
        return src_st.st_size == dst_st.st_size and _same_content(src, dst)
    return False


def _rename_across(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(src, dst)


def merge_tree(src: Path, dst: Path, conflicts: Path, rel: str = "", stats=None) -> _MergeStats:
    """Move everything in `src` into `dst` by rename (same filesystem), never overwriting.

    An entry absent from `dst` is renamed into place; two directories merge recursively; an
    identical file or symlink in `src` is dropped (its twin is in `dst`); anything else is a
    conflict and the `src` entry is moved under `conflicts`. Re-running after a crash continues.
    """
    stats = stats if stats is not None else _MergeStats()
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        s, d = entry.path, os.path.join(dst, entry.name)
        relpath = f"{rel}{entry.name}"
        try:
            d_st = os.lstat(d)
        except FileNotFoundError:
            os.rename(s, d)
            tick()
            continue
        s_st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(s_st.st_mode) and stat.S_ISDIR(d_st.st_mode):
            merge_tree(Path(s), Path(d), conflicts / entry.name, relpath + "/", stats)
            os.rmdir(s)
            tick()
        elif _identical(s, s_st, d, d_st):
            os.unlink(s)
            stats.duplicates += 1
            tick()
        else:
            target = conflicts / entry.name
            os.makedirs(conflicts, mode=0o700, exist_ok=True)
            n = 0
            while os.path.lexists(target):
                n += 1
                target = conflicts / f"{entry.name}.{n}"
            _rename_across(s, str(target))
            stats.conflicts.append(relpath)
            tick()
    return stats


def copy_tree(src: Path, dst: Path) -> list[str]:
    """Copy `src` into `dst` (created), preserving modes, times, symlinks as symlinks and
    hardlinks within the tree. Resumable: a file already copied whole (same size and mtime,
    which is set last) is skipped. Returns the special files (sockets, devices) not copied."""
    links: dict[tuple[int, int], str] = {}
    skipped: list[str] = []
    resume = os.path.lexists(dst)
    _copy_dir(str(src), str(dst), os.lstat(src), links, skipped, "", resume)
    return skipped


def _copy_dir(src: str, dst: str, st: os.stat_result, links, skipped, rel, resume) -> None:
    try:
        os.mkdir(dst, 0o700)
    except FileExistsError:
        pass
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        s, d = entry.path, f"{dst}/{entry.name}"
        est = entry.stat(follow_symlinks=False)
        mode = est.st_mode
        if stat.S_ISDIR(mode):
            _copy_dir(s, d, est, links, skipped, f"{rel}{entry.name}/", resume)
        elif stat.S_ISLNK(mode):
            target = os.readlink(s)
            if os.path.lexists(d):
                if os.path.islink(d) and os.readlink(d) == target:
                    continue
                os.unlink(d)
            os.symlink(target, d)
            os.utime(d, ns=(est.st_atime_ns, est.st_mtime_ns), follow_symlinks=False)
            tick()
        elif stat.S_ISREG(mode):
            key = (est.st_dev, est.st_ino)
            if est.st_nlink > 1 and key in links:
                first = links[key]
                if os.path.lexists(d):
                    if os.path.samestat(os.lstat(d), os.lstat(first)):
                        continue
                    os.unlink(d)
                os.link(first, d)
                tick()
                continue
            if est.st_nlink > 1:
                links[key] = d
            if resume and _copied_whole(d, est):
                continue
            _copy_file(s, d, est, resume)
            tick()
        elif stat.S_ISFIFO(mode):
            if not os.path.lexists(d):
                os.mkfifo(d, stat.S_IMODE(mode))
        else:
            skipped.append(f"{rel}{entry.name}")
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copied_whole(dst: str, st: os.stat_result) -> bool:
    """A file an earlier run copied completely: its mtime, set last, matches."""
    try:
        d = os.lstat(dst)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(d.st_mode) and d.st_size == st.st_size and d.st_mtime_ns == st.st_mtime_ns


def _copy_file(src: str, dst: str, st: os.stat_result, resume: bool) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if resume and os.path.lexists(dst):
            os.unlink(dst)
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            remaining, offset = st.st_size, 0
            while remaining > 0:
                sent = os.sendfile(fout, fin, offset, min(remaining, 1 << 30))
                if sent == 0:
                    break
                offset += sent
                remaining -= sent
            os.fchmod(fout, stat.S_IMODE(st.st_mode))
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))  # last: marks the copy whole
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def verify_copy(src: Path, dst: Path) -> list[str]:
    """Differences between a tree and its copy (type, size, mode, mtime, link target)."""
    problems: list[str] = []
    _verify_dir(str(src), str(dst), "", problems)
    return problems


def _verify_dir(src: str, dst: str, rel: str, problems: list[str]) -> None:
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        where = rel + entry.name
        d = f"{dst}/{entry.name}"
        s_st = entry.stat(follow_symlinks=False)
        try:
            d_st = os.lstat(d)
        except FileNotFoundError:
            problems.append(f"missing {where}")
            continue
        if stat.S_IFMT(s_st.st_mode) != stat.S_IFMT(d_st.st_mode):
            problems.append(f"type differs {where}")
        elif stat.S_ISDIR(s_st.st_mode):
            _verify_dir(entry.path, d, where + "/", problems)
        elif stat.S_ISLNK(s_st.st_mode):
            if os.readlink(entry.path) != os.readlink(d):
                problems.append(f"link target differs {where}")
        elif stat.S_ISREG(s_st.st_mode) and (
            s_st.st_size != d_st.st_size
            or s_st.st_mtime_ns != d_st.st_mtime_ns
            or stat.S_IMODE(s_st.st_mode) != stat.S_IMODE(d_st.st_mode)
        ):
            problems.append(f"content or mode differs {where}")


def remove_tree(path: Path) -> None:
    """Remove a tree whose content is proven to be elsewhere; one tick per entry."""
    if not os.path.lexists(path) or os.path.islink(path):
        return
    _remove_dir(str(path))
    os.rmdir(path)
    tick()


def _remove_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            if is_dir:
                _remove_dir(os.path.join(path, name))
                os.rmdir(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            tick()
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- execution


def _phase_reached(journal: Journal, name: str, phase: str) -> bool:
    rec = journal.last(dir=name)
    return rec is not None and PHASES.index(rec["phase"]) >= PHASES.index(phase)


def _transfer(
    journal: Journal,
    dp: DirPlan,
    src: Path,
    dst: Path,
    staging: Path,
    conflicts: Path,
    stats: _MergeStats,
) -> list[str]:
    """Move the contents of `src` into `dst`, copying through `staging` across filesystems."""
    skipped: list[str] = []
    if dp.cross_fs:
        if not _phase_reached(journal, dp.name, "copied"):
            try:
                skipped = copy_tree(src, staging)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    shutil.rmtree(staging, ignore_errors=True)
                    raise _NoSpace(dp, exc) from exc
                raise
            problems = verify_copy(src, staging)
            if problems:
                shutil.rmtree(staging, ignore_errors=True)
                raise OperationError(
                    f"the copy of {src} did not verify ({problems[0]}; {len(problems)} in all); "
                    "the copy was removed and nothing in the source was changed",
                    hint="re-run the command; if it fails again, report it",
                )
            journal.record(dir=dp.name, phase="copied")
        if not _phase_reached(journal, dp.name, "merged"):
            if staging.exists():
                merge_tree(staging, dst, conflicts, stats=stats)
                os.rmdir(staging)
                tick()
            journal.record(dir=dp.name, phase="merged")
        remove_tree(src)
    elif not _phase_reached(journal, dp.name, "merged"):
        merge_tree(src, dst, conflicts, stats=stats)
        journal.record(dir=dp.name, phase="merged")
    return skipped


class _NoSpace(Exception):
    def __init__(self, dp: DirPlan, exc: OSError) -> None:
        self.dp, self.exc = dp, exc


def _setup_dir(journal: Journal, plan: MigrationPlan, dp: DirPlan, conflicts: Path) -> DirResult:
    layout = plan.layout
    stats = _MergeStats()
    skipped: list[str] = []
    if dp.action in ("link", "move"):
        if journal.last(dir=dp.name) is None:
            journal.record(dir=dp.name, phase="start", cross_fs=dp.cross_fs, action=dp.action)
        if not dp.storage_path.exists():
            mode = 0o700
            if dp.before == "directory":
                mode = stat.S_IMODE(os.stat(dp.home_path).st_mode)
            os.mkdir(dp.storage_path, mode)
            tick()
        if dp.action == "move":
            if dp.cross_fs:
                ensure_private_dir(layout.staging_dir)
            skipped = _transfer(
                journal,
                dp,
                dp.home_path,
                dp.storage_path,
                layout.staging_dir / dp.name,
                conflicts,
                stats,
            )
            if os.path.isdir(dp.home_path) and not os.path.islink(dp.home_path):
                os.rmdir(dp.home_path)  # empty now: everything was moved or copied and merged
                tick()
        if not os.path.lexists(dp.home_path):
            os.symlink(str(dp.storage_path), dp.home_path)
            tick()
        journal.record(dir=dp.name, phase="linked")
    return _result(dp, stats, skipped)


def _undo_dir(journal: Journal, plan: MigrationPlan, dp: DirPlan, conflicts: Path) -> DirResult:
    stats = _MergeStats()
    skipped: list[str] = []
    if dp.action == "restore":
        if journal.last(dir=dp.name) is None:
            journal.record(dir=dp.name, phase="start", cross_fs=dp.cross_fs, action=dp.action)
        if not _phase_reached(journal, dp.name, "unlinked"):
            if os.path.islink(dp.home_path):
                os.unlink(dp.home_path)
                tick()
            if not os.path.lexists(dp.home_path):
                os.mkdir(dp.home_path, stat.S_IMODE(os.stat(dp.storage_path).st_mode))
                tick()
            journal.record(dir=dp.name, phase="unlinked")
        staging_root = plan.layout.home / ".hpcenv-staging"
        if dp.cross_fs:
            ensure_private_dir(staging_root)
        skipped = _transfer(
            journal,
            dp,
            dp.storage_path,
            dp.home_path,
            staging_root / dp.name,
            conflicts,
            stats,
        )
        if os.path.isdir(dp.storage_path):
            os.rmdir(dp.storage_path)
            tick()
        if staging_root.is_dir() and not any(staging_root.iterdir()):
            os.rmdir(staging_root)
        journal.record(dir=dp.name, phase="restored")
    return _result(dp, stats, skipped)


def _result(dp: DirPlan, stats: _MergeStats | None = None, skipped=(), after=None) -> DirResult:
    stats = stats or _MergeStats()
    return DirResult(
        dp.name,
        str(dp.home_path),
        str(dp.storage_path),
        dp.before,
        after or _classify(dp.home_path, dp.storage_path),
        dp.action,
        dp.files,
        dp.bytes,
        tuple(stats.conflicts),
        stats.duplicates,
        tuple(skipped),
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


def execute(
    plan: MigrationPlan,
    *,
    lock_timeout: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
    replan: Callable[[], MigrationPlan] | None = None,
) -> SetupReport:
    """Carry out a plan under the storage lock, journaled. `replan` recomputes the plan once the
    lock is held (another process may have changed things while we waited)."""
    layout = plan.layout
    ensure_state_dir(layout)
    lock = StorageLock(layout.lock_path, timeout=lock_timeout, on_wait=on_wait)
    with lock:
        if lock.waited and replan is not None:
            plan = replan()
        if not plan.changes and not plan.resuming:
            results = [_result(d) for d in plan.dirs]
            return _report(plan, results, None, False, lock.waited)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        journal = Journal.open(layout.journal_dir, plan.op, {"conflicts_stamp": stamp})
        conflicts_root = layout.conflicts_dir / journal.header.get("conflicts_stamp", stamp)
        step = _setup_dir if plan.op == "setup" else _undo_dir
        results = []
        try:
            for dp in plan.dirs:
                results.append(step(journal, plan, dp, conflicts_root / dp.name.lstrip(".")))
        except _NoSpace as ns:
            journal.finish(f"stopped: no space while copying {ns.dp.name}")
            raise OperationError(
                f"ran out of space on {ns.exc.filename or layout.root} while copying "
                f"{ns.dp.home_path if plan.op == 'setup' else ns.dp.storage_path} "
                f"({human_bytes(ns.dp.bytes or 0)} needed); the partial copy was removed and the "
                "source is untouched",
                hint="free space (or pick another --storage) and re-run",
            ) from None
        journal.finish()
        any_conflicts = any(r.conflicts for r in results)
        return _report(
            plan, results, conflicts_root if any_conflicts else None, journal.resumed, lock.waited
        )


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
