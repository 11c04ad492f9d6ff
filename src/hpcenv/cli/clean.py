"""`hpcenv clean`: remove what no environment needs."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.context import Context, emit_json, warn


def clean(ctx: Context, args: Namespace) -> int:
    from hpcenv import clean as core
    from hpcenv.consent import Consent
    from hpcenv.report import human_bytes
    from hpcenv.storage import check_storage

    settings, layout = ctx.settings(), ctx.layout()
    check_storage(layout, allow_home=settings.allow_home)
    plan = core.plan_clean(layout)
    for message in plan.warnings:
        warn(message)
    if args.dry_run or not (plan.items or plan.resuming):
        report = core.dry_run_report(plan)
        if args.json_out:
            emit_json("clean", report)
        else:
            _render(report, "Would remove (dry run, nothing changed)")
        return 0
    if not args.json_out:
        _render(core.dry_run_report(plan), "Will remove")
    question = f"Remove these {len(plan.items)} items ({human_bytes(plan.bytes)})?"
    consent = Consent(question, f"{question} needs confirmation", "re-run with --yes")
    if plan.items and not ctx.agree(consent, args.yes):
        ctx.info("nothing changed")
        return 0
    report = core.execute_clean(plan, lock_timeout=settings.lock_timeout, on_wait=ctx.waiting)
    if args.json_out:
        emit_json("clean", report)
        return 0
    if report.resumed:
        ctx.info("finished an interrupted clean")
    for item in report.items:
        if item.status != "removed":
            warn(f"{item.path}: {item.describe_status()}")
    print(f"freed {human_bytes(report.freed_bytes)}")
    return 0


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
