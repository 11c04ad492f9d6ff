"""`hpcenv kernel` (Jupyter kernels that activate the env: JupyterHub, Open OnDemand)."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.context import Context, emit_json
from hpcenv.cli.envarg import env_arg
from hpcenv.errors import UsageError


def kernel(ctx: Context, args: Namespace) -> None:
    from hpcenv import kernel as kernels

    if args.list_:
        if args.env is not None or args.name is not None or args.prefix is not None or args.remove:
            raise UsageError("--list takes no environment", hint="hpcenv kernel --list")
        found = kernels.list_kernels()
        if args.json_out:
            emit_json("kernel", found)
            return
        _print_list(ctx, found)
        return
    env, _ = env_arg(ctx, "kernel", args.env, args.name, args.prefix)
    if args.remove:
        if args.display_name is not None or args.env_var:
            raise UsageError("--remove takes no --display-name or --env")
        report = kernels.remove_kernel(env)
    else:
        report = kernels.write_kernel(
            ctx.layout(), ctx.settings(), env, display_name=args.display_name,
            env_vars=list(args.env_var or []),
        )  # fmt: skip
    if args.json_out:
        emit_json("kernel", report)
        return
    if report.action == "removed":
        for k in report.kernels:
            print(f"removed the Jupyter kernel {k.name} ({k.directory})")
    else:
        [k] = report.kernels
        verb = "rewrote" if report.replaced else "wrote"
        print(f"{verb} the Jupyter kernel {k.name}: {k.directory}")
        ctx.info(f'pick "{k.display_name}" in Jupyter (reload the page if it is open)')
    for warning in report.warnings:
        ctx.info(f"hpcenv: warning: {warning}")


def _print_list(ctx: Context, found) -> None:
    from hpcenv.kernel import removal_command
    from hpcenv.report import print_table

    if not found.kernels:
        ctx.info(f"no kernels written by hpcenv in {found.data_dir / 'kernels'}")
        return
    state = {True: "yes", False: "GONE", None: "unreadable"}
    rows = [
        (k.name, k.display_name, k.env or str(k.prefix), state[k.env_exists]) for k in found.kernels
    ]
    print_table(None, ["kernel", "display name", "environment", "exists"], rows)
    gone = [k for k in found.kernels if k.env_exists is False]
    if gone:
        ctx.info("remove kernels whose env is gone: " + " && ".join(map(removal_command, gone)))
