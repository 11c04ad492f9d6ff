"""`hpcenv cache fill | list`: the site's read-only package caches."""

from __future__ import annotations

from pathlib import Path

import typer

from hpcenv.cli.app import app, emit_json, info, settings, warn

cache_app = typer.Typer(
    help="The site's read-only package caches (layers users link from).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(cache_app, name="cache")


@cache_app.command("fill")
def fill(
    ctx: typer.Context,
    specs: list[str] = typer.Argument(..., help="Package specs (as for create)."),
    channel: list[str] = typer.Option(None, "-c", "--channel", help="Channel (repeatable)."),
    to: Path = typer.Option(
        None, "--to", help="The layer to fill (default: the first of package_caches)."
    ),
    cuda: str = typer.Option(None, "--cuda", help="Solve for GPU nodes with this CUDA."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """For admins: put packages (and their dependencies) into a site package cache, each one
    whole before it appears, readable by everyone and writable by no one else.

    Run it as root or as the site config's `package_cache_owner`.

    Example:  hpcenv cache fill pytorch numpy -c conda-forge
              hpcenv cache fill "pytorch * *cuda*" --cuda 12.4 --to /apps/hpcenv/pkgs
    """
    from hpcenv import sitefill
    from hpcenv.report import human_bytes

    s = settings(ctx)
    report = sitefill.fill(
        s,
        specs,
        channels=list(channel or []),
        to=to,
        cuda=cuda,
        on_wait=lambda pid: info(ctx, f"waiting for another cache fill (pid {pid})..."),
    )
    if report.unused_because:
        warn(f"users will not link from {report.layer}: {report.unused_because}")
    if not report.configured:
        warn(
            f"{report.layer} is not in package_caches: add it to the site config "
            "so users link from it"
        )
    if json_out:
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


@cache_app.command("list")
def list_(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show the site package caches (used or why not, size, packages) and your own cache.

    Example:  hpcenv cache list
              hpcenv cache list --json | jq '.result.layers[] | {path, trusted, packages}'
    """
    from hpcenv import sitecache
    from hpcenv.errors import UsageError
    from hpcenv.report import human_bytes, print_table
    from hpcenv.storage import layout_from

    s = settings(ctx)
    try:
        layout = layout_from(s)
    except UsageError:
        layout = None  # an admin without a storage area still sees the layers
    report = sitecache.list_caches(s, layout)
    for message in report.warnings:
        warn(message)
    if json_out:
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
