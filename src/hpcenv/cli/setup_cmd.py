"""`hpcenv setup`: redirect the caches to storage (and `--undo`)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpcenv.cli.app import app, emit_json, info, settings, warn


@app.command()
def setup(
    ctx: typer.Context,
    storage: Path = typer.Option(None, "--storage", help="Storage root to move the caches to."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    undo: bool = typer.Option(False, "--undo", help="Move everything back home, remove the links."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    allow_home: bool = typer.Option(False, "--allow-home", help="Allow a storage root in home."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Redirect ~/.cache and ~/.conda to the storage area, losing nothing.

    Puts the symlink in place first, so new files land in storage at once, then moves what
    was there (renames on one filesystem; across two, a copy, and each file is removed only
    once checked identical to its copy), merging with what storage already has (conflicting
    files are kept aside, never overwritten). Safe to re-run; resumes after a crash; --undo
    also reverses an interrupted setup.

    Example:  hpcenv setup --storage "$global_storage" --dry-run
    """
    from hpcenv import migrate
    from hpcenv.storage import layout_from

    s = settings(ctx, storage)
    layout = layout_from(s)
    allow = allow_home or s.allow_home

    def make_plan():
        if undo:
            return migrate.plan_undo(layout, count=dry_run)
        return migrate.plan_setup(layout, allow_home=allow, count=dry_run)

    def waiting(pid: str) -> None:
        info(ctx, f"waiting for another hpcenv (pid {pid}) to finish...")

    plan = migrate.settled_plan(layout, make_plan, lock_timeout=s.lock_timeout, on_wait=waiting)
    if dry_run:
        report = migrate.dry_run_report(plan)
    else:
        if plan.changes and any(d.action in ("move", "restore") for d in plan.dirs):
            if not json_out:  # stdout is the JSON document then
                _show_plan(plan)
            what = "Move these directories back home" if undo else "Move these directories"
            if not yes and typer.get_text_stream("stdin").isatty():
                if not typer.confirm(f"{what}?", default=True):
                    info(ctx, "nothing changed")
                    raise typer.Exit(0)
        report = migrate.execute(
            plan,
            lock_timeout=s.lock_timeout,
            on_wait=waiting,
            replan=make_plan,
        )
    for message in report.warnings:
        warn(message)
    if json_out:
        emit_json("setup", report)
        return
    _render(ctx, report)


def _show_plan(plan) -> None:
    from hpcenv.report import human_bytes

    for d in plan.dirs:
        if d.action != "none":
            how = "copy across filesystems" if d.cross_fs else "rename"
            size = f", {d.files} files, {human_bytes(d.bytes)}" if d.files is not None else ""
            print(f"  {d.home_path} -> {d.storage_path}: {d.action} ({how}{size})", flush=True)


def _render(ctx: typer.Context, report) -> None:
    from hpcenv.report import human_bytes, print_table

    title = "Plan (dry run, nothing changed)" if report.dry_run else None
    if report.resumed:
        info(ctx, "resumed an interrupted run and finished it")
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
        info(ctx, "waited for another hpcenv to finish first")
    print(f"Next: {report.next_command}")
