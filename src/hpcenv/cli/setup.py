"""`hpcenv setup`: redirect the caches to storage (and `--undo`)."""

from __future__ import annotations

import sys
from argparse import Namespace
from typing import TYPE_CHECKING

from hpcenv.cli.context import Context, ask, emit_json, warn

if TYPE_CHECKING:
    from hpcenv.setup import MigrationPlan, SetupReport


def setup(ctx: Context, args: Namespace) -> int:
    from hpcenv import setup as core

    settings, layout = ctx.settings(), ctx.layout()
    allow = args.allow_home or settings.allow_home

    def make_plan() -> MigrationPlan:
        if args.undo:
            return core.plan_undo(layout, count=args.dry_run)
        return core.plan_setup(layout, allow_home=allow, count=args.dry_run)

    plan = core.settled_plan(
        layout, make_plan, lock_timeout=settings.lock_timeout, on_wait=ctx.waiting
    )
    if args.dry_run:
        report = core.dry_run_report(plan)
    else:
        if plan.changes and any(d.action in ("move", "restore") for d in plan.dirs):
            if not args.json_out:  # stdout is the JSON document then
                _show_plan(plan)
            what = "Move these directories back home" if args.undo else "Move these directories"
            # the deliberate exception to the one confirmation rule (hpcenv.consent): setup
            # moves, never deletes, so without a terminal it goes on without --yes
            if not args.yes and sys.stdin.isatty() and not ask(f"{what}?", default=True):
                ctx.info("nothing changed")
                return 0
        report = core.execute(
            plan, lock_timeout=settings.lock_timeout, on_wait=ctx.waiting, replan=make_plan
        )
    for message in report.warnings:
        warn(message)
    if args.json_out:
        emit_json("setup", report)
        return 0
    _render(ctx, report)
    return 0


def _show_plan(plan: MigrationPlan) -> None:
    from hpcenv.report import human_bytes

    for d in plan.dirs:
        if d.action != "none":
            how = "copy across filesystems" if d.cross_fs else "rename"
            size = f", {d.files} files, {human_bytes(d.bytes)}" if d.files is not None else ""
            print(f"  {d.home_path} -> {d.storage_path}: {d.action} ({how}{size})", flush=True)


def _render(ctx: Context, report: SetupReport) -> None:
    from hpcenv.report import human_bytes, print_table

    title = "Plan (dry run, nothing changed)" if report.dry_run else None
    if report.resumed:
        ctx.info("resumed an interrupted run and finished it")
    rows = [
        (
            r.name,
            r.before,
            r.after,
            r.action,
            "-" if r.files is None else r.files,
            human_bytes(r.bytes),
            len(r.conflicts),
        )
        for r in report.dirs
    ]
    print_table(
        title, ["directory", "before", "after", "action", "files", "bytes", "conflicts"], rows
    )
    if report.conflicts_dir:
        print(f"Conflicting files from home were kept, not overwritten: {report.conflicts_dir}")
    for r in report.dirs:
        if r.skipped:
            print(f"{r.name}: device files not recreated (only root may): {', '.join(r.skipped)}")
    if report.waited_for_lock:
        ctx.info("waited for another hpcenv to finish first")
    print(f"Next: {report.next_command}")
