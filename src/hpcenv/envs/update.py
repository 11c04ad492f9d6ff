"""`hpcenv install` and `hpcenv remove PACKAGE...`: plan (the rule of `envs.plan`: nothing
the user did not name is removed, downgraded or rebuilt unless the solve needs it, and then
only with consent), then apply under the storage lock.

An update in place is marked by `PREFIX/etc/hpcenv/pending.json` until it finishes;
re-running `hpcenv install ENV` repairs an interrupted one (every package reinstalled).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcenv import perms, sitecache, sitelink
from hpcenv.activate import write_static_script
from hpcenv.channels import channel_urls, normalize_channel
from hpcenv.condameta import write_records
from hpcenv.consent import Consent
from hpcenv.envs.checks import check_space, refuse_damaged, require_writable
from hpcenv.envs.journal import RecoveryAction, recover, storage_lock
from hpcenv.envs.plan import (
    ChangeKind,
    ChangeReport,
    EnvMeta,
    consent_question,
    diff,
    lines,
    removal,
    requested,
    solve_keeping,
    spec_name,
)
from hpcenv.errors import RefusedError, UsageError
from hpcenv.fsops import atomic_write
from hpcenv.gpu import check_solution, plan_cuda
from hpcenv.journal import tick
from hpcenv.noarch import normalize_records
from hpcenv.registry import META_DIR, env_maker, set_registered
from hpcenv.settings import Settings
from hpcenv.storage import Layout
from hpcenv.trust import resolve_for_use

if TYPE_CHECKING:
    from hpcenv.engine import PackageInfo


def pending_path(prefix: Path) -> Path:
    """The marker of an install or remove in progress in `prefix`."""
    return prefix / META_DIR / "pending.json"


def _read_pending(prefix: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(pending_path(prefix).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class UpdatePlan:
    """An install or remove, planned (nothing changed yet); `apply_update` carries it out."""

    report: ChangeReport
    prefix: Path
    name: str | None
    installed: tuple[PackageInfo, ...] = field(repr=False)
    target: tuple[PackageInfo, ...] = field(repr=False)
    meta: EnvMeta = field(repr=False)
    update_specs: tuple[str, ...] = ()
    remove_specs: tuple[str, ...] = ()
    solve_specs: tuple[str, ...] = ()
    reinstall: tuple[str, ...] = ()
    normalize: bool = False
    image_version: str | None = None  # an image env: the version planned on (`images`)

    def consent(self) -> Consent | None:
        """Changes to packages the user did not name go ahead only with consent."""
        if not self.report.needs_consent:
            return None
        question = consent_question(self.report)
        return Consent(
            question=question + "; go ahead?",
            refusal=question + "; nothing was changed",
            hint="re-run with --yes to accept (--dry-run shows the whole plan)",
        )


def plan_update(
    layout: Layout,
    settings: Settings,
    name_or_prefix: str,
    *,
    add: Sequence[str] = (),
    drop: Sequence[str] = (),
    channels: Sequence[str] = (),
    cuda: str | None = None,
    gpu: bool = False,
    dry_run: bool = False,
) -> UpdatePlan:
    """Plan `install` (add specs, `channels` added to the env's) or `remove` (drop packages):
    the rule of `envs.plan`; nothing is changed."""
    from hpcenv import engine

    usable = resolve_for_use(layout, name_or_prefix, mount=False)
    name, prefix = usable.name, usable.prefix
    tree, image_version = prefix, None
    if usable.image is not None:  # planned on the current version; applied as a new one
        from hpcenv import images

        prefix = usable.image.path
        require_writable(prefix, [prefix])
        ref = images.mount_current(prefix)
        tree, image_version = ref.mount, ref.image.name.removesuffix(images.SUFFIX)
    else:
        require_writable(prefix, [prefix, prefix / "conda-meta"])
    engine.check_specs([*add, *drop])
    state = engine.read_prefix(tree)
    add_names = {engine.spec_name(s) for s in add}
    drop_names = {engine.spec_name(s) for s in drop}
    # a damaged record of a package the user names is reinstalled; any other is refused
    refuse_damaged(state, name, prefix, add_names)
    damaged = {d.name for d in state.damaged}
    installed = state.packages
    meta = EnvMeta.load(tree)
    asked = requested(tree, installed, meta)
    rec_channels = tuple(dict.fromkeys([*asked.channels, *map(normalize_channel, channels)]))
    if not rec_channels:
        rec_channels = tuple(settings.channels)
    if meta is None:
        meta = EnvMeta(name, str(prefix), asked.specs, rec_channels, made_by=env_maker(prefix))
    specs = {spec_name(s): s for s in asked.specs}
    pending = _read_pending(tree)
    command = "remove" if drop else "install"
    warnings: list[str] = []
    relaxed = None
    reinstall: tuple[str, ...] = ()
    serving: set[str] = set()
    if drop:
        missing = sorted(drop_names - {p.name for p in installed} - damaged)
        if missing:
            raise UsageError(f"{', '.join(missing)} is not installed in {name or prefix}")
        for n in drop_names:
            specs.pop(n, None)
        target, dependents, serving = removal(installed, drop_names, set(specs))
        for n in dependents | serving:
            specs.pop(n, None)
        solve_specs: tuple[str, ...] = ()
        gpu_report = None
        download = 0
    else:
        for s in add:
            specs[engine.spec_name(s)] = s
        from hpcenv.cuda_driver import detect_cuda_driver

        use_gpu = gpu or meta.gpu
        cuda_plan = plan_cuda(
            list(add),
            cuda_flag=cuda or meta.cuda,
            gpu=use_gpu,
            site_cuda=settings.gpu_cuda_version,
            detected=detect_cuda_driver(),
            table=settings.gpu_packages,
        )
        warnings, cuda_v, solve_add = list(cuda_plan.warnings), cuda_plan.cuda, cuda_plan.specs
        urls = channel_urls(settings, rec_channels)
        if not urls:
            raise UsageError("no channel configured", hint="pass -c CHANNEL")
        if pending and pending.get("solve_specs"):
            solve_specs = tuple(pending["solve_specs"])
            solution = engine.solve(
                urls, solve_specs, cache_dir=layout.package_cache, cuda=cuda_v, installed=installed
            )
        else:
            solution, relaxed, used = solve_keeping(
                urls, solve_add, installed, list(specs.values()),
                cache_dir=layout.package_cache, cuda=cuda_v,
            )  # fmt: skip
            solve_specs = tuple(used)
        target = list(solution.packages)
        gpu_check = check_solution(cuda_plan, target, settings.gpu_packages)
        gpu_report = gpu_check.report
        warnings += gpu_check.warnings
        download = solution.download_size
        meta = replace(meta, cuda=cuda_v or meta.cuda, gpu=use_gpu)
        if pending or damaged & add_names:
            reinstall = tuple({p.name for p in installed} if pending else (damaged & add_names))
    changes = diff(installed, target, add_names | drop_names, serving)
    meta = replace(meta, specs=tuple(specs.values()), channels=rec_channels)
    report = ChangeReport(
        command,
        name,
        str(prefix),
        dry_run,
        lines(target),
        added=tuple(c.name for c in changes if c.kind is ChangeKind.ADD),
        removed=tuple(c.name for c in changes if c.kind is ChangeKind.REMOVE),
        download_bytes=download,
        warnings=tuple(warnings),
        gpu=gpu_report,
        changes=changes,
        relaxed=relaxed,
    )
    return UpdatePlan(
        report,
        prefix,
        name,
        tuple(installed),
        tuple(target),
        meta,
        update_specs=tuple(add),
        remove_specs=tuple(drop),
        solve_specs=solve_specs,
        reinstall=reinstall,
        normalize=bool(state.relative_noarch),
        image_version=image_version,
    )


def apply_update(
    layout: Layout,
    settings: Settings,
    plan: UpdatePlan,
    *,
    progress: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> ChangeReport:
    """Carry out a plan under the storage lock (refused if the env changed meanwhile)."""
    from hpcenv import engine

    if plan.image_version is not None:
        from hpcenv import images

        return images.apply_update(layout, settings, plan, progress=progress, on_wait=on_wait)
    start = time.perf_counter()
    prefix = plan.prefix
    added = [p for p in plan.target if p.key not in {q.key for q in plan.installed}]
    layers = sitecache.trusted_layers(settings)
    check_space(prefix.parent, added, sitelink.expected_methods(layers, added, prefix.parent))
    with storage_lock(layout, settings, on_wait):
        recovered = recover(layout)
        state = engine.read_prefix(prefix)
        if {p.key for p in state.packages} != {p.key for p in plan.installed}:
            raise RefusedError(
                f"{plan.name or prefix} changed while hpcenv was planning; nothing was changed",
                hint="re-run the command",
            )
        atomic_write(
            pending_path(prefix),
            json.dumps({"solve_specs": list(plan.solve_specs), "started": time.time()}),
        )
        if plan.normalize and normalize_records(state):
            state = engine.read_prefix(prefix)
        warnings = list(layers.warnings)
        warnings += engine.install(
            plan.target,
            prefix,
            cache_dir=layout.package_cache,
            installed=state.packages,
            reinstall=plan.reinstall,
            show_progress=progress,
            layers=layers.paths,
            layer_owners=layers.owners,
        )
        linked = {p.name for p in added} | set(plan.reinstall)
        protect = sitelink.protected_entries(prefix, layers)  # see create
        perms.limit_installed(prefix, layout.package_cache, plan.target, protect=protect)
        site = sitelink.site_use(prefix, layers.paths, linked) if linked else None
        tick()
        asked = {spec_name(s): s for s in plan.update_specs}
        write_records(
            prefix,
            plan.installed,
            plan.target,
            update_specs=plan.update_specs,
            remove_specs=plan.remove_specs,
            asked=asked,
        )
        meta = replace(plan.meta, updated=time.time())
        meta.save(prefix)
        write_static_script(prefix, plan.name or str(prefix), settings.no_user_site)
        os.unlink(pending_path(prefix))
        try:  # an env hpcenv changed is one it knows from now on (conda does the same)
            set_registered(layout, plan.name, prefix, True)
        except RefusedError as exc:
            warnings = [*warnings, f"{prefix} was changed but not registered: {exc.message}"]
    r = plan.report
    return replace(
        r,
        dry_run=False,
        warnings=(*r.warnings, *warnings),
        seconds=time.perf_counter() - start,
        recovered=tuple(recovered),
        leftovers_removed=tuple(x.path for x in recovered if x.action is RecoveryAction.REMOVED),
        resumed=bool(plan.reinstall),
        site=site,
    )
