"""`hpcenv image NAME`: a plain env turned into an image env (journaled; the tree goes)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcenv.errors import RefusedError
from hpcenv.images import mounts
from hpcenv.images.build import build_version, keep_history
from hpcenv.images.record import SUFFIX, ImageEnv, is_image_dir, label_for, write_image
from hpcenv.journal import tick
from hpcenv.registry import META_DIR


@dataclass(frozen=True)
class ConvertPlan:
    name: str | None
    prefix: Path
    packages: tuple = field(repr=False)
    meta: Any = field(repr=False)
    package_count: int = 0
    files: int = 0  # in the tree today
    unaccounted: tuple[str, ...] = ()  # files the image would not hold


@dataclass(frozen=True)
class ConvertReport:
    name: str | None
    prefix: str
    files_before: int
    files_after: int  # in storage
    image: str
    image_bytes: int
    image_files: int
    dropped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    dry_run: bool = False


def plan_convert(layout, settings, name_or_prefix: str) -> ConvertPlan:
    """What `hpcenv image NAME` would do (changes nothing); refuses what it cannot convert."""
    from hpcenv import engine
    from hpcenv.envs.checks import refuse_damaged, require_writable
    from hpcenv.envs.plan import EnvMeta, requested
    from hpcenv.envs.update import _read_pending
    from hpcenv.registry import env_maker, resolve

    name, prefix = resolve(layout, name_or_prefix)
    if is_image_dir(prefix):
        raise RefusedError(
            f"{name or prefix} is an image env already",
            hint="`hpcenv install` and `hpcenv remove` make new versions of it",
        )
    if os.path.islink(prefix):
        raise RefusedError(
            f"{prefix} is a symbolic link; hpcenv will not replace what it points to",
            hint=f"convert the env by its real path: hpcenv image {os.path.realpath(prefix)}",
        )
    require_writable(prefix, [prefix.parent, prefix])
    state = engine.read_prefix(prefix)
    refuse_damaged(state, name, prefix)
    if _read_pending(prefix) is not None:
        raise RefusedError(
            f"an install into {name or prefix} was interrupted",
            hint=f"repair it first: `hpcenv install {name or prefix}`",
        )
    meta = EnvMeta.load(prefix)
    asked = requested(prefix, state.packages, meta)
    if meta is None:
        meta = EnvMeta(name, str(prefix), asked.specs, asked.channels or tuple(settings.channels),
                       made_by=env_maker(prefix))  # fmt: skip
    files, unaccounted = _unaccounted(prefix, meta.pip)
    return ConvertPlan(name, prefix, state.packages, meta, len(state.packages), files,
                       tuple(unaccounted))  # fmt: skip


def convert(layout, settings, plan: ConvertPlan, *, drop: bool = False, progress: bool = False,
            on_wait=None) -> ConvertReport:  # fmt: skip
    """Replace the plain env of `plan` by an image env (journaled; the tree is deleted)."""
    from hpcenv import engine
    from hpcenv.envs.journal import begin_build, recover, storage_lock

    start = time.perf_counter()
    if plan.unaccounted and not drop:
        shown = ", ".join(plan.unaccounted[:3])
        more = f" and {len(plan.unaccounted) - 3} more" if len(plan.unaccounted) > 3 else ""
        raise RefusedError(
            f"{plan.name or plan.prefix} holds {len(plan.unaccounted)} file(s) that no package "
            f"accounts for ({shown}{more}); the image would not hold them",
            hint="move them out of the env (or install them as packages), or pass --force "
            "to drop them",
        )
    mounts.check_tools(build=True)
    prefix = plan.prefix
    with storage_lock(layout, settings, on_wait):
        recover(layout)
        state = engine.read_prefix(prefix)
        if {p.key for p in state.packages} != {p.key for p in plan.packages}:
            raise RefusedError(
                f"{plan.name or prefix} changed while hpcenv was planning; nothing was changed",
                hint="re-run the command",
            )
        records = keep_history(prefix / "conda-meta" / "history")
        tx = begin_build(layout, prefix, plan.name, replace=True, specs=list(plan.meta.specs))
        try:
            os.mkdir(tx.tmp, 0o755)
            built = build_version(
                layout, settings, tx.tmp, packages=plan.packages, meta=plan.meta,
                name=plan.name, label=label_for(plan.name, prefix), number=1,
                write_records=records, progress=progress,
            )  # fmt: skip
            write_image(ImageEnv(tx.tmp, plan.name, built.version.id, (built.version,),
                                 plan.meta.made_by))  # fmt: skip
            tick()
            tx.built()
        except BaseException:
            tx.abandon()
            raise
        tx.commit()
    v = built.version
    return ConvertReport(
        plan.name, str(prefix), plan.files, len(os.listdir(prefix)), str(prefix / f"{v.id}{SUFFIX}"),
        v.bytes, v.files, plan.unaccounted if drop else (), built.warnings,
        time.perf_counter() - start,
    )  # fmt: skip


_REGENERATED = ("conda-meta", str(META_DIR))
_INSTALLER_FILES = (".lock", "CACHEDIR.TAG")  # written by rattler's installer in every prefix


def _unaccounted(prefix: Path, pip: Sequence[str]) -> tuple[int, list[str]]:
    """(files in the tree, the files that neither a package record nor a recorded pip
    requirement accounts for). Byte code, conda-meta and hpcenv's own files are made anew."""
    owned: set[str] = set()
    for record in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        owned.update(f for f in data.get("files") or [] if isinstance(f, str))
    wanted = {_norm(m[1]) for r in pip if (m := re.match(r"^\s*([A-Za-z0-9][\w.-]*)", r))}
    for dist in prefix.glob("lib/python*/site-packages/*.dist-info"):
        if _norm(dist.name.split("-", 1)[0]) not in wanted:
            continue
        try:
            lines = (dist / "RECORD").read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
            path = os.path.normpath(os.path.join(dist.parent, rel))
            owned.add(os.path.relpath(path, prefix))
    files = 0
    stray = []
    for dirpath, dirnames, filenames in os.walk(prefix):
        rel_dir = os.path.relpath(dirpath, prefix)
        dirnames[:] = [
            d
            for d in dirnames
            if d != "__pycache__" and os.path.normpath(os.path.join(rel_dir, d)) not in _REGENERATED
        ]
        for f in filenames:
            files += 1
            rel = os.path.normpath(os.path.join(rel_dir, f))
            if rel in owned or f.endswith((".pyc", ".pyo")) or rel in _INSTALLER_FILES:
                continue
            stray.append(rel)
    return files, sorted(stray)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- read, check
