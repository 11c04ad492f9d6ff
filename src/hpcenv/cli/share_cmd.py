"""`hpcenv share` (group environments) and `hpcenv modulefile` (Lmod)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpcenv.cli.app import app, emit_json, info, settings


@app.command()
def share(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
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
    from hpcenv import envs, site
    from hpcenv.storage import layout_from

    s = settings(ctx)
    env_name, prefix = envs.resolve(layout_from(s), name)
    report = site.share(
        prefix,
        env_name or prefix.name,
        group,
        group_writable=group_writable,
        shared_root=s.shared_root,
    )
    if json_out:
        emit_json("share", report)
        return
    mode = "read and write" if group_writable else "read-only"
    print(f"shared {report.name} with group {report.group} ({mode}): {report.prefix}")
    for path in report.opened_for_search:
        info(ctx, f"let others pass through (search only, no listing): {path}")
    if report.entry is None:
        info(ctx, "no shared_root in the site config: members use the path above")


@app.command()
def modulefile(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Environment name or path (omit with --self)."),
    to: Path = typer.Option(None, "--to", help="Write DIR/NAME.lua instead of printing it."),
    self_: bool = typer.Option(False, "--self", help="A modulefile for hpcenv itself (admins)."),
) -> None:
    """Print (or write with --to) an Lmod modulefile: `module use DIR; module load NAME`.

    Example:  hpcenv modulefile myenv --to ~/modules && module use ~/modules && module load myenv
              hpcenv modulefile --self --to /apps/modules/hpcenv     # for admins
    """
    import shutil
    import sys

    from hpcenv import __version__, envs
    from hpcenv.errors import UsageError
    from hpcenv.modulefile import env_modulefile, self_modulefile, write_modulefile
    from hpcenv.storage import layout_from

    s = settings(ctx)
    if self_:
        exe = shutil.which("hpcenv") or sys.argv[0]
        text = self_modulefile(
            hpcenv_bin=Path(exe).resolve(),
            version=__version__,
            storage_var=s.storage_var,
            site_config=s.site_config if s.site_config and s.site_config.exists() else None,
        )
        module = __version__
    elif name is None:
        raise UsageError("give an environment NAME, or --self", hint="hpcenv modulefile myenv")
    else:
        env_name, prefix = envs.resolve(layout_from(s), name)
        module = env_name or prefix.name
        text = env_modulefile(prefix, name=module, no_user_site=s.no_user_site)
    if to is None:
        sys.stdout.write(text)
        return
    path = write_modulefile(text, to, module)
    info(
        ctx,
        f"wrote {path}; load it with: module use {to}; module load {module}"
        if not self_
        else f"wrote {path}; users load it with: module use {to.parent}; module load {to.name}",
    )
