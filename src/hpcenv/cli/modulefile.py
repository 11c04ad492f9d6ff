"""`hpcenv modulefile`: an Lmod modulefile for an env, or (--self) for hpcenv itself."""

from __future__ import annotations

import shutil
import sys
from argparse import Namespace
from pathlib import Path

from hpcenv.cli.context import Context
from hpcenv.cli.envarg import env_arg


def modulefile(ctx: Context, args: Namespace) -> None:
    from hpcenv import __version__
    from hpcenv.errors import UsageError
    from hpcenv.modulefile import module_for_env, module_for_hpcenv, write_modulefile

    if args.self_:
        exe = shutil.which("hpcenv") or sys.argv[0]
        module = module_for_hpcenv(ctx.settings(), Path(exe).resolve(), __version__)
    elif args.env is None and args.name is None and args.prefix is None:
        raise UsageError("give an environment NAME, or --self", hint="hpcenv modulefile myenv")
    else:
        env, _ = env_arg(ctx, "modulefile", args.env, args.name, args.prefix)
        module = module_for_env(ctx.layout(), ctx.settings(), env)
    if args.to is None:
        sys.stdout.write(module.text)
        return
    to = Path(args.to)
    path = write_modulefile(module.text, to, module.name)
    if args.self_:
        ctx.info(f"wrote {path}; users load it with: module use {to.parent}; module load {to.name}")
    else:
        ctx.info(f"wrote {path}; load it with: module use {to}; module load {module.name}")
