"""`hpcenv verify | repair`: which packages of an env lost files, and putting them back."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.context import Context, emit_json, warn
from hpcenv.cli.envarg import pick_env, require_env
from hpcenv.errors import UsageError

SHOWN = 10  # files listed per package and kind without -v


def _one_env(ctx: Context, args: Namespace, command: str) -> str:
    env, rest = pick_env(ctx, args.args, args.name, args.prefix, specs_follow=False)
    if rest:
        raise UsageError(f"unexpected argument {rest[0]!r}", hint="give one environment")
    return require_env(env, command)


def verify(ctx: Context, args: Namespace) -> int:
    from hpcenv.verify import as_json
    from hpcenv.verify import verify as run_verify

    env = None
    if not args.all_envs:
        env = _one_env(ctx, args, "verify")
    elif args.args or args.name or args.prefix:
        raise UsageError("give an environment or --all, not both", hint="hpcenv verify --all")
    report = run_verify(ctx.layout(), ctx.settings(), env, all_envs=args.all_envs, full=args.full)
    for message in report.warnings:
        warn(message)
    if args.json_out:
        emit_json("verify", as_json(report))
    else:
        for check in report.envs:
            _render_env(check, bool(ctx.verbose))
    return 1 if report.broken else 0


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


def repair(ctx: Context, args: Namespace) -> None:
    from hpcenv.repair import apply_repair, plan_repair

    env = _one_env(ctx, args, "repair")
    layout, settings = ctx.layout(), ctx.settings()
    plan = plan_repair(layout, settings, env, full=args.full, dry_run=args.dry_run)
    report = plan.report
    if not args.dry_run and report.fixes:
        report = apply_repair(layout, settings, plan, on_wait=ctx.waiting)
    if args.json_out:
        emit_json("repair", report)
        return
    label = report.name or report.prefix
    if not report.fixes:
        print(f"nothing to repair in {label}: every file matches its record")
        return
    if report.resumed:
        ctx.info(f"finishing the interrupted repair of {label}")
    head = "would repair" if args.dry_run else "repaired"
    print(f"{head} {len(report.fixes)} package(s) in {label}:")
    for line in report.lines:
        print(f"  {line}")
    for message in report.warnings:
        warn(message)
    if report.aside_dir:
        print(f"what stood in the packages' way is kept in {report.aside_dir}")
    if not args.dry_run:
        print(f"Next: hpcenv verify {label}")
