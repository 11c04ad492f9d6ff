"""`hpcenv usage | clean | doctor`: where the space goes, what can go, what is wrong."""

from __future__ import annotations

import time

import typer

from hpcenv.cli.app import app, confirm, emit_json, info, settings, warn


def _layout(ctx: typer.Context):
    from hpcenv.storage import layout_from

    s = settings(ctx)
    return s, layout_from(s)


def _date(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts)) if ts else "-"


@app.command()
def usage(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show what uses space and files: home (against its quota), storage, caches, envs.

    Sizes count each hardlinked file once; "unique" is what deleting that item would free.

    Example:  hpcenv usage
              hpcenv usage --json | jq '.result.envs[] | {name, unique_bytes}'
    """
    from hpcenv import hygiene
    from hpcenv.report import human_bytes, print_table
    from hpcenv.sitecache import trusted_layers

    s, layout = _layout(ctx)
    layers = trusted_layers(s)
    report = hygiene.usage_report(layout, s.home_quota, layers.paths)
    for message in (*layers.warnings, *report.warnings):
        warn(message)
    if json_out:
        emit_json("usage", report)
        return
    rows = [
        (
            r.kind,
            r.name,
            r.path if r.exists else f"{r.path} (missing)",
            human_bytes(r.apparent_bytes),
            human_bytes(r.unique_bytes),
            r.files,
            _date(r.last_used),
        )
        for r in (report.home, report.storage, *report.caches, *report.envs)
    ]
    print_table(None, ["kind", "name", "path", "size", "unique", "files", "last used"], rows)
    q = report.home_quota
    if q is None:
        print("home quota: unknown (no `quota` command answer; set home_quota in the site config)")
    else:
        line = f"home quota: {human_bytes(q.used_bytes)} of {human_bytes(q.limit_bytes)}"
        if q.used_percent is not None:
            line += f" ({q.used_percent:.0f}%)"
        if q.files_limit:
            line += f", {q.files} of {q.files_limit} files ({q.files_percent:.0f}%)"
        print(f"{line} [{q.source}]")
    if report.storage_free_bytes is not None:
        print(f"storage free: {human_bytes(report.storage_free_bytes)}")
    site = sum(r.site_bytes for r in report.envs)
    if layers.paths:
        line = (
            f"site package cache: {human_bytes(site)} of your envs' files are the site's "
            "(hardlinked or sharing extents), not counted as yours in 'unique'"
        )
        if not report.site_extents_counted:
            line += "; shared extents not counted (this filesystem cannot tell)"
        print(line)
    print("Next: hpcenv clean --dry-run  (what can be removed safely)")


@app.command()
def clean(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go; remove nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Remove what no environment needs: downloaded archives, unused extracted packages,
    the pip and uv caches, leftovers of interrupted creates.

    A package an environment links is never removed (decided from every env's conda-meta and
    confirmed by link counts). Safe to interrupt: the next run finishes the job.

    Example:  hpcenv clean --dry-run
              hpcenv clean --yes
    """
    from hpcenv import hygiene
    from hpcenv.report import human_bytes
    from hpcenv.storage import check_storage

    s, layout = _layout(ctx)
    check_storage(layout, allow_home=s.allow_home)
    plan = hygiene.plan_clean(layout)
    for message in plan.warnings:
        warn(message)
    if dry_run or not (plan.items or plan.resuming):
        report = hygiene.dry_run_report(plan)
        if json_out:
            emit_json("clean", report)
        else:
            _render(report, "Would remove (dry run, nothing changed)")
        return
    if not json_out:
        _render(hygiene.dry_run_report(plan), "Will remove")
    question = f"Remove these {len(plan.items)} items ({human_bytes(plan.bytes)})?"
    if plan.items and not confirm(question, yes):
        info(ctx, "nothing changed")
        raise typer.Exit(0)
    report = hygiene.execute_clean(
        plan,
        lock_timeout=s.lock_timeout,
        on_wait=lambda pid: info(ctx, f"waiting for another hpcenv (pid {pid}) to finish..."),
    )
    if json_out:
        emit_json("clean", report)
        return
    if report.resumed:
        info(ctx, "finished an interrupted clean")
    for item in report.items:
        if item.status != "removed":
            warn(f"{item.path}: {item.status}")
    print(f"freed {human_bytes(report.freed_bytes)}")


def _render(report, title: str) -> None:
    from hpcenv.report import human_bytes, print_table

    if not report.items:
        print(f"nothing to clean ({_kept(report)})")
        return
    rows = [(i.kind, i.path, human_bytes(i.bytes), i.files, i.reason) for i in report.items]
    print_table(title, ["kind", "path", "frees", "files", "why"], rows)
    total = sum(i.bytes for i in report.items)
    print(f"total: {human_bytes(total)}; {_kept(report)}")


def _kept(report) -> str:
    envs = report.envs_checked
    return (
        f"kept {len(report.kept_packages)} cached package(s) in use by "
        f"{envs} environment{'s' if envs != 1 else ''}"
    )


@app.command()
def doctor(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    fix: bool = typer.Option(
        False, "--fix", help="Remove `conda init` blocks from shell startup files (backed up)."
    ),
) -> None:
    """Check this account's setup and print the command that fixes each problem.

    Exit status 1 when a check FAILs (WARN alone exits 0).

    Example:  hpcenv doctor
              hpcenv doctor --fix
    """
    from hpcenv import doctor as core

    report = core.diagnose(settings(ctx), fix=fix)
    if json_out:
        emit_json("doctor", report)
    else:
        from hpcenv.report import print_table

        for line in report.fixed:
            print(f"fixed: {line}")
        rows = [(c.status.value, c.name, c.detail, c.fix or "") for c in report.checks]
        print_table(None, ["status", "check", "detail", "fix"], rows)
        fails = sum(c.status is core.Status.FAIL for c in report.checks)
        warns = sum(c.status is core.Status.WARN for c in report.checks)
        print(f"{len(report.checks)} checks: {fails} FAIL, {warns} WARN")
    if report.failed:
        raise typer.Exit(1)
