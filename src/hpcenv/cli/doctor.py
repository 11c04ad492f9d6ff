"""`hpcenv doctor`: what is wrong, and the command that fixes it."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.context import Context, emit_json


def doctor(ctx: Context, args: Namespace) -> int:
    from hpcenv import doctor as core

    report = core.diagnose(ctx.settings(), fix=args.fix)
    if args.json_out:
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
    return 1 if report.failed else 0
