"""`hpcenv export`: environment.yml, or a lock file with --lock."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from hpcenv.cli.context import Context, warn
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
        result = export_lock(layout, settings, env, out)
        for what in result.left_out:
            warn(f"not in the lock: PyPI package {what}")
        pypi = f" and {result.pypi} PyPI packages" if result.pypi else ""
        ctx.info(f"wrote {out}: {result.conda} conda packages{pypi}")
        return
    text = export_yaml(layout, settings, env)
    if output:
        output.write_text(text)
        ctx.info(f"wrote {output}")
    else:
        sys.stdout.write(text)
