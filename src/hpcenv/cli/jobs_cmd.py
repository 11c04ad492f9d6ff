"""`hpcenv jobscript | submit | pack | stage`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from hpcenv.cli.app import (
    LONG_PREFIX_OPTION,
    NAME_OPTION,
    PREFIX_OPTION,
    app,
    emit_json,
    env_arg,
    info,
    settings,
)


def _request(
    ctx,
    name,
    command,
    time,
    mem,
    cpus,
    gpus,
    partition,
    nodes,
    array,
    output,
    job_name,
    stage,
    wrap,
):
    from hpcenv import activate, jobs
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    s = settings(ctx)
    layout = layout_from(s)
    env = resolve_for_use(layout, name, mount=False)  # an image is mounted by the job itself
    env_name, prefix = env.name, env.prefix
    argv = list(command or [])
    if argv[:1] == ["--"]:
        argv = argv[1:]
    req = jobs.JobRequest(
        env_name or (env.image.path if env.image is not None else prefix).name,
        prefix,
        tuple(argv),
        time,
        mem,
        cpus,
        gpus,
        partition,
        nodes,
        array,
        output,
        job_name,
        stage,
        wrap,
        s.no_user_site,
    )
    site = jobs.SchedulerSite(s.partition, s.gpu_partition, s.gres, s.module_lines, s.stage_dir)
    log_dir = s.log_dir or layout.log_dir
    jobs.validate(req)  # bad flags: exit 2 before any work
    pack = script = image = None
    if env.image is not None:  # its activate.sh is in the image
        image = (env.image.image, env.image.mount)
        script = prefix / "etc" / "hpcenv" / "activate.sh"
    elif stage:
        pack = Path(jobs.pack(prefix, req.env_name, layout.packs_dir).path)
    else:
        script = activate.ensure_static_script(
            prefix, env_name or str(prefix), layout.state_dir, no_user_site=s.no_user_site
        )
    text = jobs.render_jobscript(
        req, site, log_dir=log_dir, pack=pack, activation=script, image=image
    )
    _make_log_dir(Path(output).parent if output else log_dir)
    return text


def _make_log_dir(path: Path) -> None:
    """SLURM opens --output before the script runs, in a directory it does not create: a job
    written to a missing one loses its log. A directory with %-patterns is left to the user."""
    from hpcenv.errors import UsageError

    if "%" in str(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the log directory {path}: {exc.strerror}",
            hint="pass --output with a file in a directory you can write",
        ) from None


_OPTS = dict(
    time=typer.Option(None, "--time", help="Wall time, e.g. 02:00:00."),
    mem=typer.Option(None, "--mem", help="Memory per node, e.g. 16G."),
    cpus=typer.Option(None, "--cpus", help="CPUs per task."),
    gpus=typer.Option(None, "--gpus", help="GPUs (renders the site's GPU partition and gres)."),
    partition=typer.Option(None, "--partition", "-p", help="Partition (default: the site's)."),
    nodes=typer.Option(None, "--nodes", "-N", help="Nodes."),
    array=typer.Option(None, "--array", help="Job array, e.g. 0-9%2."),
    output=typer.Option(
        None, "--output", "-o", help="Log file (default: STORAGE/hpcenv-logs/%x-%j.out)."
    ),
    job_name=typer.Option(None, "--job-name", "-J", help="Job name (default: hpcenv-NAME)."),
    stage=typer.Option(
        False, "--stage", help="Copy the env to node-local disk first (many nodes)."
    ),
    wrap=typer.Option(
        None,
        "--wrap",
        help="The command as one shell string, inserted as written, so the job's shell "
        "expands variables: --wrap 'python run.py \"$SLURM_ARRAY_TASK_ID\"'. Instead of -- CMD.",
    ),
)


@app.command()
def jobscript(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    command: list[str] = typer.Argument(None, help="The command (after --)."),
    name: str = NAME_OPTION,
    prefix: Path = LONG_PREFIX_OPTION,
    time: str = _OPTS["time"],
    mem: str = _OPTS["mem"],
    cpus: int = _OPTS["cpus"],
    gpus: int = _OPTS["gpus"],
    partition: str = _OPTS["partition"],
    nodes: int = _OPTS["nodes"],
    array: str = _OPTS["array"],
    output: str = _OPTS["output"],
    job_name: str = _OPTS["job_name"],
    stage: bool = _OPTS["stage"],
    wrap: str = _OPTS["wrap"],
) -> None:
    """Print a complete sbatch script that activates the env and runs the command. Every word
    after -- is quoted; use --wrap 'CMD "$SLURM_ARRAY_TASK_ID"' for job variables.

    Example:  hpcenv jobscript myenv --time 02:00:00 --gpus 1 -- python train.py > job.sh
    """
    env, command = env_arg(ctx, env, name, prefix, list(command or []))
    script = _request(
        ctx,
        env,
        command,
        time,
        mem,
        cpus,
        gpus,
        partition,
        nodes,
        array,
        output,
        job_name,
        stage,
        wrap,
    )
    sys.stdout.write(script)


@app.command()
def submit(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    command: list[str] = typer.Argument(None, help="The command (after --)."),
    name: str = NAME_OPTION,
    prefix: Path = LONG_PREFIX_OPTION,
    time: str = _OPTS["time"],
    mem: str = _OPTS["mem"],
    cpus: int = _OPTS["cpus"],
    gpus: int = _OPTS["gpus"],
    partition: str = _OPTS["partition"],
    nodes: int = _OPTS["nodes"],
    array: str = _OPTS["array"],
    output: str = _OPTS["output"],
    job_name: str = _OPTS["job_name"],
    stage: bool = _OPTS["stage"],
    wrap: str = _OPTS["wrap"],
    wait: bool = typer.Option(False, "--wait", help="Wait for the job; exit with its exit code."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Submit the job script to SLURM (piped to sbatch, no temp files); print the job id.

    Example:  hpcenv submit myenv --time 00:30:00 --wait -- python train.py
              hpcenv submit myenv --array 0-9 --wrap 'python run.py "$SLURM_ARRAY_TASK_ID"'
    """
    from hpcenv import jobs

    env, command = env_arg(ctx, env, name, prefix, list(command or []))
    script = _request(
        ctx,
        env,
        command,
        time,
        mem,
        cpus,
        gpus,
        partition,
        nodes,
        array,
        output,
        job_name,
        stage,
        wrap,
    )
    result = jobs.submit(script, wait=wait)
    if json_out:
        emit_json("submit", result)
    else:
        print(result.job_id)
        if result.output:
            info(ctx, f"log: {result.output}")
    if wait and result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("pack")
def pack_(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    out: Path = typer.Option(None, "-o", "--output", help="Also write the archive here."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Pack the env with conda-pack (cached in storage, reused while the env is unchanged).

    Example:  hpcenv pack myenv -o myenv.tar.gz
    """
    from hpcenv import jobs
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    layout = layout_from(settings(ctx))
    env, _ = env_arg(ctx, env, name, prefix)
    usable = resolve_for_use(layout, env)
    env_name, where = usable.name, usable.prefix
    result = jobs.pack(where, env_name or where.name, layout.packs_dir, out)
    if json_out:
        emit_json("pack", result)
    else:
        print(result.path)
        info(ctx, "reused the cached pack" if result.reused else "packed")


@app.command("stage")
def stage_(
    ctx: typer.Context,
    env: str = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    to: Path = typer.Option(
        None, "--to", help="Where (default: the site's stage_dir, else $TMPDIR or /tmp)."
    ),
) -> None:
    """Copy the env onto node-local disk (inside an allocation: once per node) and print the
    staged prefix; activate it with `source PREFIX/etc/hpcenv/activate.sh`.

    Example:  PREFIX=$(hpcenv stage myenv)
    """
    from hpcenv import jobs
    from hpcenv.activate import static_script
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    s = settings(ctx)
    layout = layout_from(s)
    env, _ = env_arg(ctx, env, name, prefix)
    usable = resolve_for_use(layout, env)  # its python runs conda-unpack on every node
    env_name, where = usable.name, usable.prefix
    label = env_name or where.name
    job = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    target = Path(os.path.abspath(to or jobs.default_stage_target(s.stage_dir, label, job)))
    activate_sh = static_script(target, name=label, no_user_site=s.no_user_site)
    result = jobs.pack(where, label, layout.packs_dir)
    print(jobs.stage(Path(result.path), target, activate_sh))
