"""`hpcenv pack` and `hpcenv stage`: the env as one archive, and its node-local copy."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from hpcenv.cli.context import Context, emit_json
from hpcenv.cli.envarg import env_arg


def pack(ctx: Context, args: Namespace) -> None:
    from hpcenv.jobs import pack_env

    env, _ = env_arg(ctx, "pack", args.env, args.name, args.prefix)
    result = pack_env(ctx.layout(), env, Path(args.output) if args.output else None)
    if args.json_out:
        emit_json("pack", result)
    else:
        print(result.path)
        ctx.info("reused the cached pack" if result.reused else "packed")


def stage(ctx: Context, args: Namespace) -> None:
    from hpcenv.jobs import stage_env

    env, _ = env_arg(ctx, "stage", args.env, args.name, args.prefix)
    to = Path(args.to) if args.to else None
    print(stage_env(ctx.layout(), ctx.settings(), env, to))
