"""How create, install and remove say what they did (or would do): tables, one-line summaries,
the GPU line, what recovery of an interrupted operation did."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from hpcenv.cli.context import Context, emit_json, warn

if TYPE_CHECKING:
    from hpcenv.envs import ChangeReport, Recovered
    from hpcenv.gpu import GpuReport
    from hpcenv.sitelink import SiteUse


def say_recovered(ctx: Context, recovered: list[Recovered] | tuple[Recovered, ...]) -> None:
    for r in recovered:
        if r.action == "failed":
            warn(f"{r.path}: {r.detail}")
        elif r.action == "removed" and r.detail == "an interrupted build":
            ctx.info(f"removed the leftover of an interrupted create: {r.path}")
        elif r.action == "removed":
            ctx.info(f"removed {r.detail}, left by an interrupted run: {r.path}")
        elif r.action == "restored":
            ctx.info(f"restored {r.prefix} ({r.detail}) from {r.path}")
        else:
            what = r.action.removeprefix("finished-")
            ctx.info(f"finished the interrupted {what} of {r.prefix}")


def print_changes(report: ChangeReport, stream: IO[str]) -> None:
    from hpcenv.report import print_table

    rows = [
        (
            c.kind,
            c.name,
            c.old or "",
            c.new or "",
            "not named" if c.needs_consent else "",
        )
        for c in report.changes
    ]
    title = "Would change (dry run)" if report.dry_run else "Changes"
    print_table(title, ["change", "package", "from", "to", ""], rows, stderr=stream is sys.stderr)


def emit(ctx: Context, report: ChangeReport, json_out: bool) -> None:
    from hpcenv.report import human_bytes, print_table

    for message in report.warnings:
        warn(message)
    say_recovered(ctx, report.recovered)
    if json_out:
        emit_json(report.command, report)
        return
    verbose = bool(ctx.verbose)
    where = report.name or report.prefix
    if report.command == "create":
        # the table is the plan of a dry run; after a real change it is detail (-v), as in uv
        if report.packages and (report.dry_run or verbose):
            rows = [(p.name, p.version, p.build, p.channel) for p in report.packages]
            title = "Would install (dry run)" if report.dry_run else None
            print_table(title, ["package", "version", "build", "channel"], rows)
    elif report.changes and (report.dry_run or verbose):
        print_changes(report, sys.stdout)
    if report.gpu is not None and (report.gpu.cuda_builds or report.gpu.cpu_builds):
        print(gpu_line(report.gpu))
    if report.site is not None:
        print(site_line(report.site))
    if report.relaxed:
        print(f"note: {report.relaxed}")
    if report.dry_run:
        if report.command != "create":
            print(_summary(report))
        if report.command == "install" and report.pip:
            print("nothing was changed")
        else:
            print(f"download: {human_bytes(report.download_bytes)}; nothing was changed")
    elif report.command == "create":
        if report.resumed:
            print(f"created {where} at {report.prefix} (finished an interrupted create)")
            return
        pypi = f" and {len(report.pypi)} from PyPI" if report.pypi else ""
        kind = "image env " if _is_image(report.prefix) else ""
        print(
            f"created {kind}{where} at {report.prefix}: {len(report.packages)} packages{pypi}"
            f" in {report.seconds:.2f} s"
        )
        print(f'activate: eval "$(hpcenv activate {where})"')
    elif report.removed == ("(environment)",):
        print(f"removed environment {where}")
        for kernel in report.kernels_removed:
            print(f"removed its Jupyter kernel {kernel}")
    else:
        print(_summary(report))


def _summary(report: ChangeReport) -> str:
    if report.pypi or (report.pip and not report.changes):
        added = ", ".join(f"+{p}" for p in report.pypi) or "nothing to change"
        return f"{report.command}: {report.name or report.prefix}: PyPI {added}"
    changed = ", ".join(c.describe() for c in report.changes)
    return f"{report.command}: {report.name or report.prefix}: {changed or 'nothing to change'}"


def site_line(site: SiteUse) -> str:
    """How packages came from the site's package caches, and what that saved."""
    from hpcenv.report import human_bytes

    how = {
        "reflink": "reflinked (shared extents: no new blocks)",
        "hardlink": "hardlinked (no new blocks)",
        "copy": "copied (this filesystem cannot share them with you)",
    }.get(site.method, f"linked ({', '.join(f'{k}: {v}' for k, v in site.methods.items())})")
    saved = f"{human_bytes(site.not_downloaded_bytes)} not downloaded"
    if site.not_duplicated_bytes:
        saved += f", {human_bytes(site.not_duplicated_bytes)} not duplicated"
    return (
        f"site package cache: {site.packages} package(s) from {', '.join(site.layers)}, "
        f"{how}; {saved}"
    )


def gpu_line(gpu_report: GpuReport) -> str:
    cuda = ", ".join(f"{p.name} {p.build}" for p in gpu_report.cuda_builds) or "none"
    cpu = ", ".join(f"{p.name} {p.build}" for p in gpu_report.cpu_builds)
    status = {"ok": "satisfied", "too_old": "NOT satisfied", "unknown": "unknown"}.get(
        gpu_report.driver_status, gpu_report.driver_status
    )
    line = f"GPU: CUDA builds: {cuda}"
    if gpu_report.required_cuda:
        driver = gpu_report.driver_version or "unknown"
        line += (
            f"; need driver CUDA >= {gpu_report.required_cuda}, GPU nodes have {driver}: {status}"
        )
    if cpu:
        line += f"; CPU-only builds: {cpu}"
    return line


def _is_image(prefix: str) -> bool:
    from hpcenv.registry import is_image

    return is_image(Path(prefix))
