"""`hpcenv kernel` (Jupyter kernels that activate the env: JupyterHub, Open OnDemand)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpcenv.cli.app import NAME_OPTION, PREFIX_OPTION, app, emit_json, env_arg, info, settings


@app.command()
def kernel(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    display_name: str = typer.Option(
        None,
        "--display-name",
        help="What Jupyter's launcher shows (default: Python (hpcenv: NAME)).",
    ),
    env_var: list[str] = typer.Option(
        None, "--env", help="KEY=VALUE set for the kernel before the env activates (repeatable)."
    ),
    list_: bool = typer.Option(False, "--list", help="List the kernels hpcenv wrote."),
    remove: bool = typer.Option(False, "--remove", help="Remove the kernel of this env."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Make an environment a Jupyter kernel (JupyterHub, Open OnDemand) that starts inside the
    activated env: the site's modules, etc/conda/activate.d scripts, no user site-packages. No
    `conda init` needed. The env needs ipykernel.

    Example:  hpcenv kernel myenv                 # then pick "Python (hpcenv: myenv)"
              hpcenv kernel myenv --env OMP_NUM_THREADS=4 --display-name "My project"
              hpcenv kernel --list
              hpcenv kernel myenv --remove
    """
    from hpcenv import kernel as kernels
    from hpcenv.errors import UsageError

    if list_:
        if env is not None or name is not None or prefix is not None or remove:
            raise UsageError("--list takes no environment", hint="hpcenv kernel --list")
        found = kernels.list_kernels()
        if json_out:
            emit_json("kernel", found)
            return
        _print_list(ctx, found)
        return
    env, _ = env_arg(ctx, env, name, prefix)
    if remove:
        if display_name is not None or env_var:
            raise UsageError("--remove takes no --display-name or --env")
        report = kernels.remove_kernel(env)
    else:
        from hpcenv.storage import layout_from

        s = settings(ctx)
        report = kernels.write_kernel(
            layout_from(s), s, env, display_name=display_name, env_vars=list(env_var or [])
        )
    if json_out:
        emit_json("kernel", report)
        return
    if report.action == "removed":
        for k in report.kernels:
            print(f"removed the Jupyter kernel {k.name} ({k.directory})")
    else:
        [k] = report.kernels
        verb = "rewrote" if report.replaced else "wrote"
        print(f"{verb} the Jupyter kernel {k.name}: {k.directory}")
        info(ctx, f'pick "{k.display_name}" in Jupyter (reload the page if it is open)')
    for warning in report.warnings:
        info(ctx, f"hpcenv: warning: {warning}")


def _print_list(ctx: typer.Context, found) -> None:
    from hpcenv.report import print_table

    if not found.kernels:
        info(ctx, f"no kernels written by hpcenv in {found.data_dir / 'kernels'}")
        return
    state = {True: "yes", False: "GONE", None: "unreadable"}
    rows = [
        (k.name, k.display_name, k.env or str(k.prefix), state[k.env_exists]) for k in found.kernels
    ]
    print_table(None, ["kernel", "display name", "environment", "exists"], rows)
    gone = [k for k in found.kernels if k.env_exists is False]
    if gone:
        from hpcenv.kernel import removal_command

        info(ctx, "remove kernels whose env is gone: " + " && ".join(map(removal_command, gone)))
