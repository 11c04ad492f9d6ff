"""`hpcenv selftest`: the whole flow, offline, in a sandbox."""

from __future__ import annotations

import sys

import typer

from hpcenv.cli.app import app, emit_json


@app.command()
def selftest(
    keep: bool = typer.Option(False, "--keep", help="Leave the sandbox for inspection."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Run the whole flow offline in a throwaway HOME and storage: setup, create (also a GPU
    env for CUDA 12.4), activate, run, jobscript/submit, usage, clean, doctor.

    Exit 0 only if every step passed.

    Example:  hpcenv selftest --keep
    """
    from hpcenv.selftest import run_selftest

    def live(step) -> None:
        if not json_out:
            mark = "-" if step.skipped else ("✓" if step.ok else "✗")
            print(f"{mark} {step.name:<11} {step.seconds:6.2f} s  {step.detail}", file=sys.stderr)

    report = run_selftest(keep=keep, on_step=live)
    if json_out:
        emit_json("selftest", report)
    else:
        from hpcenv.report import print_table

        rows = [
            ("-" if s.skipped else ("✓" if s.ok else "✗"), s.name, f"{s.seconds:.2f} s", s.detail)
            for s in report.steps
        ]
        print_table("hpcenv selftest", ["", "step", "time", "detail"], rows)
        if report.kept:
            print(f"sandbox kept: {report.sandbox}")
        failed = [s.name for s in report.steps if not s.ok]
        print("all steps passed" if not failed else f"FAILED: {', '.join(failed)}")
    if not report.ok:
        raise typer.Exit(1)
