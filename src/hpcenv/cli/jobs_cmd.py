"""`hpcenv jobscript | submit | pack | stage`."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import typer

from hpcenv.cli.app import app, emit_json, info, settings


def _request(
    ctx, name, command, time, mem, cpus, gpus, partition, nodes, array, output, job_name, stage
):
    from hpcenv import jobs
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    s = settings(ctx)
    layout = layout_from(s)
    env = resolve_for_use(layout, name)
    env_name, prefix = env.name, env.prefix
    argv = list(command or [])
    if argv[:1] == ["--"]:
        argv = argv[1:]
    req = jobs.JobRequest(
        env_name or prefix.name,
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
    )
    site = jobs.SchedulerSite(s.partition, s.gpu_partition, s.gres, s.module_lines)
    log_dir = s.log_dir or layout.log_dir
    pack = None
    if stage:
        pack = Path(jobs.pack(prefix, req.env_name, layout.packs_dir).path)
    script = jobs.render_jobscript(req, site, log_dir=log_dir, pack=pack)
    return script, log_dir


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
)


@app.command()
def jobscript(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    command: list[str] = typer.Argument(None, help="The command (after --)."),
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
) -> None:
    """Print a complete sbatch script that activates the env and runs the command.

    Example:  hpcenv jobscript myenv --time 02:00:00 --gpus 1 -- python train.py > job.sh
    """
    script, _ = _request(
        ctx, name, command, time, mem, cpus, gpus, partition, nodes, array, output, job_name, stage
    )
    sys.stdout.write(script)


@app.command()
def submit(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    command: list[str] = typer.Argument(None, help="The command (after --)."),
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
    wait: bool = typer.Option(False, "--wait", help="Wait for the job; exit with its exit code."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Submit the job script to SLURM (piped to sbatch, no temp files); print the job id.

    Example:  hpcenv submit myenv --time 00:30:00 --wait -- python train.py
    """
    from hpcenv import jobs

    script, log_dir = _request(
        ctx, name, command, time, mem, cpus, gpus, partition, nodes, array, output, job_name, stage
    )
    if output is None:
        os.makedirs(log_dir, exist_ok=True)
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
    name: str = typer.Argument(..., help="Environment name or path."),
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
    env = resolve_for_use(layout, name)
    env_name, prefix = env.name, env.prefix
    result = jobs.pack(prefix, env_name or prefix.name, layout.packs_dir, out)
    if json_out:
        emit_json("pack", result)
    else:
        print(result.path)
        info(ctx, "reused the cached pack" if result.reused else "packed")


@app.command("stage")
def stage_(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    to: Path = typer.Option(None, "--to", help="Where (default: $TMPDIR or /tmp)."),
) -> None:
    """Copy the env onto node-local disk (inside an allocation: once per node) and print the
    staged prefix; activate it with `source PREFIX/etc/hpcenv/activate.sh`.

    Example:  PREFIX=$(hpcenv stage myenv)
    """
    from hpcenv import jobs
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    layout = layout_from(settings(ctx))
    env = resolve_for_use(layout, name)
    env_name, prefix = env.name, env.prefix
    result = jobs.pack(prefix, env_name or prefix.name, layout.packs_dir)
    job = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    target = to or Path(tempfile.gettempdir()) / f"hpcenv-{job}" / (env_name or prefix.name)
    print(jobs.stage(Path(result.path), target))
