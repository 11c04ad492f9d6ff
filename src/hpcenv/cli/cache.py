"""`hpcenv cache fill | list`: the site's read-only package caches."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from hpcenv.cli.context import Context, emit_json, warn
from hpcenv.errors import UsageError


def cache(ctx: Context, args: Namespace) -> None:
    if args.action == "fill":
        if not args.specs:
            raise UsageError("give the package specs to fill", hint="hpcenv cache fill SPEC...")
        _fill(ctx, args)
        return
    given = [f for f, v in (("SPEC", args.specs), ("-c", args.channel), ("--to", args.to),
                            ("--cuda", args.cuda)) if v]  # fmt: skip
    if given:
        raise UsageError(f"cache list takes no {given[0]}", hint="hpcenv cache list [--json]")
    _list(ctx, args)


def _fill(ctx: Context, args: Namespace) -> None:
    from hpcenv import sitefill
    from hpcenv.report import human_bytes

    report = sitefill.fill(
        ctx.settings(),
        args.specs,
        channels=list(args.channel or []),
        to=Path(args.to) if args.to else None,
        cuda=args.cuda,
        on_wait=lambda pid: ctx.info(f"waiting for another cache fill (pid {pid})..."),
    )
    if report.unused_because:
        warn(f"users will not link from {report.layer}: {report.unused_because}")
    if not report.configured:
        warn(
            f"{report.layer} is not in package_caches: add it to the site config "
            "so users link from it"
        )
    if args.json_out:
        emit_json("cache fill", report)
        return
    for p in report.packages:
        if p.status != "present":
            print(f"{p.status.split(':')[0]:9} {p.name}" + _why(p.status))
    present = sum(p.status == "present" for p in report.packages)
    print(
        f"{report.layer}: {report.added} package(s) added, {present} already there; "
        f"downloaded {human_bytes(report.downloaded_bytes)}"
    )


def _why(status: str) -> str:
    return f" ({status.split(': ', 1)[1]})" if ": " in status else ""


def _list(ctx: Context, args: Namespace) -> None:
    from hpcenv import sitecache
    from hpcenv.report import human_bytes, print_table
    from hpcenv.storage import layout_from

    settings = ctx.settings()
    try:
        layout = layout_from(settings)
    except UsageError:
        layout = None  # an admin without a storage area still sees the layers
    report = sitecache.list_caches(settings, layout)
    for message in report.warnings:
        warn(message)
    if args.json_out:
        emit_json("cache list", report)
        return
    rows = [
        (
            r.kind,
            r.path,
            "yes" if r.trusted else f"no: {r.why}",
            r.packages,
            human_bytes(r.apparent_bytes),
            human_bytes(r.disk_bytes),
        )
        for r in (*report.layers, *([report.own] if report.own else []))
    ]
    print_table(None, ["cache", "path", "used", "packages", "size", "on disk"], rows)
    if not report.layers:
        print("no site package cache is configured (package_caches in the site config)")
    for r in report.layers:
        if r.contents:
            print(f"{r.path}:")
            for p in r.contents:
                print(f"  {p.name}" + ("" if p.status == "ok" else f"  [{p.status}]"))
