"""`hpcenv export`: environment.yml, or a lock file with --lock."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from hpcenv.cli.context import Context
from hpcenv.cli.envarg import pick_env, require_env


def export(ctx: Context, args: Namespace) -> None:
    from hpcenv.envs.info import export_lock, export_yaml

    env, _ = pick_env(
        ctx, [args.env] if args.env else [], args.name, args.prefix, specs_follow=False
    )
    env = require_env(env, "export")
    settings, layout = ctx.settings(), ctx.layout()
    output = Path(args.output) if args.output else None
    if args.lock:
        out = output or Path(f"{Path(env).name}.lock")
        export_lock(layout, settings, env, out)
        ctx.info(f"wrote {out}")
        return
    text = export_yaml(layout, settings, env)
    if output:
        output.write_text(text)
        ctx.info(f"wrote {output}")
    else:
        sys.stdout.write(text)
