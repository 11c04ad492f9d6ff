"""`hpcenv create`: the request (flags, an environment.yml or a lock file, the old PyTorch
recipe turned into conda-forge's), then check, solve and build it in a temporary sibling that
is renamed into place (journaled: `envs.journal`)."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hpcenv import perms, sitecache, sitelink
from hpcenv.activate import write_static_script
from hpcenv.channels import channel_urls, normalize_channel
from hpcenv.condameta import write_records
from hpcenv.consent import Consent
from hpcenv.envs.checks import check_location, check_space
from hpcenv.envs.journal import (
    RecoveryAction,
    begin_build,
    journal_key,
    recover,
    storage_lock,
)
from hpcenv.envs.plan import ChangeReport, EnvMeta, diff, lines, spec_name
from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.gpu import check_solution, plan_cuda
from hpcenv.journal import tick
from hpcenv.oldrecipe import OldRecipe
from hpcenv.purge import env_warnings
from hpcenv.registry import MadeBy, check_environments_txt, env_prefix
from hpcenv.settings import Settings
from hpcenv.storage import Layout, validate_env_name


@dataclass(frozen=True)
class CreateRequest:
    """What `create` builds: from flags, merged with an environment.yml (`create_request`)."""

    name: str | None = None
    prefix: Path | None = None
    specs: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    pip_cwd: Path | None = None  # relative paths in `pip` are relative to it (the file's dir)
    lockfile: Path | None = None
    cuda: str | None = None
    gpu: bool = False
    dry_run: bool = False
    force: bool = False
    allow_home: bool = False
    image: bool | None = None  # one squashfs image (`images`); None: the site's default
    old_recipe: OldRecipe | None = field(default=None, repr=False)

    def consent(self) -> Consent | None:
        """The old PyTorch recipe is switched to conda-forge's only with consent."""
        old = self.old_recipe
        if old is None:
            return None
        return Consent(
            question=f"create it with conda-forge's recipe instead (`{old.command}`)?",
            refusal="the pytorch and nvidia channels no longer serve PyTorch",
            hint=f"run `{old.command}` (or add --yes to do it now)",
            details=old.explanation,
        )

    def switched(self) -> CreateRequest:
        """The request with the old recipe replaced by conda-forge's (after consent)."""
        old = self.old_recipe
        if old is None:
            return self
        return replace(self, specs=old.specs, channels=old.channels, gpu=old.gpu, old_recipe=None)


def create_request(
    args: Sequence[str] = (),
    *,
    name: str | None = None,
    prefix: Path | None = None,
    file: Path | None = None,
    channels: Sequence[str] = (),
    cuda: str | None = None,
    gpu: bool = False,
    dry_run: bool = False,
    force: bool = False,
    allow_home: bool = False,
    image: bool | None = None,
) -> CreateRequest:
    """The request from `create`'s arguments: NAME then specs (or -n/-p), merged with an
    environment.yml (its name, specs, channels unless given, pip section, `hpcenv:` CUDA
    choice) or a lock file; the old pytorch/nvidia recipe is recognised (`consent`)."""
    from hpcenv import envfile
    from hpcenv.oldrecipe import old_recipe

    args = list(args)
    if name is not None and prefix is not None:
        raise UsageError("give -n NAME or -p PREFIX, not both")
    if name is None and prefix is None and args:
        name, args = args[0], args[1:]
    req = CreateRequest(
        name=name if prefix is None else None,
        prefix=prefix,
        specs=tuple(args),
        channels=tuple(channels),
        cuda=cuda,
        gpu=gpu,
        dry_run=dry_run,
        force=force,
        allow_home=allow_home,
        image=image,
    )
    if file is not None:
        if envfile.is_lockfile(file):
            req = replace(req, lockfile=file)
        else:
            doc = envfile.read_environment_file(file)
            req = replace(
                req,
                name=req.name or (doc.name if prefix is None else None),
                specs=(*req.specs, *doc.specs),
                channels=req.channels or doc.channels,
                pip=doc.pip,
                pip_cwd=Path(file).resolve().parent,
                cuda=req.cuda or doc.cuda,
                gpu=req.gpu or doc.gpu,
            )
    recipe = old_recipe(list(req.specs), list(req.channels), name=req.name or "NAME")
    return replace(req, old_recipe=recipe) if recipe is not None else req


def create(
    layout: Layout,
    settings: Settings,
    req: CreateRequest,
    *,
    progress: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> ChangeReport:
    """Check, solve, and build a new environment (journaled; see the module docstring)."""
    start = time.perf_counter()
    if req.prefix is not None:
        prefix = Path(os.path.abspath(os.path.expanduser(str(req.prefix))))
        name = req.name
        if name is not None:
            validate_env_name(name)
    elif req.name:
        name = req.name
        prefix = env_prefix(layout, name)
    else:
        raise UsageError("give an environment NAME or -p PREFIX", hint="hpcenv create NAME python")
    if req.old_recipe is not None:  # not switched: the user has not agreed
        consent = req.consent()
        raise RefusedError(consent.refusal, hint=consent.hint)
    from hpcenv import engine

    engine.check_specs(req.specs)
    channels = [normalize_channel(c) for c in (req.channels or settings.channels)]
    if not channels and req.lockfile is None:
        raise UsageError(
            "no channel configured",
            hint='pass -c CHANNEL, or set channels = ["conda-forge"] in '
            "~/.config/hpcenv/config.toml",
        )
    interrupted = (layout.journal_dir / f"{journal_key(prefix)}.jsonl").exists()
    if os.path.lexists(prefix) and not req.force and not interrupted:
        raise RefusedError(
            f"environment {name or prefix} already exists at {prefix}",
            hint="use `hpcenv install` to add packages, or --force to replace it",
        )
    check_location(layout, prefix, req.allow_home or settings.allow_home)
    if not req.dry_run:
        check_environments_txt(layout)
    image = settings.images_default if req.image is None else req.image
    if image:
        from hpcenv.images.mounts import check_tools

        check_tools(build=True)  # before anything: a site without FUSE is told so at once
    from hpcenv.cuda_driver import detect_cuda_driver_soon

    detected = detect_cuda_driver_soon()  # the probe child runs while the engine loads
    cuda_plan = plan_cuda(
        req.specs,
        cuda_flag=req.cuda,
        gpu=req.gpu,
        site_cuda=settings.gpu_cuda_version,
        detected=detected(),
        table=settings.gpu_packages,
    )
    warnings, cuda, specs = list(cuda_plan.warnings), cuda_plan.cuda, list(cuda_plan.specs)
    warnings += env_warnings(settings, prefix)
    made_by = MadeBy.HPCENV
    locked_pypi: list = []
    pip_lines: list[str] = []
    if req.pip:
        from hpcenv.pipstep import expand, find_uv

        find_uv()
        pip_lines = expand(req.pip, req.pip_cwd or Path.cwd())  # -r files read, paths absolute
    if req.lockfile is not None:
        from hpcenv import pypi

        locked_pypi = pypi.from_lock(req.lockfile)
        pip_lines = [p.requirement for p in locked_pypi]
        packages = tuple(engine.read_lock(req.lockfile))
        channels = engine.lock_channels(req.lockfile) or channels
        specs = [p.pin for p in packages]
        made_by = MadeBy.LOCK
        solution = engine.Solution(packages)
    elif specs:
        solution = engine.solve(
            channel_urls(settings, channels), specs, cache_dir=layout.package_cache, cuda=cuda
        )
    else:
        solution = engine.Solution(())  # conda makes an empty env too
    if pip_lines and not any(p.name == "python" for p in solution.packages):
        raise UsageError(
            f"{req.lockfile} has PyPI packages but no python among its conda packages"
            if req.lockfile
            else "the environment.yml has a pip: section but no python in its dependencies",
            hint="add python to dependencies",
        )
    gpu_check = check_solution(cuda_plan, solution.packages, settings.gpu_packages)
    warnings += gpu_check.warnings
    report_args = dict(
        name=name,
        prefix=str(prefix),
        packages=lines(solution.packages),
        download_bytes=solution.download_size,
        pip=tuple(pip_lines),
        gpu=gpu_check.report,
        added=tuple(p.name for p in solution.packages),
        changes=diff((), solution.packages, set()),
    )
    if req.dry_run:
        return ChangeReport("create", dry_run=True, warnings=tuple(warnings), **report_args)

    prefix.parent.mkdir(parents=True, exist_ok=True)
    meta_specs = list(specs if made_by is MadeBy.LOCK else req.specs)
    if image:  # an image env: built at its mount path, imaged into storage (`images`)
        return _create_image(layout, settings, req, name, prefix, solution, meta_specs,
                             channels, pip_lines, locked_pypi, cuda, made_by, warnings, report_args,
                             start, progress, on_wait)  # fmt: skip
    layers = sitecache.trusted_layers(settings)
    warnings += layers.warnings
    site_methods = sitelink.expected_methods(layers, solution.packages, prefix.parent)
    check_space(prefix.parent, solution.packages, site_methods)
    with storage_lock(layout, settings, on_wait):
        recovered = recover(layout)
        finished = [
            r
            for r in recovered
            if r.prefix == str(prefix) and r.action is RecoveryAction.FINISHED_CREATE
        ]
        if finished and not req.force:
            return ChangeReport(
                "create", dry_run=False, recovered=tuple(recovered), resumed=True, **report_args
            )
        if os.path.lexists(prefix) and not req.force:  # the check that counts: under the lock
            raise RefusedError(
                f"environment {name or prefix} already exists at {prefix}",
                hint="use `hpcenv install` to add packages, or --force to replace it",
            )
        replace = os.path.lexists(prefix)
        if replace and os.path.islink(prefix):
            raise RefusedError(
                f"{prefix} is a symbolic link; --force will not replace what it points to",
                hint=f"remove it first: `hpcenv remove {name or prefix} --yes`",
            )
        tx = begin_build(layout, prefix, name, replace=replace, specs=meta_specs)
        tmp = tx.tmp
        pypi_done: tuple = ()
        try:
            more = engine.install(
                solution, tmp, cache_dir=layout.package_cache, final_prefix=prefix,
                show_progress=progress, layers=layers.paths, layer_owners=layers.owners,
            )  # fmt: skip
            warnings += more
            (tmp / "conda-meta").mkdir(parents=True, exist_ok=True)
            write_records(
                tmp, (), solution.packages, update_specs=meta_specs,
                asked={spec_name(s): s for s in meta_specs},
            )  # fmt: skip
            tick()
            if pip_lines:  # checked against the conda files first; refused: nothing is made
                from hpcenv import pipstep

                plan = pipstep.plan(
                    layout, tmp, requirements=pip_lines, locked=locked_pypi, cwd=req.pip_cwd,
                    creating=True,
                )  # fmt: skip
                pypi_done = pipstep.apply(layout, plan, final_prefix=prefix)
                tick()
            # archives carry their modes; a site cache's files hardlinked here are left alone
            protect = sitelink.protected_entries(tmp, layers)
            perms.limit_installed(tmp, layout.package_cache, solution.packages, protect=protect)
            site = sitelink.site_use(tmp, layers.paths)
            now = time.time()
            EnvMeta(
                name, str(prefix), tuple(meta_specs), tuple(channels), tuple(pip_lines), cuda,
                req.gpu, now, now, made_by,
                lockfile=str(Path(req.lockfile).resolve()) if req.lockfile else None,
            ).save(tmp)  # fmt: skip
            write_static_script(prefix, name or str(prefix), settings.no_user_site, build_dir=tmp)
            tx.built()
        except BaseException as exc:
            tx.abandon()
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OperationError(
                    f"ran out of space while building {name or prefix}; nothing was created",
                    hint="free space (`hpcenv clean`) and re-run",
                ) from None
            raise
        tx.commit()
    return ChangeReport(
        "create",
        dry_run=False,
        warnings=tuple(warnings),
        seconds=time.perf_counter() - start,
        recovered=tuple(recovered),
        leftovers_removed=tuple(r.path for r in recovered if r.action == "removed"),
        pypi=tuple(f"{p.name} {p.version}" for p in pypi_done),
        site=site,
        **report_args,
    )


def _create_image(
    layout, settings, req, name, prefix, solution, meta_specs, channels, pip_lines, locked_pypi,
    cuda, made_by, warnings, report_args, start, progress, on_wait,
) -> ChangeReport:  # fmt: skip
    """`create` of an image env: the same request, built by `images.create`."""
    from hpcenv import images

    now = time.time()
    meta = EnvMeta(name, str(prefix), tuple(meta_specs), tuple(channels), tuple(pip_lines),
                   cuda, req.gpu, now, now, made_by,
                   lockfile=str(Path(req.lockfile).resolve()) if req.lockfile else None)  # fmt: skip
    more, recovered, resumed = images.create(
        layout, settings, prefix=prefix, name=name, solution=solution, meta=meta,
        specs=meta_specs, force=req.force, progress=progress, on_wait=on_wait,
        pip_locked=locked_pypi,
    )  # fmt: skip
    return ChangeReport(
        "create", dry_run=False, warnings=tuple(warnings + more),
        seconds=time.perf_counter() - start, recovered=tuple(recovered), resumed=resumed,
        leftovers_removed=tuple(r.path for r in recovered if r.action is RecoveryAction.REMOVED),
        **report_args,
    )  # fmt: skip
