"""Reading environments: `list`, `info`, `export` — for every env the user has, whoever made it.

What an env was asked to hold comes from `envs.plan.requested` (env.json, conda's history, the
records' `requested_spec`, else every installed package), its channels from env.json or from
the records (the channels the packages actually came from), so `export` of a conda-made env
re-creates it and `export --lock` names the channels that were used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcenv.envs.plan import EnvMeta, PackageLine, SpecSource, lines, requested
from hpcenv.pypi import export_lines, has_pending, recorded, unrecorded
from hpcenv.registry import FoundIn, MadeBy, discover, env_maker, is_env, resolve
from hpcenv.settings import Settings
from hpcenv.storage import Layout

if TYPE_CHECKING:
    from hpcenv.gpu import GpuReport


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
    made_by: MadeBy = MadeBy.UNKNOWN
    found_in: tuple[FoundIn, ...] = ()
    image: Any = None  # an image env: `images.ImageSummary` (files/bytes above: in storage)


@dataclass(frozen=True)
class EnvList:
    envs: tuple[EnvSummary, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnvInfo:
    name: str | None
    prefix: str
    specs: tuple[str, ...]
    channels: tuple[str, ...]
    pip: tuple[str, ...]
    cuda: str | None
    packages: tuple[PackageLine, ...]
    gpu: GpuReport | None = None
    pending: bool = False
    made_by: MadeBy = MadeBy.UNKNOWN
    specs_from: SpecSource = SpecSource.HPCENV
    damaged: tuple[str, ...] = ()  # "conda-meta/x.json (package x): why; the fix"
    pypi: tuple[PypiLine, ...] = ()  # PyPI packages (hpcenv's record, then others found)
    pypi_pending: bool = False  # an `install --pip` was interrupted
    image: Any = None  # an image env: `images.ImageSummary` of its current version


@dataclass(frozen=True)
class PypiLine:
    name: str
    version: str
    source: str  # the wheel/sdist URL, the directory, or "unrecorded" (not installed by hpcenv)
    sha256: str | None = None


@dataclass(frozen=True)
class LockExport:
    path: str
    conda: int
    pypi: int
    left_out: tuple[str, ...] = ()  # PyPI packages a lock cannot pin, and why


def _count_records(prefix: Path) -> int:
    try:
        return sum(1 for n in os.listdir(prefix / "conda-meta") if n.endswith(".json"))
    except OSError:
        return 0


def list_envs(layout: Layout, *, scan: bool = True, shared_root: Path | None = None) -> EnvList:
    """Every env (`registry.discover`): name, prefix, who made it, package count, size
    (apparent and unique after hardlinks), files, dates. Shared envs are not scanned."""
    found = discover(layout, shared_root=shared_root)
    usages = {}
    if scan:
        from hpcenv.treescan import scan_many

        mine = [e.prefix for e in found.envs if e.owner is None and is_env(e.prefix)]
        usages = scan_many(mine) if mine else {}
    out = []
    for env in found.envs:
        meta = EnvMeta.load(env.prefix)
        exists = bool(is_env(env.prefix))
        u = usages.get(env.prefix)
        image = _image_summary(env.prefix)
        out.append(
            EnvSummary(
                name=env.name,
                prefix=str(env.prefix),
                packages=image.packages if image else _count_records(env.prefix) if exists else 0,
                apparent_bytes=u.apparent_bytes if u else 0,
                unique_bytes=u.unique_bytes if u else 0,
                files=u.files if u else 0,
                created=meta.created if meta else None,
                updated=meta.updated if meta else image.created if image else _mtime(env.prefix),
                exists=exists,
                owner=env.owner,
                made_by=env_maker(env.prefix) if exists else MadeBy.UNKNOWN,
                found_in=env.found_in,
                image=image,
            )
        )
    return EnvList(tuple(out), found.warnings)


def _image_summary(prefix: Path):
    from hpcenv.registry import is_image

    if not is_image(prefix):
        return None
    from hpcenv.images import summary

    return summary(prefix)


def _tree(prefix: Path) -> Path:
    """Where an env's files can be read: an image env's current version, mounted here."""
    from hpcenv.registry import is_image

    if not is_image(prefix):
        return prefix
    from hpcenv.images import readable_tree

    return readable_tree(prefix)


def _mtime(prefix: Path) -> float | None:
    try:
        return os.stat(prefix / "conda-meta").st_mtime
    except OSError:
        return None


def info(layout: Layout, settings: Settings, name_or_prefix: str) -> EnvInfo:
    from hpcenv import engine, gpu
    from hpcenv.envs.update import pending_path

    name, prefix = resolve(layout, name_or_prefix)
    tree = _tree(prefix)
    meta = EnvMeta.load(tree)
    state = engine.read_prefix(tree)
    asked = requested(tree, state.packages, meta)
    from hpcenv.cuda_driver import detect_cuda_driver

    detected = detect_cuda_driver()
    driver = detected.version if detected else settings.gpu_cuda_version
    fix = "re-create the env, or reinstall the package: `hpcenv install {} {}`"
    return EnvInfo(
        name=name,
        prefix=str(prefix),
        specs=asked.specs,
        channels=asked.channels,
        pip=meta.pip if meta else (),
        cuda=meta.cuda if meta else None,
        packages=lines(state.packages),
        gpu=gpu.gpu_report(state.packages, driver, settings.gpu_packages),
        pending=pending_path(tree).exists(),
        made_by=env_maker(tree),
        specs_from=asked.source,
        damaged=tuple(
            f"{d.path} (package {d.name}) is damaged: {d.reason}; "
            + fix.format(name or prefix, d.name)
            for d in state.damaged
        ),
        pypi=_pypi_lines(tree),
        pypi_pending=has_pending(tree),
        image=_image_summary(prefix),
    )


def _pypi_lines(prefix: Path) -> tuple[PypiLine, ...]:
    found = [PypiLine(p.name, p.version, p.url, p.sha256) for p in recorded(prefix)]
    found += [PypiLine(n, v, "unrecorded") for n, v in unrecorded(prefix)]
    return tuple(found)


def export_yaml(layout: Layout, settings: Settings, name_or_prefix: str) -> str:
    """environment.yml from what was requested (not the solution), with the channels used and
    the CUDA choice (`hpcenv: {cuda, gpu}`; the GPU packages' specs ask for CUDA builds)."""
    import yaml

    from hpcenv import engine

    name, prefix = resolve(layout, name_or_prefix)
    tree = _tree(prefix)
    meta = EnvMeta.load(tree)
    state = engine.read_prefix(tree)
    asked = requested(tree, state.packages, meta)
    specs = list(asked.specs)
    if meta is not None and meta.gpu:
        from hpcenv.gpu import force_gpu_specs

        specs = force_gpu_specs(specs, settings.gpu_packages)
    doc: dict[str, Any] = {"name": name or prefix.name, "channels": list(asked.channels)}
    deps: list[Any] = specs
    pip = export_lines(tree, meta.pip if meta is not None else ())
    if pip:
        deps.append({"pip": pip})
    doc["dependencies"] = deps
    if meta is not None and (meta.cuda or meta.gpu):
        doc["hpcenv"] = {"cuda": meta.cuda, "gpu": bool(meta.gpu)}
    return yaml.safe_dump(doc, sort_keys=False)


def export_lock(layout: Layout, settings: Settings, name_or_prefix: str, out: Path) -> LockExport:
    """A lock file (rattler's format, which pixi reads) with exact URLs and hashes, naming the
    channels the packages came from; the PyPI packages hpcenv installed with theirs. Those it
    cannot pin (no artifact with a hash: a local directory, a VCS checkout, a package
    installed by hand) are left out and named."""
    from hpcenv import engine
    from hpcenv.channels import channel_urls
    from hpcenv.envs.checks import refuse_damaged

    name, prefix = resolve(layout, name_or_prefix)
    tree = _tree(prefix)
    meta = EnvMeta.load(tree)
    state = engine.read_prefix(tree)
    refuse_damaged(state, name, prefix)
    asked = requested(tree, state.packages, meta)
    pinned = [p for p in recorded(tree) if p.lockable]
    left_out = [
        f"{p.name} {p.version} (from {p.url}: no file with a hash)"
        for p in recorded(tree)
        if not p.lockable
    ]
    left_out += [
        f"{n} {v} (not installed by hpcenv: no URL or hash known)" for n, v in unrecorded(tree)
    ]
    engine.write_lock(
        state.packages, channel_urls(settings, asked.channels), out,
        pypi=[(p.name, p.version, p.url, p.sha256 or "") for p in pinned],
    )  # fmt: skip
    return LockExport(str(out), len(state.packages), len(pinned), tuple(left_out))
