"""`hpcenv image` (turn an env into one squashfs image) and `hpcenv umount`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from hpcenv.cli.app import (
    NAME_OPTION,
    PREFIX_OPTION,
    app,
    confirm,
    emit_json,
    env_arg,
    info,
    settings,
    warn,
)


def _context(ctx: typer.Context):
    from hpcenv.storage import layout_from

    s = settings(ctx)
    return s, layout_from(s)


@app.command("image")
def image_(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would happen; change nothing."),
    force: bool = typer.Option(
        False, "--force", help="Drop files that no package accounts for (they are listed)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting the tree."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Turn an env into an image env: its packages are installed afresh at a node-local mount
    path and packed into one squashfs file, which replaces the env's directory tree in storage
    (the tree is deleted). Run it while nothing runs from the env.

    Example:  hpcenv image myenv --yes && hpcenv run myenv -- python -c "import numpy"
    """
    from hpcenv import images
    from hpcenv.report import human_bytes

    env, _ = env_arg(ctx, env, name, prefix)
    s, layout = _context(ctx)
    plan = images.plan_convert(layout, s, env)
    where = plan.name or str(plan.prefix)
    if dry_run:
        report = images.ConvertReport(
            plan.name, str(plan.prefix), plan.files, 2, "", 0, 0, plan.unaccounted, dry_run=True
        )
        if json_out:
            emit_json("image", report)
            return
        print(f"would replace the {plan.files} files of {where} by one image; nothing changed")
        for path in plan.unaccounted:
            print(f"  not in the image (no package has it): {path}")
        return
    if not plan.unaccounted or force:
        question = f"Replace the {plan.files} files of {where} by one image (the tree is deleted)?"
        if not confirm(question, yes):
            info(ctx, "nothing changed")
            raise typer.Exit(0)
    report = images.convert(layout, s, plan, drop=force, progress=sys.stderr.isatty())
    for message in report.warnings:
        warn(message)
    if json_out:
        emit_json("image", report)
        return
    for path in report.dropped:
        info(ctx, f"dropped (no package had it): {path}")
    print(
        f"{where} is an image env now: {report.image_files} files in "
        f"{human_bytes(report.image_bytes)} ({report.image}); {report.files_after} files in "
        f"storage instead of {report.files_before}, in {report.seconds:.1f} s"
    )


@app.command()
def umount(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Image env name or path (default: all of yours)."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Unmount image envs on this node (those of ENV, or all of yours) that nothing uses; a
    running `hpcenv run` or job keeps its mount. Mounts whose squashfuse died are cleaned.

    Example:  hpcenv umount myenv
    """
    from hpcenv import images

    target = None
    if env is not None or name is not None or prefix is not None:
        target, _ = env_arg(ctx, env, name, prefix)
    s, layout = _context(ctx)
    report = images.unmount(layout, s, target)
    if json_out:
        emit_json("umount", report)
    else:
        for t in report.tidied:
            if t.what == "stale-mount":
                info(ctx, f"cleaned {t.path} (its squashfuse had died)")
            elif t.what == "dead-build":
                info(ctx, f"removed {t.path} (left by an interrupted build)")
        for r in report.results:
            if r.status == "unmounted":
                print(f"unmounted {r.mount}")
            elif r.status == "in-use":
                print(f"{r.mount} is in use (a command or job runs from it); left mounted")
            else:
                print(f"{r.mount}: {r.status}")
        if not report.results:
            print("nothing mounted" + (f" of {target}" if target else ""))
    if report.busy:
        raise typer.Exit(1)
