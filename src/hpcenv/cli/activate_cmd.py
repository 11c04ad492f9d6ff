"""`hpcenv activate` (code for eval), `hpcenv run` (exec inside the env)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from hpcenv.cli.app import NAME_OPTION, PREFIX_OPTION, app, env_arg, settings


def _resolve(ctx: typer.Context, name: str):
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    s = settings(ctx)
    layout = layout_from(s)
    env = resolve_for_use(layout, name)
    return s, layout, env.name or str(env.prefix), env.prefix


@app.command()
def activate(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    shell: str = typer.Option(None, "--shell", help="bash, zsh, fish or tcsh (default: $SHELL)."),
) -> None:
    """Print code that activates an environment in this shell; nothing else is touched.

    Example:  eval "$(hpcenv activate myenv)"            # bash, zsh
              hpcenv activate myenv --shell fish | source
              eval "`hpcenv activate myenv --shell tcsh`"
    Undo with `deactivate`. In job scripts, source PREFIX/etc/hpcenv/activate.sh instead.
    If it fails, what it prints is `false`, so `set -e` scripts stop at the eval.
    """
    from hpcenv.activate import activation_script
    from hpcenv.cli.app_shell import default_shell
    from hpcenv.cli.fast import eval_fails_on_error, hint_on_a_terminal

    shell = default_shell() if shell is None else shell
    with eval_fails_on_error():
        env, _ = env_arg(ctx, env, name, prefix)
        s, _, env_name, where = _resolve(ctx, env)
        sys.stdout.write(
            activation_script(where, name=env_name, shell=shell, no_user_site=s.no_user_site)
        )
    hint_on_a_terminal(env, shell)


@app.command(hidden=True)
def deactivate(shell: str = typer.Option("tcsh", "--shell")) -> None:
    """Restoring code for tcsh's `deactivate` alias (bash, zsh and fish need no Python)."""
    from hpcenv.activate import tcsh_deactivation

    sys.stdout.write(tcsh_deactivation(os.environ))


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    command: list[str] = typer.Argument(None, help="The command and its arguments (after --)."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
) -> None:
    """Run a command inside an environment without activating it; its exit code is returned
    and signals reach it (hpcenv execs it).

    Example:  hpcenv run myenv -- python train.py --epochs 3
    """
    from hpcenv.activate import run_in_env

    env, argv = env_arg(ctx, env, name, prefix, list(command or []))
    s, layout, env_name, where = _resolve(ctx, env)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    run_in_env(where, env_name, argv, state_dir=layout.state_dir, no_user_site=s.no_user_site)
