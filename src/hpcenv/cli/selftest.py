"""`hpcenv selftest`: the whole flow, offline, in a sandbox."""

from __future__ import annotations

import sys
from argparse import Namespace

from hpcenv.cli.context import Context, emit_json


def selftest(ctx: Context, args: Namespace) -> int:
    from hpcenv.selftest import StepResult, run_selftest

    def live(step: StepResult) -> None:
        if not args.json_out:
            mark = "✓" if step.ok else "✗"
            print(f"{mark} {step.name:<11} {step.seconds:6.2f} s  {step.detail}", file=sys.stderr)

    report = run_selftest(keep=args.keep, on_step=live)
    if args.json_out:
        emit_json("selftest", report)
    else:
        from hpcenv.report import print_table

        rows = [
            ("✓" if s.ok else "✗", s.name, f"{s.seconds:.2f} s", s.detail) for s in report.steps
        ]
        print_table("hpcenv selftest", ["", "step", "time", "detail"], rows)
        if report.kept:
            print(f"sandbox kept: {report.sandbox}")
        failed = [s.name for s in report.steps if not s.ok]
        print("all steps passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 0 if report.ok else 1
