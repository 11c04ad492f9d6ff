"""`hpcenv activate` (code for eval), `hpcenv run` (exec inside the env)."""

from __future__ import annotations

import os
import sys

import typer

from hpcenv.cli.app import app, settings
from hpcenv.cli.app_shell import default_shell


def _resolve(ctx: typer.Context, name: str):
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    s = settings(ctx)
    env = resolve_for_use(layout_from(s), name)
    return s, env.name or str(env.prefix), env.prefix


@app.command()
def activate(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    shell: str = typer.Option(None, "--shell", help="bash, zsh, fish or tcsh (default: $SHELL)."),
) -> None:
    """Print code that activates an environment in this shell; nothing else is touched.

    Example:  eval "$(hpcenv activate myenv)"            # bash, zsh
              hpcenv activate myenv --shell fish | source
              eval "`hpcenv activate myenv --shell tcsh`"
    Undo with `deactivate`. In job scripts, source PREFIX/etc/hpcenv/activate.sh instead.
    """
    from hpcenv.activate import activation_script

    s, env_name, prefix = _resolve(ctx, name)
    sys.stdout.write(
        activation_script(
            prefix, name=env_name, shell=shell or default_shell(), no_user_site=s.no_user_site
        )
    )


@app.command(hidden=True)
def deactivate(shell: str = typer.Option("tcsh", "--shell")) -> None:
    """Restoring code for tcsh's `deactivate` alias (bash, zsh and fish need no Python)."""
    from hpcenv.activate import tcsh_deactivation

    sys.stdout.write(tcsh_deactivation(os.environ))


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),
) -> None:
    """Run a command inside an environment without activating it; its exit code is returned
    and signals reach it (hpcenv execs it).

    Example:  hpcenv run myenv -- python train.py --epochs 3
    """
    from hpcenv.activate import run_in_env

    s, env_name, prefix = _resolve(ctx, name)
    argv = list(command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    run_in_env(prefix, env_name, argv, no_user_site=s.no_user_site)
