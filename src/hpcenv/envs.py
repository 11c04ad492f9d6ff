"""Environments: create, install, remove (packages or the whole env).

A named environment lives at `~/.conda/envs/NAME` (in storage once `hpcenv setup` ran) and is
registered in `~/.conda/environments.txt`, so the site's conda and mamba see it. What the user
asked for (specs, channels, pip requirements, CUDA) is kept beside the packages in
`PREFIX/etc/hpcenv/env.json`, and written in conda's own formats too: a `conda-meta/history`
entry with `# update specs:` / `# remove specs:` and each record's `requested_spec`.

Create, replace (`--force`) and delete are journaled (`envjournal`): a kill at any instant
leaves the old env or the new one under the name, and the next command finishes or rolls back.
Install and remove follow the rule in `envplan`: packages the user did not name are never
removed, downgraded or rebuilt unless the solve cannot succeed otherwise, and then only with
consent. Updates in place are marked by `PREFIX/etc/hpcenv/pending.json` until they finish;
re-running `hpcenv install ENV` repairs an interrupted one.

Reading (list, info, export) is in `envinfo`; discovery and the registries in `registry`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcenv import perms
from hpcenv.condameta import append_history, dist_string, history_entry, spec_name
from hpcenv.envjournal import Recovered, begin_build, find_leftovers, journal_key, recover
from hpcenv.envplan import EnvMeta, PackageChange, diff, removal, requested, solve_keeping
from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.journal import StorageLock, tick
from hpcenv.registry import (
    META_DIR,
    TMP_MARK,
    atomic_write,
    check_environments_txt,
    env_maker,
    env_prefix,
    is_image,
    is_path_argument,
    needs_environments_txt_write,
    read_registry,
    resolve,
    set_registered,
)
from hpcenv.settings import Settings
from hpcenv.storage import Layout, ensure_state_dir, free_bytes, is_within, validate_env_name

__all__ = [
    "META_DIR",
    "TMP_MARK",
    "EnvMeta",
    "PackageChange",
    "env_prefix",
    "find_leftovers",
    "read_registry",
    "resolve",
]

INSTALL_MARGIN = 4 * 1024 * 1024
EXTRACT_FACTOR = 4  # extracted size ~ archive size x this (conda packages compress 2-4x)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PackageLine:
    name: str
    version: str
    build: str
    channel: str
    size: int | None = None


@dataclass(frozen=True)
class ChangeReport:
    """The result of create / install / remove (a plan when `dry_run`)."""

    command: str
    name: str | None
    prefix: str
    dry_run: bool
    packages: tuple[PackageLine, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    download_bytes: int = 0
    pip: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    gpu: Any = None
    seconds: float = 0.0
    leftovers_removed: tuple[str, ...] = ()
    changes: tuple[PackageChange, ...] = ()
    relaxed: str | None = None  # why packages the user did not name change
    recovered: tuple[Recovered, ...] = ()
    resumed: bool = False  # this run finished an interrupted run of the same command

    @property
    def needs_consent(self) -> tuple[PackageChange, ...]:
        return tuple(c for c in self.changes if c.needs_consent)


@dataclass
class CreateRequest:
    """Inputs of `create`, gathered by the CLI from flags and an environment.yml."""

    name: str | None = None
    prefix: Path | None = None
    specs: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    pip: list[str] = field(default_factory=list)
    lockfile: Path | None = None
    cuda: str | None = None
    gpu: bool = False
    dry_run: bool = False
    force: bool = False
    allow_home: bool = False
    image: bool | None = None  # one squashfs image (`images`); None: the site's default


# --------------------------------------------------------------------------- small helpers


def normalize_channel(channel: str) -> str:
    """A channel given as a path (relative or not) becomes an absolute file:// URL, so the
    env's record means the same from any directory."""
    if channel.startswith(("/", "./", "../", "~")) or channel in (".", ".."):
        return Path(os.path.expanduser(channel)).resolve().as_uri()
    return channel


def channel_urls(settings: Settings, channels: Sequence[str]) -> list[str]:
    """Channel names to URLs: mirrors first, then the channel alias; paths to file:// URLs."""
    urls = []
    for channel in channels or settings.channels:
        if channel in settings.mirrors:
            urls.append(settings.mirrors[channel])
        elif "://" in channel:
            urls.append(settings.mirrors.get(channel, channel))
        elif channel.startswith(("/", ".", "~")):
            urls.append(normalize_channel(channel))
        else:
            urls.append(f"{settings.channel_alias.rstrip('/')}/{channel}")
    return urls


def _lock(layout: Layout, settings: Settings, on_wait=None) -> StorageLock:
    ensure_state_dir(layout)
    return StorageLock(layout.lock_path, timeout=settings.lock_timeout, on_wait=on_wait)


def recover_locked(layout: Layout, settings: Settings) -> list[Recovered]:
    """Finish or roll back interrupted env operations, under the storage lock (for commands
    that do not hold it). Free when there is nothing to do."""
    if not find_leftovers(layout) and not _env_journals(layout):
        return []
    with _lock(layout, settings):
        return recover(layout)


def _env_journals(layout: Layout) -> list[str]:
    from hpcenv.journal import Journal

    return [op for op in Journal.pending(layout.journal_dir) if op.startswith("env-")]


def _check_location(layout: Layout, prefix: Path, allow_home: bool) -> None:
    if allow_home:
        return
    parent = prefix.parent
    while not parent.exists():
        parent = parent.parent
    if is_within(parent, layout.home):
        raise RefusedError(
            f"{prefix} would be in your home directory (small quota)",
            hint="run `hpcenv setup` first so ~/.conda points to storage, use -p with a "
            "path in storage, or pass --allow-home",
        )
    if is_within(layout.package_cache.parent, layout.home):
        raise RefusedError(
            f"the package cache {layout.package_cache} would be in home",
            hint="run `hpcenv setup` or pass --storage DIR",
        )


def _check_space(prefix_parent: Path, packages) -> None:
    need = sum(p.size for p in packages) * (1 + EXTRACT_FACTOR)
    have = free_bytes(prefix_parent)
    if need + INSTALL_MARGIN > have:
        from hpcenv.report import human_bytes

        raise RefusedError(
            f"not enough space on {prefix_parent}: this environment needs about "
            f"{human_bytes(need)} (download and unpacked) plus a margin, "
            f"{human_bytes(have)} is free",
            hint="free space (`hpcenv clean`) or create it elsewhere with -p PREFIX",
        )


def lines(packages) -> tuple[PackageLine, ...]:
    from hpcenv.condameta import channel_short

    return tuple(
        PackageLine(p.name, p.version, p.build, channel_short(p.channel, p.subdir), p.size)
        for p in sorted(packages, key=lambda p: p.name)
    )


def _dist(p) -> str:
    return dist_string(p.name, p.version, p.build, p.channel, p.subdir)


def _write_conda_records(
    prefix: Path, before, after, *, update_specs=(), remove_specs=(), asked: dict | None = None
) -> None:
    """conda's side of a change: a history entry and the records' requested_spec."""
    old = {p.key: p for p in before}
    new = {p.key: p for p in after}
    append_history(
        prefix,
        history_entry(
            added=[_dist(new[k]) for k in new.keys() - old.keys()],
            removed=[_dist(old[k]) for k in old.keys() - new.keys()],
            update_specs=update_specs,
            remove_specs=remove_specs,
        ),
    )
    from hpcenv import engine

    asked = dict(asked or {})
    for p in engine.read_prefix(prefix).packages:
        spec = asked.get(p.name)
        if spec is None or p.record_path is None or p.requested[:1] == (spec,):
            continue
        path = Path(p.record_path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        data["requested_spec"] = spec
        data["requested_specs"] = [spec]
        atomic_write(path, json.dumps(data, indent=1), os.stat(path).st_mode & 0o777)


def _normalize_noarch_records(state) -> bool:
    """Rewrite conda's noarch:python records whose paths_data holds package-relative paths
    (`site-packages/x.py`) to the installed paths of `files`, so unlinking removes them."""
    for record_path in state.relative_noarch:
        path = Path(record_path)
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = (data.get("paths_data") or {}).get("paths") or []
        new = []
        for installed in data.get("files") or []:
            match = next(
                (
                    e
                    for e in entries
                    if e.get("_path") == installed
                    or installed.endswith("/" + str(e.get("_path", "")).split("/", 1)[-1])
                ),
                None,
            )
            entry = dict(match) if match else {"path_type": "hardlink"}
            entry["_path"] = installed
            new.append(entry)
        data.setdefault("paths_data", {"paths_version": 1})["paths"] = new
        atomic_write(path, json.dumps(data, indent=1), os.stat(path).st_mode & 0o777)
    return bool(state.relative_noarch)


def _refuse_damaged(state, name: str | None, prefix: Path, named: set[str] = frozenset()):
    """A damaged record of a package the user did not name: refuse, naming it and the fix."""
    bad = [d for d in state.damaged if d.name not in named]
    if bad:
        d = bad[0]
        raise RefusedError(
            f"{d.path} (package {d.name}) is damaged: {d.reason}",
            hint=f"re-create the env, or reinstall the package: "
            f"`hpcenv install {name or prefix} {d.name}`",
        )


# --------------------------------------------------------------------------- create


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
    _check_location(layout, prefix, req.allow_home or settings.allow_home)
    if not req.dry_run:
        check_environments_txt(layout)
    if req.pip:
        _find_uv()
    image = settings.images_default if req.image is None else req.image
    if image:
        from hpcenv.mounts import check_tools

        check_tools(build=True)  # before anything: a site without FUSE is told so at once
    from hpcenv import gpu

    detected = gpu.detect_cuda_driver_soon()  # the probe child runs while the engine loads
    gpu_info, warnings, cuda, specs = _gpu_prepare(settings, req, req.specs, detected())
    made_by = "hpcenv"
    if req.lockfile is not None:
        packages = tuple(engine.read_lock(req.lockfile))
        channels = engine.lock_channels(req.lockfile) or channels
        specs = [p.pin for p in packages]
        made_by = "lock"
        solution = engine.Solution(packages)
    elif specs:
        solution = engine.solve(
            channel_urls(settings, channels), specs, cache_dir=layout.package_cache, cuda=cuda
        )
    else:
        solution = engine.Solution(())  # conda makes an empty env too
    if req.pip and not any(p.name == "python" for p in solution.packages):
        raise UsageError(
            "the environment.yml has a pip: section but no python in its dependencies",
            hint="add python to dependencies",
        )
    gpu_report, more = _gpu_check(settings, req, solution.packages, gpu_info)
    warnings += more
    report_args = dict(
        name=name,
        prefix=str(prefix),
        packages=lines(solution.packages),
        download_bytes=solution.download_size,
        pip=tuple(req.pip),
        gpu=gpu_report,
        added=tuple(p.name for p in solution.packages),
        changes=diff((), solution.packages, set()),
    )
    if req.dry_run:
        return ChangeReport("create", dry_run=True, warnings=tuple(warnings), **report_args)

    prefix.parent.mkdir(parents=True, exist_ok=True)
    meta_specs = list(specs if made_by == "lock" else req.specs)
    if image:  # an image env: built at its mount path, imaged into storage (`images`)
        from hpcenv import images

        now = time.time()
        meta = EnvMeta(name, str(prefix), tuple(meta_specs), tuple(channels), tuple(req.pip),
                       cuda, req.gpu, now, now, made_by)  # fmt: skip
        more, recovered, resumed = images.create(
            layout, settings, prefix=prefix, name=name, solution=solution, meta=meta,
            specs=meta_specs, force=req.force, progress=progress, on_wait=on_wait,
        )  # fmt: skip
        return ChangeReport(
            "create", dry_run=False, warnings=tuple(warnings + more),
            seconds=time.perf_counter() - start, recovered=tuple(recovered), resumed=resumed,
            leftovers_removed=tuple(r.path for r in recovered if r.action == "removed"),
            **report_args,
        )  # fmt: skip
    _check_space(prefix.parent, solution.packages)
    with _lock(layout, settings, on_wait):
        recovered = recover(layout)
        finished = [
            r for r in recovered if r.prefix == str(prefix) and r.action == "finished-create"
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
        try:
            more = engine.install(
                solution, tmp, cache_dir=layout.package_cache, final_prefix=prefix,
                show_progress=progress,
            )  # fmt: skip
            warnings += more
            (tmp / "conda-meta").mkdir(parents=True, exist_ok=True)
            _write_conda_records(
                tmp, (), solution.packages, update_specs=meta_specs,
                asked={spec_name(s): s for s in meta_specs},
            )  # fmt: skip
            tick()
            if req.pip:
                _pip_install(layout, tmp, req.pip)
                tick()
            perms.limit_installed(
                tmp, layout.package_cache, solution.packages
            )  # archives carry their modes
            now = time.time()
            EnvMeta(
                name, str(prefix), tuple(meta_specs), tuple(channels), tuple(req.pip), cuda,
                req.gpu, now, now, made_by,
            ).save(tmp)  # fmt: skip
            _write_activation(tmp, prefix, name, settings)
            tx.built()
        except BaseException as exc:
            tx.abandon()
            if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT
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
        **report_args,
    )


def _write_activation(
    build_prefix: Path, final_prefix: Path, name: str | None, settings: Settings
) -> None:
    """The static script names the final prefix (it finds the hooks when it runs)."""
    from hpcenv.activate import static_script

    text = static_script(
        final_prefix, name=name or str(final_prefix), no_user_site=settings.no_user_site
    )
    atomic_write(build_prefix / META_DIR / "activate.sh", text)


def _find_uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
    if not found:
        raise OperationError(
            "uv is not installed (it installs the pip: section)", hint="pip install uv"
        )
    return found


def _pip_install(layout: Layout, build_prefix: Path, requirements: Sequence[str]) -> None:
    """Install an environment.yml `pip:` list with uv into the env's interpreter."""
    import subprocess
    import tempfile

    python = build_prefix / "bin" / "python"
    uv = _find_uv()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
        reqs.write("\n".join(requirements) + "\n")
    env = {
        **os.environ,
        "UV_CACHE_DIR": str(layout.uv_cache),
        "VIRTUAL_ENV": str(build_prefix),
        "UV_NO_CONFIG": "1",
        # uv keeps credentials and tools under XDG dirs: in storage, never in home
        "XDG_DATA_HOME": str(layout.state_dir / "uv-data"),
        "XDG_CONFIG_HOME": str(layout.state_dir / "uv-config"),
    }
    try:
        result = subprocess.run(
            [uv, "pip", "install", "--python", str(python), "-r", reqs.name],
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(reqs.name)
    # uv locks a venv-style prefix with PREFIX/.lock, created 0666 on purpose (astral-sh/uv
    # #11328, #16845); run/activate/jobscript then refuse the env as world-writable. Take the
    # write bits the umask denies, and others' always, as for any file hpcenv writes (not
    # unlinked: a uv running in the env right now may hold it).
    lock = build_prefix / ".lock"
    try:
        st = lock.lstat()
    except FileNotFoundError:
        pass
    else:
        if not os.path.islink(lock) and st.st_mode & 0o022:
            mask = os.umask(0o022)
            os.umask(mask)
            os.chmod(lock, st.st_mode & 0o7777 & ~mask & ~0o002)
    if result.returncode != 0:
        msgs = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise OperationError(
            f"pip requirements failed to install: {' / '.join(msgs[-3:])}",
            hint="check the pip: section of the environment.yml",
        )


# --------------------------------------------------------------------------- GPU glue


def _gpu_prepare(settings: Settings, req: CreateRequest, specs: Sequence[str], detected):
    """(gpu info, warnings, __cuda to solve with, specs) for --gpu/--cuda, given the node's
    detected driver (or None)."""
    from hpcenv import gpu

    if not req.gpu and req.cuda is None:
        return (detected, None, False), [], None, list(specs)
    choice = gpu.resolve_cuda(req.cuda, settings.gpu_cuda_version, detected, req.gpu)
    new_specs = gpu.force_gpu_specs(list(specs), settings.gpu_packages) if req.gpu else list(specs)
    driver = detected.version if detected else (settings.gpu_cuda_version or choice.version)
    return (detected, driver, req.gpu), list(choice.warnings), choice.version, new_specs


def _gpu_check(settings: Settings, req: CreateRequest, packages, gpu_info):
    from hpcenv import gpu

    detected, driver, forced = gpu_info
    if driver is None:
        driver = detected.version if detected else settings.gpu_cuda_version
    report = gpu.gpu_report(packages, driver, settings.gpu_packages)
    warnings = gpu.check_gpu_solution(report, forced=forced)
    return report, list(warnings)


# --------------------------------------------------------------------------- install / remove


def _pending_path(prefix: Path) -> Path:
    return prefix / META_DIR / "pending.json"


def _read_pending(prefix: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_pending_path(prefix).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class UpdatePlan:
    """An install or remove, planned (nothing changed yet); `apply_update` carries it out."""

    report: ChangeReport
    prefix: Path
    name: str | None
    installed: tuple = field(repr=False)
    target: tuple = field(repr=False)
    meta: EnvMeta = field(repr=False)
    update_specs: tuple[str, ...] = ()
    remove_specs: tuple[str, ...] = ()
    solve_specs: tuple[str, ...] = ()
    reinstall: tuple[str, ...] = ()
    normalize: bool = False
    image_version: str | None = None  # an image env: the version planned on


def require_writable(prefix: Path, dirs: Sequence[Path]) -> None:
    """Refuse (exit 2, before any step) to change an env whose directories we cannot write:
    another user's env, or one on a read-only mount."""
    import pwd

    for d in dirs:
        if os.access(d, os.W_OK | os.X_OK):
            continue
        try:
            owner = pwd.getpwuid(os.stat(d).st_uid).pw_name
        except (KeyError, OSError):
            owner = "someone else"
        mine = owner == pwd.getpwuid(os.geteuid()).pw_name
        raise RefusedError(
            f"cannot change environment {prefix}: {d} is not writable by you"
            + ("" if mine else f" (it belongs to {owner})"),
            hint="hpcenv does not change files of others: ask the owner to share it "
            "(`hpcenv share`), or work on an environment of your own"
            if not mine
            else f"make it writable (`chmod u+w {d}`) or check the mount",
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
    the rule of `envplan`; nothing is changed."""
    from hpcenv import engine

    name, prefix = resolve(layout, name_or_prefix)
    from hpcenv.trust import check_trusted

    check_trusted(prefix)
    tree, image_version = prefix, None
    if is_image(prefix):  # planned on the current version; applied as a new one (`images`)
        from hpcenv import images

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
    _refuse_damaged(state, name, prefix, add_names)
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
        req = CreateRequest(name=name, prefix=prefix, cuda=cuda or meta.cuda, gpu=gpu or meta.gpu)
        from hpcenv import gpu as gpu_mod

        gpu_info, warnings, cuda_v, solve_add = _gpu_prepare(
            settings, req, list(add), gpu_mod.detect_cuda_driver()
        )
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
        gpu_report, more = _gpu_check(settings, req, target, gpu_info)
        warnings += more
        download = solution.download_size
        meta = EnvMeta(**{**meta.__dict__, "cuda": cuda_v or meta.cuda, "gpu": req.gpu})
        if pending or damaged & add_names:
            reinstall = tuple({p.name for p in installed} if pending else (damaged & add_names))
    changes = diff(installed, target, add_names | drop_names, serving)
    meta = EnvMeta(**{**meta.__dict__, "specs": tuple(specs.values()), "channels": rec_channels})
    report = ChangeReport(
        command,
        name,
        str(prefix),
        dry_run,
        lines(target),
        added=tuple(c.name for c in changes if c.kind == "add"),
        removed=tuple(c.name for c in changes if c.kind == "remove"),
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
    _check_space(prefix.parent, added)
    with _lock(layout, settings, on_wait):
        recovered = recover(layout)
        state = engine.read_prefix(prefix)
        if {p.key for p in state.packages} != {p.key for p in plan.installed}:
            raise RefusedError(
                f"{plan.name or prefix} changed while hpcenv was planning; nothing was changed",
                hint="re-run the command",
            )
        atomic_write(
            _pending_path(prefix),
            json.dumps({"solve_specs": list(plan.solve_specs), "started": time.time()}),
        )
        if plan.normalize and _normalize_noarch_records(state):
            state = engine.read_prefix(prefix)
        warnings = engine.install(
            plan.target,
            prefix,
            cache_dir=layout.package_cache,
            installed=state.packages,
            reinstall=plan.reinstall,
            show_progress=progress,
        )
        perms.limit_installed(prefix, layout.package_cache, plan.target)  # see create
        tick()
        asked = {spec_name(s): s for s in plan.update_specs}
        _write_conda_records(
            prefix,
            plan.installed,
            plan.target,
            update_specs=plan.update_specs,
            remove_specs=plan.remove_specs,
            asked=asked,
        )
        meta = EnvMeta(**{**plan.meta.__dict__, "updated": time.time()})
        meta.save(prefix)
        _write_activation(prefix, prefix, plan.name, settings)
        os.unlink(_pending_path(prefix))
        try:  # an env hpcenv changed is one it knows from now on (conda does the same)
            set_registered(layout, plan.name, prefix, True)
        except RefusedError as exc:
            warnings = [*warnings, f"{prefix} was changed but not registered: {exc.message}"]
    r = plan.report
    return ChangeReport(
        **{
            **r.__dict__,
            "dry_run": False,
            "warnings": (*r.warnings, *warnings),
            "seconds": time.perf_counter() - start,
            "recovered": tuple(recovered),
            "leftovers_removed": tuple(x.path for x in recovered if x.action == "removed"),
            "resumed": bool(plan.reinstall),
        }
    )


def consent_question(report: ChangeReport) -> str:
    what = ", ".join(c.describe() for c in report.needs_consent)
    why = f" because {report.relaxed}" if report.relaxed else ""
    return f"this {report.command} changes packages you did not name{why}: {what}"


# --------------------------------------------------------------------------- delete


def delete(layout: Layout, settings: Settings, name_or_prefix: str, on_wait=None) -> ChangeReport:
    """Delete an environment and unregister it everywhere (the caller has confirmed).
    Re-running it after a kill finishes the interrupted delete."""
    from hpcenv.envjournal import delete as delete_prefix

    if is_path_argument(name_or_prefix):
        guess = Path(os.path.abspath(os.path.expanduser(name_or_prefix)))
    else:
        guess = env_prefix(layout, name_or_prefix)
    with _lock(layout, settings, on_wait):
        recovered = recover(layout)
        done = [r for r in recovered if r.prefix == str(guess) and r.action == "finished-delete"]
        if done:
            return ChangeReport(
                "remove", None, str(guess), False, (), removed=("(environment)",),
                recovered=tuple(recovered), resumed=True,
            )  # fmt: skip
        name, prefix = resolve(layout, name_or_prefix)
        if os.path.islink(prefix):
            target = Path(os.path.realpath(prefix))
            try:
                owner = os.lstat(target).st_uid
            except OSError:
                owner = os.geteuid()
            if owner != os.geteuid():
                raise RefusedError(
                    f"{prefix} is a link to {target}, which belongs to another user",
                    hint=f"remove only the link with `rm {prefix}`",
                )
        require_writable(prefix, [prefix.parent])
        spellings = [prefix, Path(os.path.realpath(prefix))]
        if any(needs_environments_txt_write(layout, p, False) for p in spellings):
            check_environments_txt(layout)  # it must be unregistered: refuse before deleting
        released = _image_mounts(prefix)
        problem = delete_prefix(layout, prefix, name)
    warnings = (problem,) if problem else ()
    if released:  # an image env: its unused mounts on this node go too (best effort)
        from hpcenv import mounts
        from hpcenv.errors import HpcenvError

        try:
            mounts.unmount(released[0].parent, {p.name for p in released})
        except (HpcenvError, OSError):
            pass
    return ChangeReport(
        "remove", name, str(prefix), False, (), removed=("(environment)",),
        warnings=warnings, recovered=tuple(recovered),
    )  # fmt: skip


def _image_mounts(prefix: Path) -> list[Path]:
    if not is_image(prefix):
        return []
    from hpcenv import images

    try:
        return [Path(v.mount) for v in images.read_image(prefix).versions]
    except OperationError:
        return []


__all__ += ["journal_key"]
