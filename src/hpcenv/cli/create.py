"""`hpcenv create`."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from hpcenv.cli.changes import emit
from hpcenv.cli.context import Context


def create(ctx: Context, args: Namespace) -> int:
    from hpcenv import envs

    req = envs.create_request(
        args.args,
        name=args.name,
        prefix=Path(args.prefix) if args.prefix else None,
        file=Path(args.file) if args.file else None,
        channels=args.channel or (),
        cuda=args.cuda,
        gpu=args.gpu,
        dry_run=args.dry_run,
        force=args.force,
        allow_home=args.allow_home,
        image=args.image,
    )
    consent = req.consent()
    if consent is not None:
        if not ctx.agree(consent, args.yes):
            ctx.info("nothing changed")
            return 2
        if req.old_recipe is not None and req.old_recipe.note:
            ctx.info(req.old_recipe.note)
        req = req.switched()
    report = envs.create(
        ctx.layout(), ctx.settings(), req, progress=ctx.progress, on_wait=ctx.waiting
    )
    emit(ctx, report, args.json_out)
    return 0
