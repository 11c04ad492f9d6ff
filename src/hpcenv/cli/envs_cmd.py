"""`hpcenv create | install | remove | list | info | export`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from hpcenv.cli.app import (
    NAME_OPTION,
    PREFIX_OPTION,
    app,
    confirm,
    emit_json,
    info,
    pick_env,
    require_env,
    settings,
    warn,
)


def _context(ctx: typer.Context):
    from hpcenv.storage import layout_from

    s = settings(ctx)
    return s, layout_from(s)


def _waiting(ctx):
    return lambda pid: info(ctx, f"waiting for another hpcenv (pid {pid}) to finish...")


def _progress(ctx) -> bool:
    return sys.stderr.isatty() and not (ctx.obj and ctx.obj.quiet)


def _say_recovered(ctx: typer.Context, recovered) -> None:
    for r in recovered:
        if r.action == "failed":
            warn(f"{r.path}: {r.detail}")
        elif r.action == "removed" and r.detail == "an interrupted build":
            info(ctx, f"removed the leftover of an interrupted create: {r.path}")
        elif r.action == "removed":
            info(ctx, f"removed {r.detail}, left by an interrupted run: {r.path}")
        elif r.action == "restored":
            info(ctx, f"restored {r.prefix} ({r.detail}) from {r.path}")
        else:
            what = r.action.removeprefix("finished-")
            info(ctx, f"finished the interrupted {what} of {r.prefix}")


@app.command()
def create(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="NAME, then package specs (python=3.11 numpy)."),
    name: str = NAME_OPTION,
    prefix: Path = typer.Option(None, "-p", "--prefix", help="Create at this path instead."),
    file: Path = typer.Option(None, "-f", "--file", help="environment.yml or a lock file."),
    channel: list[str] = typer.Option(None, "-c", "--channel", help="Channel (repeatable)."),
    gpu: bool = typer.Option(False, "--gpu", help="Require CUDA builds (for GPU nodes)."),
    cuda: str = typer.Option(None, "--cuda", help="CUDA version of the GPU nodes, e.g. 12.4."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Solve and show; install nothing."),
    force: bool = typer.Option(False, "--force", help="Replace an existing environment."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Accept suggested fixes."),
    allow_home: bool = typer.Option(False, "--allow-home", help="Allow an env in home."),
    image: bool = typer.Option(
        None,
        "--image/--no-image",
        help="Keep the env as one squashfs image in storage, mounted where it runs "
        "(default: the site's images.default).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create an environment in storage (with no specs: an empty one, as conda does).

    Example:  hpcenv create myenv python=3.11 numpy
              hpcenv create -p "$global_storage/envs/proj" -f environment.yml
              hpcenv create gpuenv pytorch --gpu --cuda 12.4
              hpcenv create bigenv python numpy scipy --image    # one file in storage
    """
    from hpcenv import envs
    from hpcenv.errors import UsageError

    s, layout = _context(ctx)
    args = list(args or [])
    if name is not None and prefix is not None:
        raise UsageError("give -n NAME or -p PREFIX, not both")
    if name is None and prefix is None and args:
        name, args = args[0], args[1:]
    req = envs.CreateRequest(
        name=name,
        prefix=prefix,
        specs=args,
        channels=list(channel or []),
        cuda=cuda,
        gpu=gpu,
        dry_run=dry_run,
        force=force,
        allow_home=allow_home,
        image=image,
    )
    if prefix is not None:
        req.name = None
    if file is not None:
        from hpcenv import envfile

        if envfile.is_lockfile(file):
            req.lockfile = file
        else:
            from hpcenv.envinfo import file_cuda_choice

            doc = envfile.read_environment_file(file)
            req.name = req.name or (doc["name"] if prefix is None else None)
            req.specs += doc["specs"]
            req.channels = req.channels or doc["channels"]
            req.pip = doc["pip"]
            file_cuda, file_gpu = file_cuda_choice(file)
            req.cuda = req.cuda or file_cuda
            req.gpu = req.gpu or file_gpu
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


def _update(ctx, json_out: bool, yes: bool, env: str, **kw) -> None:
    """Plan, show, ask where the plan changes packages nobody named, apply."""
    from hpcenv import envs

    s, layout = _context(ctx)
    for r in envs.recover_locked(layout, s):
        _say_recovered(ctx, [r])
    plan = envs.plan_update(layout, s, env, **kw)
    if plan.report.dry_run:
        _emit(ctx, plan.report, json_out)
        return
    if plan.report.needs_consent and not yes:
        question = envs.consent_question(plan.report)
        if not sys.stdin.isatty():
            from hpcenv.errors import RefusedError

            raise RefusedError(
                question + "; nothing was changed",
                hint="re-run with --yes to accept (--dry-run shows the whole plan)",
            )
        _print_changes(plan.report, sys.stderr)
        if not typer.confirm(question + "; go ahead?", default=False):
            info(ctx, "nothing changed")
            raise typer.Exit(2)
    report = envs.apply_update(layout, s, plan, progress=_progress(ctx), on_wait=_waiting(ctx))
    _emit(ctx, report, json_out)


@app.command()
def install(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="[ENV] then package specs to add."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    channel: list[str] = typer.Option(
        None, "-c", "--channel", help="Also use this channel (added to the env's; repeatable)."
    ),
    gpu: bool = typer.Option(False, "--gpu", help="Require CUDA builds."),
    cuda: str = typer.Option(None, "--cuda", help="CUDA version of the GPU nodes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Accept changes to packages not named."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Add packages. Nothing you did not name is removed, downgraded or rebuilt unless the
    solve needs it, and then only after you agree (--yes where there is no terminal).

    With no ENV (and no -n/-p), the active environment ($CONDA_PREFIX). With no specs, it
    repairs an interrupted install.

    Example:  hpcenv install myenv scipy "numpy<2"
              hpcenv install -n myenv -c conda-forge scipy
    """
    env, specs = pick_env(ctx, args, name, prefix)
    env = require_env(env, "install")
    _update(
        ctx, json_out, yes, env, add=specs, channels=list(channel or []), cuda=cuda, gpu=gpu,
        dry_run=dry_run,
    )  # fmt: skip


@app.command()
def remove(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="ENV, then packages; no packages: the env."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = typer.Option(
        False,
        "--yes",
        "-y",
        help="Do not ask (delete the env, or remove packages that depend on the ones named).",
    ),  # fmt: skip
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Remove packages from an environment, or (with no packages) delete the environment.

    What only the removed packages needed goes with them; a package that needs a removed one
    must go too, and is removed only after you agree.

    Example:  hpcenv remove myenv scipy
              hpcenv remove myenv --yes
    """
    from hpcenv import envs

    explicit = name is not None or prefix is not None
    env, specs = pick_env(ctx, args, name, prefix, use_active=True)
    if env is None or (not specs and not explicit and not args):
        raise typer.BadParameter("give the environment to remove (NAME, -n NAME or -p PREFIX)")
    if specs:
        _update(ctx, json_out, yes, env, drop=specs, dry_run=dry_run)
        return
    s, layout = _context(ctx)
    if dry_run:
        _, where = envs.resolve(layout, env)
        print(f"would delete environment {env} at {where}; nothing was changed")
        return
    if not confirm(f"Delete environment {env}?", yes):
        info(ctx, "nothing changed")
        raise typer.Exit(0)
    report = envs.delete(layout, s, env, on_wait=_waiting(ctx))
    _emit(ctx, report, json_out)


def _print_changes(report, stream) -> None:
    from hpcenv.report import print_table

    rows = [
        (
            c.kind,
            c.name,
            c.old or "",
            c.new or "",
            "not named" if c.needs_consent else "",
        )
        for c in report.changes
    ]
    title = "Would change (dry run)" if report.dry_run else "Changes"
    print_table(title, ["change", "package", "from", "to", ""], rows, stderr=stream is sys.stderr)


def _emit(ctx: typer.Context, report, json_out: bool) -> None:
    from hpcenv.report import human_bytes, print_table

    for message in report.warnings:
        warn(message)
    _say_recovered(ctx, report.recovered)
    if json_out:
        emit_json(report.command, report)
        return
    verbose = bool(ctx.obj is not None and getattr(ctx.obj, "verbose", False))
    where = report.name or report.prefix
    if report.command == "create":
        # the table is the plan of a dry run; after a real change it is detail (-v), as in uv
        if report.packages and (report.dry_run or verbose):
            rows = [(p.name, p.version, p.build, p.channel) for p in report.packages]
            title = "Would install (dry run)" if report.dry_run else None
            print_table(title, ["package", "version", "build", "channel"], rows)
    elif report.changes and (report.dry_run or verbose):
        _print_changes(report, sys.stdout)
    if report.gpu is not None and (report.gpu.cuda_builds or report.gpu.cpu_builds):
        print(_gpu_line(report.gpu))
    if report.relaxed:
        print(f"note: {report.relaxed}")
    if report.dry_run:
        if report.command != "create":
            print(_summary(report))
        print(f"download: {human_bytes(report.download_bytes)}; nothing was changed")
    elif report.command == "create":
        if report.resumed:
            print(f"created {where} at {report.prefix} (finished an interrupted create)")
            return
        kind = "image env" if _is_image(report.prefix) else ""
        print(
            f"created {kind + ' ' if kind else ''}{where} at {report.prefix}: "
            f"{len(report.packages)} packages in {report.seconds:.2f} s"
        )
        print(f'activate: eval "$(hpcenv activate {where})"')
    elif report.removed == ("(environment)",):
        print(f"removed environment {where}")
    else:
        print(_summary(report))


def _is_image(prefix: str) -> bool:
    from hpcenv.registry import is_image

    return is_image(Path(prefix))


def _summary(report) -> str:
    changed = ", ".join(c.describe() for c in report.changes)
    return f"{report.command}: {report.name or report.prefix}: {changed or 'nothing to change'}"


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
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List every environment you have (hpcenv's, conda's and mamba's, shared ones) with who
    made it, its size on disk (unique after hardlinks) and file count. With -n/-p: the
    packages of one env, as `conda list -n NAME`.

    Example:  hpcenv list --json
    """
    from hpcenv import envs
    from hpcenv.envinfo import list_envs
    from hpcenv.report import human_bytes, print_table

    if name is not None or prefix is not None:
        env, _ = pick_env(ctx, [], name, prefix)
        _show_info(ctx, require_env(env, "list"), json_out, packages_only=True)
        return
    s, layout = _context(ctx)
    _say_recovered(ctx, envs.recover_locked(layout, s))
    result = list_envs(layout, shared_root=s.shared_root)
    for message in result.warnings:
        warn(message)
    rows = list(result.envs)
    if json_out:
        emit_json("list", rows)
        return
    if not rows:
        print("no environments yet; create one with `hpcenv create NAME python`")
        return
    print_table(
        None,
        ["name", "prefix", "made by", "packages", "size", "unique", "files", "changed"],
        [
            (
                (e.name or "-") + (f" [shared by {e.owner}]" if e.owner else ""),
                e.prefix
                + ("" if e.exists else " (missing)")
                + (f" [image v{e.image.version}: {e.image.image_files} files]" if e.image else ""),
                e.made_by,
                e.packages,
                human_bytes(e.apparent_bytes),
                human_bytes(e.unique_bytes),
                e.files,
                _date(e.updated),
            )
            for e in rows
        ],
    )


def _date(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _show_info(ctx, env: str, json_out: bool, packages_only: bool = False) -> None:
    from hpcenv.envinfo import info as env_info
    from hpcenv.report import print_table

    s, layout = _context(ctx)
    result = env_info(layout, s, env)
    for line in result.damaged:
        warn(line)
    if json_out:
        emit_json("info", result)
        return
    if not packages_only:
        print(f"prefix:   {result.prefix}")
        if result.image is not None:
            from hpcenv.report import human_bytes

            img = result.image
            print(
                f"image:    v{img.version}, {img.image_files} files in {human_bytes(img.image_bytes)}"
                f" ({img.image}); mounted at {img.mount}"
            )
        print(f"made by:  {result.made_by}")
        print(f"specs:    {' '.join(result.specs) or '-'}  (from {result.specs_from})")
        print(f"channels: {' '.join(result.channels) or '-'}")
        if result.cuda:
            print(f"cuda:     {result.cuda}")
        if result.pip:
            print(f"pip:      {' '.join(result.pip)}")
        if result.pending:
            print(f"WARNING: an install was interrupted; repair it with `hpcenv install {env}`")
    print_table(
        None,
        ["package", "version", "build", "channel"],
        [(p.name, p.version, p.build, p.channel) for p in result.packages],
    )
    if result.gpu is not None and (result.gpu.cuda_builds or result.gpu.cpu_builds):
        print(_gpu_line(result.gpu))


@app.command("info")
def info_(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show an environment's requested specs, channels, packages and GPU report.

    Example:  hpcenv info myenv
    """
    env, rest = pick_env(ctx, args, name, prefix, specs_follow=False)
    if rest:
        raise typer.BadParameter(f"unexpected argument {rest[0]!r}")
    _show_info(ctx, require_env(env, "info"), json_out)


@app.command()
def export(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="Environment name or path."),
    name: str = NAME_OPTION,
    prefix: Path = PREFIX_OPTION,
    lock: bool = typer.Option(False, "--lock", help="Write a lock file (exact URLs and hashes)."),
    output: Path = typer.Option(
        None, "-o", "--output", help="File to write (lock default: NAME.lock)."
    ),
) -> None:
    """Print environment.yml from the requested specs, or write a lock file with --lock.

    Example:  hpcenv export myenv > environment.yml
              hpcenv export myenv --lock -o myenv.lock && hpcenv create copy -f myenv.lock
    """
    from hpcenv.envinfo import export_lock, export_yaml

    env, rest = pick_env(ctx, args, name, prefix, specs_follow=False)
    if rest:
        raise typer.BadParameter(f"unexpected argument {rest[0]!r}")
    env = require_env(env, "export")
    s, layout = _context(ctx)
    if lock:
        out = output or Path(f"{Path(env).name}.lock")
        export_lock(layout, s, env, out)
        info(ctx, f"wrote {out}")
        return
    text = export_yaml(layout, s, env)
    if output:
        output.write_text(text)
        info(ctx, f"wrote {output}")
    else:
        sys.stdout.write(text)
