"""`hpcenv modulefile` (Lmod modulefiles for an env, or for hpcenv itself)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpcenv.cli.app import NAME_OPTION, PREFIX_OPTION, app, env_arg, info, settings


@app.command()
def modulefile(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path (omit with --self)."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    to: Path = typer.Option(None, "--to", help="Write DIR/NAME.lua instead of printing it."),
    self_: bool = typer.Option(False, "--self", help="A modulefile for hpcenv itself (admins)."),
) -> None:
    """Print (or write with --to) an Lmod modulefile: `module use DIR; module load NAME`.

    Example:  hpcenv modulefile myenv --to ~/modules && module use ~/modules && module load myenv
              hpcenv modulefile --self --to /apps/modules/hpcenv     # for admins
    """
    import shutil
    import sys

    from hpcenv import __version__
    from hpcenv.errors import UsageError
    from hpcenv.modulefile import env_modulefile, self_modulefile, write_modulefile
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

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
    elif env is None and name is None and prefix is None:
        raise UsageError("give an environment NAME, or --self", hint="hpcenv modulefile myenv")
    else:
        env, _ = env_arg(ctx, env, name, prefix)
        usable = resolve_for_use(layout_from(s), env, mount=False)
        if usable.image is not None:
            from hpcenv.errors import RefusedError

            raise RefusedError(
                f"{env} is an image env: a module cannot mount it on the node that loads it",
                hint=f'use `eval "$(hpcenv activate {env})"` or `hpcenv jobscript {env}`',
            )
        module = usable.name or usable.prefix.name
        text = env_modulefile(usable.prefix, name=module, no_user_site=s.no_user_site)
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
