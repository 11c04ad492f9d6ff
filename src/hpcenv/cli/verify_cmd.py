"""`hpcenv verify | repair`: which packages of an env lost files, and putting them back."""

from __future__ import annotations

from pathlib import Path

import typer

from hpcenv.cli.app import (
    NAME_OPTION,
    PREFIX_OPTION,
    app,
    emit_json,
    info,
    pick_env,
    require_env,
    settings,
    warn,
)

SHOWN = 10  # files listed per package and kind without -v


def _context(ctx: typer.Context):
    from hpcenv.storage import layout_from

    s = settings(ctx)
    return s, layout_from(s)


@app.command()
def verify(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    all_envs: bool = typer.Option(False, "--all", help="Every environment hpcenv finds."),
    full: bool = typer.Option(
        False, "--full", help="Also compare each file's sha256 (reads every byte)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check that every file of every package is still there, unchanged.

    Missing, changed (size, type, permissions; content with --full) and extra files are
    listed per package. Exit status 1 when a package is broken (`hpcenv repair` fixes it).

    Example:  hpcenv verify myenv
              hpcenv verify --all --json
              hpcenv verify -p "$global_storage/envs/proj" --full
    """
    from hpcenv.verify import as_json
    from hpcenv.verify import verify as run_verify

    env = None
    if not all_envs:
        env, rest = pick_env(ctx, args, name, prefix, specs_follow=False)
        if rest:
            raise typer.BadParameter(f"unexpected argument {rest[0]!r}")
        env = require_env(env, "verify")
    elif args or name or prefix:
        raise typer.BadParameter("give an environment or --all, not both")
    s, layout = _context(ctx)
    report = run_verify(layout, s, env, all_envs=all_envs, full=full)
    for message in report.warnings:
        warn(message)
    if json_out:
        emit_json("verify", as_json(report))
    else:
        verbose = bool(ctx.obj and ctx.obj.verbose)
        for check in report.envs:
            _render_env(check, verbose)
    if report.broken:
        raise typer.Exit(1)


def _render_env(check, verbose: bool) -> None:
    label = check.name or check.prefix
    where = f"{label} ({check.prefix})" if check.name else label
    if check.error:
        print(f"{where}: cannot be checked: {check.error}")
        return
    broken = check.broken_packages
    state = f"{len(broken)} broken" if broken or check.unreadable else "OK"
    if not check.complete:
        state += f" (stopped early: {check.packages} of {check.total_packages} packages checked)"
    print(f"{where}: {check.packages} packages, {check.files:,} files: {state}")
    for bad in check.unreadable:
        print(f"  unreadable record {bad.path}: {bad.reason}")
    for pkg in check.problems:
        m, c, x = pkg.counts
        parts = [f"{n} {k}" for n, k in ((m, "missing"), (c, "changed"), (x, "extra")) if n]
        parts += [f"{len(pkg.unchecked)} not comparable"] if pkg.unchecked else []
        note = "" if pkg.broken else " (not broken)"
        print(f"  {pkg.label} [{pkg.source}]: {', '.join(parts)}{note}")
        limit = None if verbose else SHOWN
        for kind, items in (
            ("missing", [(p, "") for p in pkg.missing]),
            ("changed", [(i.path, i.detail) for i in pkg.changed]),
            ("extra", [(p, "") for p in pkg.extra]),
            ("unchecked", [(i.path, i.detail) for i in pkg.unchecked]),
        ):
            for path, detail in items[:limit]:
                print(f"    {kind:9} {path}" + (f": {detail}" if detail else ""))
            total = {"missing": m, "changed": c, "extra": x}.get(kind, len(items))
            if limit is not None and total > limit:
                print(f"    {kind:9} ... {total - limit} more (-v lists them)")
    if check.interrupted_repair:
        print(f"  an interrupted repair: re-run `hpcenv repair {label}` to finish it")
    if check.broken and not check.interrupted_repair:
        import shlex

        print(f"Next: hpcenv repair {shlex.quote(label)}")


@app.command()
def repair(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be done; do nothing."),
    full: bool = typer.Option(False, "--full", help="Check file contents too (sha256)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Install again exactly the packages that lost files (same builds), journaled.

    From the package cache (a damaged cached copy is extracted again, a lost one downloaded
    again); PyPI packages through uv at their installed version. Re-running it finishes an
    interrupted repair.

    Example:  hpcenv repair myenv --dry-run
              hpcenv repair myenv
    """
    from hpcenv.repair import apply_repair, plan_repair

    env, rest = pick_env(ctx, args, name, prefix, specs_follow=False)
    if rest:
        raise typer.BadParameter(f"unexpected argument {rest[0]!r}")
    env = require_env(env, "repair")
    s, layout = _context(ctx)
    plan = plan_repair(layout, s, env, full=full, dry_run=dry_run)
    report = plan.report
    if not dry_run and report.fixes:
        report = apply_repair(
            layout,
            s,
            plan,
            on_wait=lambda pid: info(ctx, f"waiting for another hpcenv (pid {pid}) to finish..."),
        )
    if json_out:
        emit_json("repair", report)
        return
    label = report.name or report.prefix
    if not report.fixes:
        print(f"nothing to repair in {label}: every file matches its record")
        return
    if report.resumed:
        info(ctx, f"finishing the interrupted repair of {label}")
    head = "would repair" if dry_run else "repaired"
    print(f"{head} {len(report.fixes)} package(s) in {label}:")
    for line in report.lines:
        print(f"  {line}")
    for message in report.warnings:
        warn(message)
    if report.aside_dir:
        print(f"what stood in the packages' way is kept in {report.aside_dir}")
    if not dry_run:
        print(f"Next: hpcenv verify {label}")
