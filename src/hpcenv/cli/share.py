"""`hpcenv share`: give an environment to a Unix group."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.context import Context, emit_json
from hpcenv.cli.envarg import env_arg


def share(ctx: Context, args: Namespace) -> None:
    from hpcenv.sharing import share_env

    env, _ = env_arg(ctx, "share", args.env, args.name, args.prefix)
    report = share_env(
        ctx.layout(), ctx.settings(), env, args.group, group_writable=args.group_writable
    )
    if args.json_out:
        emit_json("share", report)
        return
    mode = "read and write" if args.group_writable else "read-only"
    print(f"shared {report.name} with group {report.group} ({mode}): {report.prefix}")
    if report.copied:
        ctx.info(f"gave {report.copied} linked files their own copies (the cache is unchanged)")
    if report.leftovers_removed:
        ctx.info(f"removed {report.leftovers_removed} temp copies of an interrupted share")
    for path in report.opened_for_search:
        ctx.info(f"let others pass through (search only, no listing): {path}")
    if report.entry is None:
        ctx.info("no shared_root in the site config: members use the path above")
