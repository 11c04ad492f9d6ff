"""`hpcenv run ENV -- CMD`: exec the command inside the env."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.context import Context
from hpcenv.cli.envarg import env_arg


def run(ctx: Context, args: Namespace) -> int:
    from hpcenv.run import run_command

    words = list(args.words)
    env, argv = env_arg(ctx, "run", words[0] if words else None, args.name, args.prefix, words[1:])
    return run_command(ctx.layout(), ctx.settings(), env, argv)
