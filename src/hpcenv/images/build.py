"""Building one version of an image env (install at its mount path, mksquashfs, delete the
tree), and `create --image` (journaled as `create` is: `envs.journal`)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError
from hpcenv.images import mounts
from hpcenv.images.record import SUFFIX, ZSTD_LEVEL, ImageEnv, Version, label_for, write_image
from hpcenv.journal import tick


@dataclass(frozen=True)
class Built:
    version: Version
    warnings: tuple[str, ...]


def keep_history(history: Path) -> Callable[[Path], None]:
    """HISTORY's bytes as they are now, to write into a new version's tree: what an env's
    `conda-meta/history` says survives its rebuild (nothing is written when it had none)."""
    try:
        kept = history.read_bytes()
    except OSError:
        kept = b""

    def into(tree: Path) -> None:
        if kept:
            (tree / "conda-meta" / "history").write_bytes(kept)

    return into


def build_version(
    layout,
    settings,
    out_dir: Path,
    *,
    packages: Sequence,
    meta,
    name: str | None,
    label: str,
    number: int,
    write_records: Callable[[Path], None],
    progress: bool = False,
    pip_locked: Sequence = (),
) -> Built:
    """Install `packages` at a fresh mount path, image the tree into `out_dir/ID.sqfs` (atomic
    rename), delete the tree. `write_records(tree)` writes conda's history and records.
    `pip_locked`: the PyPI packages of a lock file (pypi.PypiPackage), installed as locked
    instead of resolving `meta.pip` again."""
    from hpcenv import engine, perms
    from hpcenv.activate import write_static_script
    from hpcenv.envs.checks import check_space
    from hpcenv.envs.plan import EnvMeta

    tools = mounts.check_tools(build=True)
    base = mounts.ensure_base(mounts.user_base(settings.images_mount_root))
    check_space(base, packages)
    vid = secrets.token_hex(5)
    with mounts.build_dir(base, f"{label}.{vid}") as tree:
        try:
            warnings = engine.install(
                list(packages), tree, cache_dir=layout.package_cache, show_progress=progress
            )
            tick()
            (tree / "conda-meta").mkdir(exist_ok=True)
            write_records(tree)
            if meta.pip:
                from hpcenv import pipstep

                pip_plan = pipstep.plan(
                    layout, tree, requirements=list(meta.pip), locked=pip_locked, creating=True
                )
                pipstep.apply(layout, pip_plan, final_prefix=tree)
            perms.limit_installed(tree, layout.package_cache, packages)
            now = time.time()
            EnvMeta(**{**meta.__dict__, "updated": now, "created": meta.created or now}).save(tree)
            write_static_script(tree, name or str(tree), settings.no_user_site, build_dir=tree)
            tick()
            files = _count(tree)
            image = out_dir / f"{vid}{SUFFIX}"
            _mksquashfs(str(tools.mksquashfs), tree, image)
        except OSError as exc:
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise OperationError(
                    f"ran out of space while building the image of {name or out_dir}; "
                    "nothing was changed",
                    hint=f"free space in {base} and in storage (`hpcenv clean`), or set "
                    "images.mount_root to a bigger node-local disk",
                ) from None
            raise
    tick()
    version = Version(vid, str(tree), number, time.time(), len(packages), files,
                      image.stat().st_size)  # fmt: skip
    return Built(version, tuple(warnings))


def _count(tree: Path) -> int:
    n = 0
    for _dirpath, dirnames, filenames in os.walk(tree):
        n += len(dirnames) + len(filenames)
    return n


def processors() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _mksquashfs(exe: str, tree: Path, image: Path) -> None:
    """`mksquashfs` into a temporary sibling, fsync, rename into place."""
    tmp = image.with_name(f".{image.name}.tmp-{os.getpid()}")
    argv = [exe, str(tree), str(tmp), "-noappend", "-comp", "zstd",
            "-Xcompression-level", str(ZSTD_LEVEL), "-processors", str(processors()),
            "-no-xattrs", "-quiet", "-no-progress"]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())[-300:]
            if "No space left" in said or "quota" in said.lower():
                raise OSError(28, said)
            raise OperationError(f"mksquashfs failed: {said}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644 & ~_umask())
        os.rename(tmp, image)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- create


def create(layout, settings, *, prefix: Path, name: str | None, solution, meta, specs,
           force: bool, progress: bool, on_wait,
           pip_locked: Sequence = ()) -> tuple[list, list, bool]:  # fmt: skip
    """Build a new image env at `prefix` (journaled as `create` is: `envs.journal`), replacing
    an existing env with `force`. Returns (warnings, recovered, resumed)."""
    from hpcenv.condameta import spec_name, write_records
    from hpcenv.envs.journal import RecoveryAction, begin_build, recover, storage_lock

    with storage_lock(layout, settings, on_wait):
        recovered = recover(layout)
        if not force and any(
            r.prefix == str(prefix) and r.action is RecoveryAction.FINISHED_CREATE
            for r in recovered
        ):
            return [], recovered, True  # an interrupted create of it, finished just now
        if os.path.lexists(prefix) and not force:
            raise RefusedError(
                f"environment {name or prefix} already exists at {prefix}",
                hint="use `hpcenv install` to add packages, or --force to replace it",
            )
        replace_old = os.path.lexists(prefix)
        if replace_old and os.path.islink(prefix):
            raise RefusedError(
                f"{prefix} is a symbolic link; --force will not replace what it points to",
                hint=f"remove it first: `hpcenv remove {name or prefix} --yes`",
            )
        tx = begin_build(layout, prefix, name, replace=replace_old, specs=list(specs))
        try:
            os.mkdir(tx.tmp, 0o755)

            def records(tree: Path) -> None:
                write_records(tree, (), solution.packages, update_specs=specs,
                                     asked={spec_name(s): s for s in specs})  # fmt: skip

            built = build_version(
                layout, settings, tx.tmp, packages=solution.packages, meta=meta, name=name,
                label=label_for(name, prefix), number=1, write_records=records,
                progress=progress, pip_locked=pip_locked,
            )  # fmt: skip
            write_image(ImageEnv(tx.tmp, name, built.version.id, (built.version,), meta.made_by))
            tick()
            tx.built()
        except BaseException:
            tx.abandon()
            raise
        tx.commit()
    return list(built.warnings), recovered, False


# --------------------------------------------------------------------------- use
