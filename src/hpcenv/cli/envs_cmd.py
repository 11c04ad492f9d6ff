"""`hpcenv create | install | remove | list | info | export`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from hpcenv.cli.app import app, confirm, emit_json, info, settings, warn


def _context(ctx: typer.Context):
    from hpcenv.storage import layout_from

    s = settings(ctx)
    return s, layout_from(s)


def _waiting(ctx):
    return lambda pid: info(ctx, f"waiting for another hpcenv (pid {pid}) to finish...")


def _progress(ctx) -> bool:
    return sys.stderr.isatty() and not (ctx.obj and ctx.obj.quiet)


@app.command()
def create(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Environment name (lives in ~/.conda/envs/NAME)."),
    specs: list[str] = typer.Argument(None, help="Package specs, e.g. python=3.11 numpy."),
    prefix: Path = typer.Option(None, "-p", "--prefix", help="Create at this path instead."),
    file: Path = typer.Option(None, "-f", "--file", help="environment.yml or a lock file."),
    channel: list[str] = typer.Option(None, "-c", "--channel", help="Channel (repeatable)."),
    gpu: bool = typer.Option(False, "--gpu", help="Require CUDA builds (for GPU nodes)."),
    cuda: str = typer.Option(None, "--cuda", help="CUDA version of the GPU nodes, e.g. 12.4."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Solve and show; install nothing."),
    force: bool = typer.Option(False, "--force", help="Replace an existing environment."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Accept suggested fixes."),
    allow_home: bool = typer.Option(False, "--allow-home", help="Allow an env in home."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create an environment in storage.

    Example:  hpcenv create myenv python=3.11 numpy
              hpcenv create -p "$global_storage/envs/proj" -f environment.yml
              hpcenv create gpuenv pytorch --gpu --cuda 12.4
    """
    from hpcenv import envs

    s, layout = _context(ctx)
    req = envs.CreateRequest(
        name=name,
        prefix=prefix,
        specs=list(specs or []),
        channels=list(channel or []),
        cuda=cuda,
        gpu=gpu,
        dry_run=dry_run,
        force=force,
        allow_home=allow_home,
    )
    if prefix is not None and name is not None:
        req.specs.insert(0, name)  # with -p, every positional argument is a spec
        req.name = None
    if file is not None:
        if envs.is_lockfile(file):
            req.lockfile = file
        else:
            doc = envs.read_environment_file(file)
            req.name = req.name or (doc["name"] if prefix is None else None)
            req.specs += doc["specs"]
            req.channels = req.channels or doc["channels"]
            req.pip = doc["pip"]
    _old_recipe(ctx, req, yes)
    report = envs.create(layout, s, req, progress=_progress(ctx), on_wait=_waiting(ctx))
    _emit(ctx, report, json_out)


def _old_recipe(ctx: typer.Context, req, yes: bool) -> None:
    """`pytorch torchvision pytorch-cuda -c pytorch -c nvidia`: explain, then switch if --yes."""
    from hpcenv import gpu

    old = gpu.old_recipe(req.specs, req.channels, name=req.name or "NAME")
    if old is None:
        return
    for line in old.explanation:
        info(ctx, line)
    if not yes:
        from hpcenv.errors import RefusedError

        raise RefusedError(
            "the pytorch and nvidia channels no longer serve PyTorch",
            hint=f"run `{old.command}` (or add --yes to do it now)",
        )
    if old.note:
        info(ctx, old.note)
    req.specs, req.channels, req.gpu = list(old.specs), list(old.channels), old.gpu


@app.command()
def install(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    specs: list[str] = typer.Argument(None, help="Package specs to add."),
    gpu: bool = typer.Option(False, "--gpu", help="Require CUDA builds."),
    cuda: str = typer.Option(None, "--cuda", help="CUDA version of the GPU nodes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Solve and show; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Add packages: re-solve with the recorded specs plus these, apply only the difference.

    Run it with no specs to repair an interrupted install.

    Example:  hpcenv install myenv scipy "numpy<2"
    """
    from hpcenv import envs

    s, layout = _context(ctx)
    report = envs.update(
        layout,
        s,
        name,
        add=list(specs or []),
        cuda=cuda,
        gpu=gpu,
        dry_run=dry_run,
        progress=_progress(ctx),
        on_wait=_waiting(ctx),
    )
    _emit(ctx, report, json_out)


@app.command()
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    specs: list[str] = typer.Argument(None, help="Packages to remove; none: the whole env."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting the env."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Remove packages from an environment, or (with no specs) delete the environment.

    Example:  hpcenv remove myenv scipy
              hpcenv remove myenv --yes
    """
    from hpcenv import envs

    s, layout = _context(ctx)
    if specs:
        report = envs.update(layout, s, name, drop=list(specs), on_wait=_waiting(ctx))
    else:
        _, prefix = envs.resolve(layout, name)
        if not confirm(f"Delete environment {name} at {prefix}?", yes):
            info(ctx, "nothing changed")
            raise typer.Exit(0)
        report = envs.delete(layout, s, name, on_wait=_waiting(ctx))
    _emit(ctx, report, json_out)


def _emit(ctx: typer.Context, report, json_out: bool) -> None:
    from hpcenv.report import human_bytes, print_table

    for message in report.warnings:
        warn(message)
    for path in report.leftovers_removed:
        info(ctx, f"removed the leftover of an interrupted create: {path}")
    if json_out:
        emit_json(report.command, report)
        return
    # the table is the plan of a dry run; after a real change it is detail (-v), as in uv
    verbose = bool(ctx.obj is not None and getattr(ctx.obj, "verbose", False))
    if report.packages and (report.dry_run or verbose):
        rows = [(p.name, p.version, p.build, p.channel) for p in report.packages]
        title = "Would install (dry run)" if report.dry_run else None
        print_table(title, ["package", "version", "build", "channel"], rows)
    if report.gpu is not None and (report.gpu.cuda_builds or report.gpu.cpu_builds):
        print(_gpu_line(report.gpu))
    where = report.name or report.prefix
    if report.dry_run:
        print(f"download: {human_bytes(report.download_bytes)}; nothing was changed")
    elif report.command == "create":
        print(
            f"created {where} at {report.prefix}: {len(report.packages)} packages"
            f" in {report.seconds:.2f} s"
        )
        print(f'activate: eval "$(hpcenv activate {where})"')
    else:
        changed = ", ".join([f"+{n}" for n in report.added] + [f"-{n}" for n in report.removed])
        print(f"{report.command}: {where}: {changed or 'nothing to change'}")


def _gpu_line(gpu_report) -> str:
    cuda = ", ".join(f"{p.name} {p.build}" for p in gpu_report.cuda_builds) or "none"
    cpu = ", ".join(f"{p.name} {p.build}" for p in gpu_report.cpu_builds)
    status = {"ok": "satisfied", "too_old": "NOT satisfied", "unknown": "unknown"}.get(
        gpu_report.driver_status, gpu_report.driver_status
    )
    line = f"GPU: CUDA builds: {cuda}"
    if gpu_report.required_cuda:
        driver = gpu_report.driver_version or "unknown"
        line += (
            f"; need driver CUDA >= {gpu_report.required_cuda}, GPU nodes have {driver}: {status}"
        )
    if cpu:
        line += f"; CPU-only builds: {cpu}"
    return line


@app.command("list")
def list_(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List environments with their size on disk (unique after hardlinks) and file count.

    Example:  hpcenv list --json
    """
    from hpcenv import envs, sharing
    from hpcenv.report import human_bytes, print_table

    s, layout = _context(ctx)
    for path in envs.remove_leftovers_locked(layout, s):
        info(ctx, f"removed the leftover of an interrupted create: {path}")
    rows = envs.list_envs(layout)
    mine = {e.prefix for e in rows}
    shared = sharing.shared_summaries(s.shared_root)
    for message in shared.warnings:
        warn(message)
    rows += [e for e in shared.rows if e.prefix not in mine]
    if json_out:
        emit_json("list", rows)
        return
    if not rows:
        print("no environments yet; create one with `hpcenv create NAME python`")
        return
    print_table(
        None,
        ["name", "prefix", "packages", "size", "unique", "files", "changed"],
        [
            (
                (e.name or "-") + _shared_by(e),
                e.prefix,
                e.packages,
                human_bytes(e.apparent_bytes),
                human_bytes(e.unique_bytes),
                e.files,
                _date(e.updated),
            )
            for e in rows
        ],
    )


def _shared_by(e) -> str:
    if not e.owner:
        return ""
    return f" [shared by {e.owner}{'' if e.exists else ', missing'}]"


def _date(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


@app.command("info")
def info_(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show an environment's requested specs, channels, packages and GPU report.

    Example:  hpcenv info myenv
    """
    from hpcenv import envs
    from hpcenv.report import print_table

    s, layout = _context(ctx)
    result = envs.info(layout, s, name)
    if json_out:
        emit_json("info", result)
        return
    print(f"prefix:   {result.prefix}")
    print(f"specs:    {' '.join(result.specs) or '-'}")
    print(f"channels: {' '.join(result.channels) or '-'}")
    if result.pip:
        print(f"pip:      {' '.join(result.pip)}")
    if result.pending:
        print(f"WARNING: an install was interrupted; repair it with `hpcenv install {name}`")
    print_table(
        None,
        ["package", "version", "build", "channel"],
        [(p.name, p.version, p.build, p.channel) for p in result.packages],
    )
    if result.gpu is not None and (result.gpu.cuda_builds or result.gpu.cpu_builds):
        print(_gpu_line(result.gpu))


@app.command()
def export(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Environment name or path."),
    lock: bool = typer.Option(False, "--lock", help="Write a lock file (exact URLs and hashes)."),
    output: Path = typer.Option(
        None, "-o", "--output", help="File to write (lock default: NAME.lock)."
    ),
) -> None:
    """Print environment.yml from the requested specs, or write a lock file with --lock.

    Example:  hpcenv export myenv > environment.yml
              hpcenv export myenv --lock -o myenv.lock && hpcenv create copy -f myenv.lock
    """
    from hpcenv import envs

    s, layout = _context(ctx)
    if lock:
        out = output or Path(f"{Path(name).name}.lock")
        envs.export_lock(layout, s, name, out)
        info(ctx, f"wrote {out}")
        return
    text = envs.export_yaml(layout, name)
    if output:
        output.write_text(text)
        info(ctx, f"wrote {output}")
    else:
        sys.stdout.write(text)
