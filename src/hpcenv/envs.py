"""Environments in storage: create, install, remove, list, info, export; the env registry.

A named environment lives at `~/.conda/envs/NAME` (in storage once `hpcenv setup` ran) and is
registered in `~/.conda/environments.txt`, so the site's conda and mamba see it. What the user
asked for (specs, channels, pip requirements, CUDA) is kept beside the packages in
`PREFIX/etc/hpcenv/env.json`; the static activation script in `PREFIX/etc/hpcenv/activate.sh`.

Creation is atomic: the env is built in a hidden sibling directory (`.NAME.hpcenv-tmp-PID`)
with the final prefix patched into its files, then renamed into place. A leftover sibling is
the sign of an interrupted create; `remove_leftovers` deletes it (the next command that touches
the storage calls it). Updates in place are marked by `PREFIX/etc/hpcenv/pending.json` until
they finish; re-running the update repairs an interrupted one.
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
from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.journal import StorageLock, pid_alive, tick
from hpcenv.settings import Settings
from hpcenv.storage import Layout, ensure_state_dir, free_bytes, is_within, validate_env_name

META_DIR = Path("etc") / "hpcenv"
TMP_MARK = ".hpcenv-tmp-"
INSTALL_MARGIN = 4 * 1024 * 1024
EXTRACT_FACTOR = 4  # extracted size ~ archive size x this (conda packages compress 2-4x)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class EnvMeta:
    """What was asked for; stored in PREFIX/etc/hpcenv/env.json."""

    name: str | None
    prefix: str
    specs: tuple[str, ...]
    channels: tuple[str, ...]
    pip: tuple[str, ...] = ()
    cuda: str | None = None
    gpu: bool = False
    created: float = 0.0
    updated: float = 0.0

    @classmethod
    def load(cls, prefix: Path) -> EnvMeta | None:
        try:
            data = json.loads((prefix / META_DIR / "env.json").read_text())
        except (OSError, ValueError):
            return None
        fields = cls.__dataclass_fields__
        data = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields}
        return cls(**data)

    def save(self, prefix: Path) -> None:
        from hpcenv.report import jsonable

        _atomic_write(prefix / META_DIR / "env.json", json.dumps(jsonable(self), indent=2) + "\n")


@dataclass(frozen=True)
class PackageLine:
    name: str
    version: str
    build: str
    channel: str
    size: int | None = None


@dataclass(frozen=True)
class ChangeReport:
    """The result of create / install / remove."""

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


@dataclass(frozen=True)
class EnvSummary:
    name: str | None
    prefix: str
    packages: int
    apparent_bytes: int
    unique_bytes: int
    files: int
    created: float | None
    updated: float | None
    exists: bool = True
    owner: str | None = None


@dataclass(frozen=True)
class EnvInfo:
    name: str | None
    prefix: str
    specs: tuple[str, ...]
    channels: tuple[str, ...]
    pip: tuple[str, ...]
    cuda: str | None
    packages: tuple[PackageLine, ...]
    gpu: Any = None
    pending: bool = False


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


# --------------------------------------------------------------------------- small helpers


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def channel_urls(settings: Settings, channels: Sequence[str]) -> list[str]:
    """Channel names to URLs: mirrors first, then the channel alias; paths to file:// URLs."""
    urls = []
    for channel in channels or settings.channels:
        if channel in settings.mirrors:
            urls.append(settings.mirrors[channel])
        elif "://" in channel:
            urls.append(settings.mirrors.get(channel, channel))
        elif channel.startswith(("/", "./", "~")):
            urls.append(Path(os.path.expanduser(channel)).resolve().as_uri())
        else:
            urls.append(f"{settings.channel_alias.rstrip('/')}/{channel}")
    return urls


def env_prefix(layout: Layout, name: str) -> Path:
    return layout.envs_dir / validate_env_name(name)


def resolve(layout: Layout, name_or_prefix: str) -> tuple[str | None, Path]:
    """NAME (a registered env) or a path (with a '/') to (name, prefix); must exist."""
    if "/" in name_or_prefix:
        prefix = Path(os.path.abspath(os.path.expanduser(name_or_prefix)))
        name = None
    else:
        name = name_or_prefix
        prefix = env_prefix(layout, name)
    if not (prefix / "conda-meta").is_dir():
        known = ", ".join(e.name or e.prefix for e in list_envs(layout, scan=False)) or "none"
        raise UsageError(
            f"no environment {name_or_prefix!r} (looked in {prefix})",
            hint=f"known environments: {known}; create one with `hpcenv create NAME python`",
        )
    return name, prefix


def _registry_path(layout: Layout) -> Path:
    return layout.state_dir / "registry.json"


def read_registry(layout: Layout) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(_registry_path(layout).read_text())
    except (OSError, ValueError):
        return {}


def _register(layout: Layout, name: str | None, prefix: Path, present: bool) -> None:
    ensure_state_dir(layout)
    registry = read_registry(layout)
    if present:
        registry[str(prefix)] = {"name": name}
    else:
        registry.pop(str(prefix), None)
    _atomic_write(_registry_path(layout), json.dumps(registry, indent=2) + "\n", 0o600)
    _environments_txt(layout, prefix, present)


def _environments_txt(layout: Layout, prefix: Path, present: bool) -> None:
    """Keep conda's ~/.conda/environments.txt in step (idempotent)."""
    path = layout.environments_txt
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    entry = str(prefix)
    if present and entry not in lines:
        lines.append(entry)
    elif not present and entry in lines:
        lines = [line for line in lines if line != entry]
    else:
        return
    _atomic_write(path, "".join(f"{line}\n" for line in lines))


def _lock(layout: Layout, settings: Settings, on_wait=None) -> StorageLock:
    ensure_state_dir(layout)
    return StorageLock(layout.lock_path, timeout=settings.lock_timeout, on_wait=on_wait)


def remove_leftovers(layout: Layout) -> list[str]:
    """Delete the temporary prefixes of interrupted creates (under the lock); report them."""
    removed = []
    if not layout.envs_dir.is_dir():
        return removed
    for entry in layout.envs_dir.iterdir():
        if TMP_MARK in entry.name and entry.name.startswith("."):
            pid = entry.name.rsplit("-", 1)[-1]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    return removed


def remove_leftovers_locked(layout: Layout, settings: Settings) -> list[str]:
    """`remove_leftovers` under the storage lock, for commands that do not hold it."""
    if not find_leftovers(layout):
        return []
    with _lock(layout, settings):
        return remove_leftovers(layout)


def find_leftovers(layout: Layout) -> list[Path]:
    if not layout.envs_dir.is_dir():
        return []
    return [e for e in layout.envs_dir.iterdir() if e.name.startswith(".") and TMP_MARK in e.name]


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


def _check_space(prefix_parent: Path, solution) -> None:
    need = solution.download_size * (1 + EXTRACT_FACTOR)
    have = free_bytes(prefix_parent)
    if need + INSTALL_MARGIN > have:
        from hpcenv.report import human_bytes

        raise RefusedError(
            f"not enough space on {prefix_parent}: this environment needs about "
            f"{human_bytes(need)} (download and unpacked) plus a margin, "
            f"{human_bytes(have)} is free",
            hint="free space (`hpcenv clean`) or create it elsewhere with -p PREFIX",
        )


def _lines(packages) -> tuple[PackageLine, ...]:
    return tuple(
        PackageLine(p.name, p.version, p.build, _short_channel(p.channel), p.size)
        for p in sorted(packages, key=lambda p: p.name)
    )


def _short_channel(channel: str | None) -> str:
    if not channel:
        return ""
    return channel.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- create


def create(
    layout: Layout,
    settings: Settings,
    req: CreateRequest,
    *,
    progress: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> ChangeReport:
    """Solve, check, and build a new environment atomically."""
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
    if not req.specs and req.lockfile is None:
        raise UsageError(
            "nothing to install: give package specs or -f FILE", hint="hpcenv create NAME python"
        )
    if os.path.lexists(prefix) and not req.force:
        raise RefusedError(
            f"environment {name or prefix} already exists at {prefix}",
            hint="use `hpcenv install` to add packages, or --force to replace it",
        )
    _check_location(layout, prefix, req.allow_home or settings.allow_home)
    channels = req.channels or list(settings.channels)
    urls = channel_urls(settings, channels)
    cache = layout.package_cache
    from hpcenv import gpu

    detected = gpu.detect_cuda_driver_soon()  # the probe child runs while the engine loads
    from hpcenv import engine

    gpu_info, warnings, cuda, specs = _gpu_prepare(settings, req, req.specs, detected())

    if req.lockfile is not None:
        packages = engine.read_lock(req.lockfile)
        solution = engine.Solution(tuple(packages))
    else:
        solution = engine.solve(urls, specs, cache_dir=cache, cuda=cuda)
    gpu_report, more = _gpu_check(settings, req, solution.packages, gpu_info)
    warnings += more
    report_args = dict(
        name=name,
        prefix=str(prefix),
        packages=_lines(solution.packages),
        download_bytes=solution.download_size,
        pip=tuple(req.pip),
        gpu=gpu_report,
    )
    if req.dry_run:
        return ChangeReport(
            "create",
            dry_run=True,
            warnings=tuple(warnings),
            added=tuple(p.name for p in solution.packages),
            **report_args,
        )

    prefix.parent.mkdir(parents=True, exist_ok=True)
    _check_space(prefix.parent, solution)
    with _lock(layout, settings, on_wait):
        leftovers = remove_leftovers(layout)
        tmp = prefix.with_name(f".{prefix.name}{TMP_MARK}{os.getpid()}")
        try:
            engine.install(
                solution, tmp, cache_dir=cache, final_prefix=prefix, show_progress=progress
            )
            _append_history(tmp, solution.packages, ())
            tick()
            if req.pip:
                _pip_install(layout, tmp, prefix, req.pip)
                tick()
            perms.limit_installed(tmp, cache, solution.packages)  # archives carry their modes
            now = time.time()
            meta = EnvMeta(
                name,
                str(prefix),
                tuple(req.specs),
                tuple(channels),
                tuple(req.pip),
                cuda,
                req.gpu,
                now,
                now,
            )
            meta.save(tmp)
            _write_activation(tmp, prefix, name, settings)
            if os.path.lexists(prefix):  # --force: replace only once the new one is complete
                old = prefix.with_name(f".{prefix.name}{TMP_MARK}old-{os.getpid()}")
                os.rename(prefix, old)
                os.rename(tmp, prefix)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, prefix)
            tick()
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise OperationError(
                    f"ran out of space while building {name or prefix}; nothing was created",
                    hint="free space (`hpcenv clean`) and re-run",
                ) from None
            raise
        _register(layout, name, prefix, True)
    return ChangeReport(
        "create",
        dry_run=False,
        warnings=tuple(warnings),
        added=tuple(p.name for p in solution.packages),
        seconds=time.perf_counter() - start,
        leftovers_removed=tuple(leftovers),
        **report_args,
    )


def _append_history(prefix: Path, added, removed) -> None:
    """A conda-format entry in conda-meta/history, so `conda list --revisions` reads it."""
    import sys

    from hpcenv import __version__

    def dist(p) -> str:
        return f"{p.channel}::{p.name}-{p.version}-{p.build}"

    lines = [
        time.strftime("==> %Y-%m-%d %H:%M:%S <=="),
        "# cmd: " + " ".join(["hpcenv", *sys.argv[1:]]),
        f"# hpcenv version: {__version__}",
        *(f"-{dist(p)}" for p in sorted(removed, key=lambda p: p.name)),
        *(f"+{dist(p)}" for p in sorted(added, key=lambda p: p.name)),
    ]
    with open(prefix / "conda-meta" / "history", "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _write_activation(
    build_prefix: Path, final_prefix: Path, name: str | None, settings: Settings
) -> None:
    """The static script names the final prefix, but lists the hooks found in the build."""
    from hpcenv.activate import static_script

    text = static_script(
        final_prefix,
        name=name or str(final_prefix),
        no_user_site=settings.no_user_site,
        look_in=build_prefix,
    )
    _atomic_write(build_prefix / META_DIR / "activate.sh", text)


def _pip_install(
    layout: Layout, build_prefix: Path, final_prefix: Path, requirements: Sequence[str]
) -> None:
    """Install an environment.yml `pip:` list with uv into the env's interpreter."""
    import subprocess
    import tempfile

    python = build_prefix / "bin" / "python"
    if not python.exists():
        raise UsageError(
            "the environment.yml has a pip: section but no python in its dependencies",
            hint="add python to dependencies",
        )
    try:
        from uv import find_uv_bin

        uv = find_uv_bin()
    except (ImportError, FileNotFoundError):
        uv = shutil.which("uv")
    if not uv:
        raise OperationError("uv is not installed", hint="pip install uv")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
        reqs.write("\n".join(requirements) + "\n")
    env = {**os.environ, "UV_CACHE_DIR": str(layout.uv_cache), "VIRTUAL_ENV": str(build_prefix)}
    try:
        result = subprocess.run(
            [uv, "pip", "install", "--python", str(python), "-r", reqs.name],
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(reqs.name)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise OperationError(
            f"pip requirements failed to install: {' / '.join(lines[-3:])}",
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


# --------------------------------------------------------------------------- update in place


def _pending_path(prefix: Path) -> Path:
    return prefix / META_DIR / "pending.json"


def update(
    layout: Layout,
    settings: Settings,
    name_or_prefix: str,
    *,
    add: Sequence[str] = (),
    drop: Sequence[str] = (),
    cuda: str | None = None,
    gpu: bool = False,
    dry_run: bool = False,
    progress: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> ChangeReport:
    """`install` (add specs) or `remove` (drop packages): re-solve with the recorded specs,
    apply only the difference. An interrupted update is repaired by running it again."""
    from hpcenv import engine

    start = time.perf_counter()
    name, prefix = resolve(layout, name_or_prefix)
    meta = EnvMeta.load(prefix) or EnvMeta(name, str(prefix), (), tuple(settings.channels))
    pending = _read_pending(prefix)
    drop_names = {_spec_name(s) for s in drop}
    specs = [s for s in meta.specs if _spec_name(s) not in drop_names]
    add_names = {_spec_name(s) for s in add}
    specs = [s for s in specs if _spec_name(s) not in add_names] + list(add)
    if pending:  # finish what an interrupted run started
        specs = pending["specs"]
    if drop:
        unknown = drop_names - {_spec_name(s) for s in meta.specs}
        installed_names = {p.name for p in engine.installed_packages(prefix)}
        missing = [n for n in unknown if n not in installed_names]
        if missing:
            raise UsageError(f"{', '.join(sorted(missing))} is not installed in {name or prefix}")
    req = CreateRequest(
        name=name, prefix=prefix, specs=specs, cuda=cuda or meta.cuda, gpu=gpu or meta.gpu
    )
    from hpcenv import gpu as gpu_mod

    gpu_info, warnings, cuda_v, solve_specs = _gpu_prepare(
        settings, req, specs, gpu_mod.detect_cuda_driver()
    )
    urls = channel_urls(settings, meta.channels)
    installed = engine.installed_packages(prefix)
    if drop and not specs:
        raise UsageError(
            "that would remove every requested package",
            hint=f"delete the environment with `hpcenv remove {name or prefix} --yes`",
        )
    solution = engine.solve(
        urls, solve_specs, cache_dir=layout.package_cache, cuda=cuda_v, installed=installed
    )
    gpu_report, more = _gpu_check(settings, req, solution.packages, gpu_info)
    before = {(p.name, p.version, p.build) for p in installed}
    after = {(p.name, p.version, p.build) for p in solution.packages}
    added = tuple(sorted(n for n, v, b in after - before))
    removed = tuple(sorted(n for n, v, b in before - after if n not in {x[0] for x in after}))
    args = dict(
        name=name,
        prefix=str(prefix),
        packages=_lines(solution.packages),
        added=added,
        removed=removed,
        download_bytes=solution.download_size,
        gpu=gpu_report,
    )
    command = "remove" if drop else "install"
    if dry_run:
        return ChangeReport(command, dry_run=True, warnings=tuple(warnings + more), **args)
    _check_space(prefix.parent, solution)
    with _lock(layout, settings, on_wait):
        leftovers = remove_leftovers(layout)
        _atomic_write(_pending_path(prefix), json.dumps({"specs": specs, "started": time.time()}))
        reinstall = {p.name for p in installed} if pending else set()
        engine.install(
            solution,
            prefix,
            cache_dir=layout.package_cache,
            installed=installed,
            reinstall=reinstall,
            show_progress=progress,
        )
        perms.limit_installed(prefix, layout.package_cache, solution.packages)  # see create
        old = {(p.name, p.version, p.build): p for p in installed}
        new = {(p.name, p.version, p.build): p for p in solution.packages}
        _append_history(
            prefix,
            [new[k] for k in new.keys() - old.keys()],
            [old[k] for k in old.keys() - new.keys()],
        )
        new_meta = EnvMeta(
            meta.name if meta.name is not None else name,
            str(prefix),
            tuple(specs),
            meta.channels,
            meta.pip,
            cuda_v or meta.cuda,
            req.gpu,
            meta.created,
            time.time(),
        )
        new_meta.save(prefix)
        _write_activation(prefix, prefix, name, settings)
        os.unlink(_pending_path(prefix))
    return ChangeReport(
        command,
        dry_run=False,
        warnings=tuple(warnings + more),
        seconds=time.perf_counter() - start,
        leftovers_removed=tuple(leftovers),
        **args,
    )


def _read_pending(prefix: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_pending_path(prefix).read_text())
    except (OSError, ValueError):
        return None


def _spec_name(spec: str) -> str:
    """The package name of a match spec ('numpy >=1.2', 'conda-forge::numpy=1', 'numpy[...]')."""
    text = spec.strip().split("::")[-1]
    for i, ch in enumerate(text):
        if ch in " =<>!~[":
            return text[:i].lower()
    return text.lower()


def delete(layout: Layout, settings: Settings, name_or_prefix: str, on_wait=None) -> ChangeReport:
    """Delete an environment and unregister it everywhere (the caller has confirmed)."""
    name, prefix = resolve(layout, name_or_prefix)
    with _lock(layout, settings, on_wait):
        # rename first: the name disappears atomically, then the tree goes
        trash = prefix.with_name(f".{prefix.name}{TMP_MARK}rm-{os.getpid()}")
        os.rename(prefix, trash)
        _register(layout, name, prefix, False)
        shutil.rmtree(trash, ignore_errors=True)
    return ChangeReport("remove", name, str(prefix), False, (), removed=("(environment)",))


# --------------------------------------------------------------------------- read commands


def known_prefixes(layout: Layout) -> dict[Path, str | None]:
    """Every env hpcenv knows: the envs dir, its registry, and conda's environments.txt."""
    found: dict[Path, str | None] = {}
    if layout.envs_dir.is_dir():
        for entry in sorted(layout.envs_dir.iterdir()):
            if not entry.name.startswith(".") and (entry / "conda-meta").is_dir():
                found[entry] = entry.name
    for prefix, rec in read_registry(layout).items():
        found.setdefault(Path(prefix), rec.get("name"))
    return found


def list_envs(layout: Layout, *, scan: bool = True) -> list[EnvSummary]:
    """Name, prefix, package count, size (apparent and unique after hardlinks), files, dates."""
    out = []
    prefixes = known_prefixes(layout)
    usages = {}
    if scan and prefixes:
        from hpcenv.usage import scan_many

        usages = scan_many([p for p in prefixes if p.exists()])
    for prefix, name in prefixes.items():
        meta = EnvMeta.load(prefix)
        exists = (prefix / "conda-meta").is_dir()
        count = len(list((prefix / "conda-meta").glob("*.json"))) if exists else 0
        u = usages.get(prefix)
        out.append(
            EnvSummary(
                name=name,
                prefix=str(prefix),
                packages=count,
                apparent_bytes=u.apparent_bytes if u else 0,
                unique_bytes=u.unique_bytes if u else 0,
                files=u.files if u else 0,
                created=meta.created if meta else None,
                updated=meta.updated if meta else None,
                exists=exists,
            )
        )
    return out


def info(layout: Layout, settings: Settings, name_or_prefix: str) -> EnvInfo:
    from hpcenv import engine, gpu

    name, prefix = resolve(layout, name_or_prefix)
    meta = EnvMeta.load(prefix)
    packages = engine.installed_packages(prefix)
    detected = gpu.detect_cuda_driver()
    driver = detected.version if detected else settings.gpu_cuda_version
    return EnvInfo(
        name=name,
        prefix=str(prefix),
        specs=meta.specs if meta else (),
        channels=meta.channels if meta else (),
        pip=meta.pip if meta else (),
        cuda=meta.cuda if meta else None,
        packages=_lines(packages),
        gpu=gpu.gpu_report(packages, driver, settings.gpu_packages),
        pending=_pending_path(prefix).exists(),
    )


def export_yaml(layout: Layout, name_or_prefix: str) -> str:
    """environment.yml from the requested specs (what the user asked for, not the solution)."""
    import yaml

    name, prefix = resolve(layout, name_or_prefix)
    meta = EnvMeta.load(prefix)
    if meta is None:
        raise UsageError(f"{prefix} was not created by hpcenv: no requested specs are recorded")
    doc: dict[str, Any] = {"name": name or prefix.name, "channels": list(meta.channels)}
    deps: list[Any] = list(meta.specs)
    if meta.pip:
        deps.append({"pip": list(meta.pip)})
    doc["dependencies"] = deps
    return yaml.safe_dump(doc, sort_keys=False)


def export_lock(layout: Layout, settings: Settings, name_or_prefix: str, out: Path) -> Path:
    """A lock file (rattler's format, which pixi reads) with exact URLs and hashes."""
    from hpcenv import engine

    name, prefix = resolve(layout, name_or_prefix)
    meta = EnvMeta.load(prefix)
    channels = channel_urls(settings, meta.channels if meta else settings.channels)
    engine.write_lock(engine.installed_packages(prefix), channels, out)
    return out


def read_environment_file(path: Path) -> dict[str, Any]:
    """Parse an environment.yml into name, channels, specs and pip requirements."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not an environment file (expected a mapping)")
    specs: list[str] = []
    pip: list[str] = []
    for dep in data.get("dependencies") or []:
        if isinstance(dep, str):
            specs.append(dep)
        elif isinstance(dep, dict) and set(dep) == {"pip"} and isinstance(dep["pip"], list):
            pip.extend(str(x) for x in dep["pip"])
        else:
            raise UsageError(f"{path}: unsupported dependency entry {dep!r}")
    channels = [str(c) for c in data.get("channels") or []]
    return {"name": data.get("name"), "channels": channels, "specs": specs, "pip": pip}


def is_lockfile(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:400]
    except OSError:
        return False
    return "version:" in head and ("environments:" in head or "packages:" in head)
