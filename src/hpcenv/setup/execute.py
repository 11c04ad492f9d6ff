"""Carrying out a setup or undo plan: the two locks (this home, this storage root), the
journal, replanning when another run changed what the plan was made from, and the report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import HpcenvError, LockedError, OperationError, RefusedError
from hpcenv.journal import Journal
from hpcenv.lock import StorageLock
from hpcenv.report import human_bytes
from hpcenv.setup.checks import aside_dirs, classify, dev, real_dir
from hpcenv.setup.drain import StillOpen, StillWriting
from hpcenv.setup.phases import (
    CopyFailed,
    DirResult,
    Run,
    discard,
    remove_our_links,
    result,
    rmdir_if_empty,
    setup_dir,
    undo_dir,
)
from hpcenv.setup.plan import NO_SPACE, DirPlan, MigrationPlan, seen
from hpcenv.storage import (
    Layout,
    ensure_private_dir,
    ensure_state_dir,
)


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


def dry_run_report(plan: MigrationPlan) -> SetupReport:
    dirs = tuple(result(d, after=d.before) for d in plan.dirs)
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
        return _report(plan, [result(d) for d in plan.dirs], None, False, False)
    ensure_private_dir(layout.home_state_dir)
    ensure_state_dir(layout)
    with _locks(layout, lock_timeout, on_wait) as waited:
        if replan is not None and seen(layout) != plan.seen:
            plan = replan()  # another run changed things since the plan was made
        if not (plan.changes or plan.resuming or plan.takes_over):
            return _report(plan, [result(d) for d in plan.dirs], None, False, waited)
        _supersede(layout, plan.op)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        journal = Journal.open(layout.journal_dir, plan.op, {"conflicts_stamp": stamp})
        conflicts_root = layout.conflicts_dir / journal.header.get("conflicts_stamp", stamp)
        run = Run(plan, journal, conflicts_root)
        step = setup_dir if plan.op == "setup" else undo_dir
        results = []
        try:
            for parent in (layout.home_state_dir, layout.state_dir):
                run.tmp[dev(parent)] = parent / "tmp"
                discard(parent / "tmp")  # copies in progress when a run died
            for dp in plan.dirs:
                results.append(step(run, dp))
            journal.finish()
        except (OSError, StillWriting, StillOpen, CopyFailed) as exc:
            raise _stopped(run, exc) from None
        for directory in (*run.tmp.values(), layout.home_staging_dir):
            rmdir_if_empty(directory)
        any_conflicts = any(r.conflicts for r in results)
        return _report(
            plan, results, conflicts_root if any_conflicts else None, journal.resumed, waited
        )


def _describe(op: str, dp: DirPlan) -> tuple[str, bool]:
    """Where one directory stands now, in words, and whether it is half moved."""
    state = classify(dp.home_path, dp.storage_path)
    asides = [str(p) for p in aside_dirs(dp.home_path)]
    if op == "setup":
        if state == "linked" and not asides:
            return f"{dp.home_path} was moved", False
        if state == "directory" and not asides:
            return f"{dp.home_path} was not moved", False
        return f"{dp.home_path} is half moved (the rest waits in {', '.join(asides)})", True
    if state == "directory" and not asides and not real_dir(dp.storage_path):
        return f"{dp.home_path} was moved back", False
    if state == "linked" and not asides:
        return f"{dp.home_path} was not moved back", False
    rest = ", ".join(asides + [str(dp.storage_path)] * real_dir(dp.storage_path))
    return f"{dp.home_path} is half moved back (the rest waits in {rest})", True


def _stopped(run: Run, exc: BaseException) -> HpcenvError:
    """The error for a run that stopped, saying exactly what moved and what did not. The
    journal stays unfinished while a directory is half moved (a re-run finishes it)."""
    plan = run.plan
    cmd = "hpcenv setup" if plan.op == "setup" else "hpcenv setup --undo"
    back = "hpcenv setup --undo" if plan.op == "setup" else "hpcenv setup"
    states = [_describe(plan.op, d) for d in plan.dirs if d.action != "none"]
    where = "; ".join(s for s, _ in states)
    half = any(h for _, h in states)
    target = plan.layout.root if plan.op == "setup" else plan.layout.home
    if isinstance(exc, CopyFailed) and exc.exc.errno in NO_SPACE:
        what = (
            f"ran out of {_space_kind(exc.exc, target)} while copying {exc.src} "
            f"({human_bytes(exc.dp.space)} needed); the partial copy was removed"
        )
    elif isinstance(exc, CopyFailed):
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
    elif isinstance(exc, OSError) and exc.errno in NO_SPACE:
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


def _tidy(run: Run) -> None:
    """After a stop that left no directory half moved: remove what only that run needed (its
    links under aside names, staging copies of sources that are all still in place)."""
    layout = run.plan.layout
    try:
        for dp in run.plan.dirs:
            remove_our_links(dp.home_path, dp.storage_path)
            discard(layout.staging_dir / dp.name)
            discard(layout.home_staging_dir / dp.name)
        rmdir_if_empty(layout.home_staging_dir)
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
