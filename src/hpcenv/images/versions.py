"""Using and changing an image env: its current version mounted here, `install`/`remove` as a
new version and a switch, and the older versions that can go (`clean`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError
from hpcenv.images import mounts
from hpcenv.images.build import build_version, keep_history
from hpcenv.images.record import (
    _ID,
    _TMP_IMAGE,
    SUFFIX,
    is_image_dir,
    label_for,
    read_image,
    write_image,
)
from hpcenv.journal import tick


@dataclass(frozen=True)
class ImageRef:
    """The current version of an image env, for commands that run or expose it."""

    path: Path  # the env's directory in storage
    image: Path  # the current version's file
    mount: Path
    number: int
    mounted: mounts.Mounted | None = None


def current_ref(path: Path) -> ImageRef:
    img = read_image(path)
    v = img.version
    return ImageRef(img.path, img.file(v), Path(v.mount), v.number)


def mount_current(path: Path, *, hold: bool = True) -> ImageRef:
    """Mount the current version here (once; see `mounts.ensure_mounted`)."""
    ref = current_ref(path)
    done = mounts.ensure_mounted(ref.image, ref.mount, hold=hold)
    return replace(ref, mounted=done)


# --------------------------------------------------------------------------- install / remove


def apply_update(layout, settings, plan, *, progress: bool = False, on_wait=None):
    """Carry out an install/remove plan of an image env: a new version from the plan's
    target records, then the switch; then the versions no job uses go."""
    from hpcenv.condameta import spec_name, write_records
    from hpcenv.envs.journal import RecoveryAction, storage_lock
    from hpcenv.envs.plan import EnvMeta

    start = time.perf_counter()
    with storage_lock(layout, settings, on_wait):
        from hpcenv.envs.journal import recover

        recovered = recover(layout)
        img = read_image(plan.prefix)
        if img.current != plan.image_version:
            raise RefusedError(
                f"{plan.name or plan.prefix} changed while hpcenv was planning; "
                "nothing was changed",
                hint="re-run the command",
            )
        old = mount_current(plan.prefix)
        history = keep_history(Path(old.mount) / "conda-meta" / "history")

        def records(tree: Path) -> None:
            history(tree)
            write_records(
                tree, plan.installed, plan.target, update_specs=plan.update_specs,
                remove_specs=plan.remove_specs,
                asked={spec_name(s): s for s in plan.update_specs},
            )  # fmt: skip

        meta = EnvMeta(**{**plan.meta.__dict__, "updated": time.time()})
        built = build_version(
            layout, settings, plan.prefix, packages=plan.target, meta=meta, name=plan.name,
            label=label_for(plan.name, plan.prefix),
            number=max(v.number for v in img.versions) + 1, write_records=records,
            progress=progress,
        )  # fmt: skip
        write_image(replace(img, current=built.version.id,
                            versions=(*img.versions, built.version)))  # fmt: skip
        tick()
        removed, why = prune(layout, plan.prefix)
    warnings = [*plan.report.warnings, *built.warnings]
    if why:
        warnings.append(why)
    r = plan.report
    return replace(
        r,
        dry_run=False,
        warnings=tuple(warnings),
        seconds=time.perf_counter() - start,
        recovered=tuple(recovered),
        leftovers_removed=tuple(x.path for x in recovered if x.action is RecoveryAction.REMOVED),
    )


# --------------------------------------------------------------------------- old versions


@dataclass(frozen=True)
class StaleVersion:
    env: str  # the env's directory
    path: str  # the file
    bytes: int
    reason: str


def stale_versions(envs: Sequence[Path], environ=None) -> tuple[list[StaleVersion], str | None]:
    """Image files of `envs` that can go: versions other than the current one that no queued
    or running job's script names (all are kept when SLURM cannot be asked), images no record
    lists (a switch interrupted before its commit), and temporary images of dead builds:
    (what can go, why some were kept)."""
    from hpcenv.journal import pid_alive

    sure: list[StaleVersion] = []
    old: list[StaleVersion] = []
    for env in envs:
        try:
            img = read_image(env)
            entries = list(os.scandir(env))
        except (OperationError, OSError):
            continue
        listed = {v.id for v in img.versions}
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
            tmp = _TMP_IMAGE.match(entry.name)
            vid = entry.name.removesuffix(SUFFIX) if entry.name.endswith(SUFFIX) else None
            if tmp and not pid_alive(int(tmp["pid"])):
                sure.append(StaleVersion(str(env), entry.path, size, "an interrupted build"))
            elif vid and _ID.match(vid) and vid not in listed:
                sure.append(StaleVersion(str(env), entry.path, size, "a build never switched to"))
            elif vid in listed and vid != img.current:
                old.append(StaleVersion(str(env), entry.path, size, "an older version"))
    if not old:
        return sure, None
    from hpcenv.clean.plan import _queued_scripts

    scripts = _queued_scripts(environ or os.environ)
    if scripts is None:
        return sure, (
            f"could not ask SLURM about queued jobs: kept {len(old)} older image version(s) "
            "that they may mount (check with `sinfo`)"
        )
    used = [s for s in old if any(os.path.basename(s.path) in script for script in scripts)]
    why = f"kept {len(used)} older image version(s) that queued or running jobs mount"
    return sure + [s for s in old if s not in used], (why if used else None)


def remove_version(item_path: Path) -> None:
    """Delete one image file; an older version leaves the record first (it stays correct if
    the process dies between the two steps)."""
    env = item_path.parent
    vid = item_path.name.removesuffix(SUFFIX)
    if is_image_dir(env) and item_path.name.endswith(SUFFIX):
        img = read_image(env)
        if vid == img.current:
            raise OperationError(f"{item_path} is the current version")
        if any(v.id == vid for v in img.versions):
            write_image(replace(img, versions=tuple(v for v in img.versions if v.id != vid)))
            tick()
    item_path.unlink(missing_ok=True)
    tick()


def prune(layout, env: Path) -> tuple[list[str], str | None]:
    """Remove `env`'s stale image files now (the caller holds the storage lock)."""
    items, why = stale_versions([env])
    for item in items:
        remove_version(Path(item.path))
    return [i.path for i in items], why


# --------------------------------------------------------------------------- convert
