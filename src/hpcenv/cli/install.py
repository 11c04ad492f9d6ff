"""`hpcenv install` and `hpcenv remove` (packages, or with none the whole env)."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from hpcenv.cli.changes import emit, print_changes, say_recovered
from hpcenv.cli.context import Context
from hpcenv.cli.envarg import pick_env, require_env
from hpcenv.errors import UsageError


def install(ctx: Context, args: Namespace) -> int:
    env, specs = pick_env(ctx, args.args, args.name, args.prefix)
    env = require_env(env, "install")
    if args.pip or args.requirement:
        return _pip_install(ctx, args, env, specs)
    code = _update(
        ctx, args, env, add=specs, channels=args.channel or (), cuda=args.cuda, gpu=args.gpu
    )
    if not specs and code == 0:  # also finish an interrupted PyPI install
        from hpcenv import pipstep

        layout, settings = ctx.layout(), ctx.settings()
        report = pipstep.finish_interrupted(layout, settings, env, on_wait=ctx.waiting)
        if report is not None:
            emit(ctx, report, args.json_out)
    return code


def _pip_install(ctx: Context, args: Namespace, env: str, requirements: list[str]) -> int:
    """`install ENV --pip REQ... [-r FILE]`: PyPI packages, through uv, never over conda's."""
    from hpcenv import pipstep

    if args.channel or args.gpu or args.cuda:
        raise UsageError(
            "-c, --gpu and --cuda are for conda packages, not with --pip",
            hint="install the conda packages first, then the PyPI ones with --pip",
        )
    files = [Path(f) for f in args.requirement or ()]
    report = pipstep.install_into(
        ctx.layout(), ctx.settings(), env, requirements, files=files, dry_run=args.dry_run,
        on_wait=ctx.waiting,
    )  # fmt: skip
    emit(ctx, report, args.json_out)
    return 0


def remove(ctx: Context, args: Namespace) -> int:
    from hpcenv import envs
    from hpcenv.registry import resolve

    explicit = args.name is not None or args.prefix is not None
    env, specs = pick_env(ctx, args.args, args.name, args.prefix, use_active=True)
    if env is None or (not specs and not explicit and not args.args):
        raise UsageError(
            "give the environment to remove (NAME, -n NAME or -p PREFIX)",
            hint="see `hpcenv remove --help`",
        )
    if specs:
        return _update(ctx, args, env, drop=specs)
    layout = ctx.layout()
    if args.dry_run:
        _, where = resolve(layout, env)
        print(f"would delete environment {env} at {where}; nothing was changed")
        return 0
    if not ctx.agree(envs.delete_consent(env), args.yes):
        ctx.info("nothing changed")
        return 0
    report = envs.delete(layout, ctx.settings(), env, on_wait=ctx.waiting)
    emit(ctx, report, args.json_out)
    return 0


def _update(ctx: Context, args: Namespace, env: str, **change) -> int:
    """Plan, show, ask where the plan changes packages nobody named, apply."""
    from hpcenv import envs

    layout, settings = ctx.layout(), ctx.settings()
    say_recovered(ctx, envs.recover_locked(layout, settings))
    plan = envs.plan_update(layout, settings, env, dry_run=args.dry_run, **change)
    if plan.report.dry_run:
        emit(ctx, plan.report, args.json_out)
        return 0
    consent = plan.consent()
    if consent is not None:
        if not args.yes and sys.stdin.isatty():
            print_changes(plan.report, sys.stderr)
        if not ctx.agree(consent, args.yes):
            ctx.info("nothing changed")
            return 2
    report = envs.apply_update(layout, settings, plan, progress=ctx.progress, on_wait=ctx.waiting)
    emit(ctx, report, args.json_out)
    return 0
