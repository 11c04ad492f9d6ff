"""`hpcenv share` (group environments)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpcenv.cli.app import NAME_OPTION, PREFIX_OPTION, app, emit_json, env_arg, info, settings


@app.command()
def share(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    group: str = typer.Option(..., "--group", "-g", help="Unix group to share with."),
    group_writable: bool = typer.Option(
        False, "--group-writable", help="Let the group change it too."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Share an environment with a Unix group: group-owned, setgid, group-readable (writable
    only with --group-writable), never world-writable; listed for members by `hpcenv list`.

    Example:  hpcenv share myenv --group mylab
    """
    from hpcenv import envs, sharing
    from hpcenv.storage import ensure_state_dir, layout_from

    s = settings(ctx)
    layout = layout_from(s)
    env, _ = env_arg(ctx, env, name, prefix)
    env_name, where = envs.resolve(layout, env)
    ensure_state_dir(layout)
    report = sharing.share(
        where,
        env_name or where.name,
        group,
        group_writable=group_writable,
        shared_root=s.shared_root,
        lock_path=layout.lock_path,
    )
    if json_out:
        emit_json("share", report)
        return
    mode = "read and write" if group_writable else "read-only"
    print(f"shared {report.name} with group {report.group} ({mode}): {report.prefix}")
    if report.copied:
        info(ctx, f"gave {report.copied} linked files their own copies (the cache is unchanged)")
    if report.leftovers_removed:
        info(ctx, f"removed {report.leftovers_removed} temp copies of an interrupted share")
    for path in report.opened_for_search:
        info(ctx, f"let others pass through (search only, no listing): {path}")
    if report.entry is None:
        info(ctx, "no shared_root in the site config: members use the path above")
