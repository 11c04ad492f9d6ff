"""`hpcenv jobscript` (print the sbatch script) and `hpcenv submit` (hand it to sbatch)."""

from __future__ import annotations

import sys
from argparse import Namespace

from hpcenv.cli.context import Context, emit_json
from hpcenv.cli.envarg import env_arg


def _script(ctx: Context, args: Namespace, command: str) -> str:
    from hpcenv.jobs import JobOptions, build_jobscript

    env, words = env_arg(
        ctx, command, args.env, args.name, args.prefix, [*args.command, *args.tail]
    )
    options = JobOptions(
        time=args.time,
        mem=args.mem,
        cpus=args.cpus,
        gpus=args.gpus,
        partition=args.partition,
        nodes=args.nodes,
        array=args.array,
        output=args.output,
        job_name=args.job_name,
        stage=args.stage,
        wrap=args.wrap,
    )
    return build_jobscript(ctx.layout(), ctx.settings(), env, words, options)


def jobscript(ctx: Context, args: Namespace) -> None:
    sys.stdout.write(_script(ctx, args, "jobscript"))


def submit(ctx: Context, args: Namespace) -> int:
    from hpcenv.jobs import submit as submit_job

    result = submit_job(_script(ctx, args, "submit"), wait=args.wait)
    if args.json_out:
        emit_json("submit", result)
    else:
        print(result.job_id)
        if result.output:
            ctx.info(f"log: {result.output}")
    return result.exit_code if args.wait and result.exit_code else 0
