"""Envs as one file: a squashfs image per env version, mounted on each node where it runs.

An image env lives in storage as a directory of a few files, where a plain env has a tree:

    ~/.conda/envs/NAME/hpcenv-image.json    which versions exist and which one is current
    ~/.conda/envs/NAME/ID.sqfs              one image per version (zstd), read-only

Each version is installed fresh (from the package cache) at its own node-local mount path,
`MOUNT_ROOT/hpcenv-img-USER/LABEL.ID` (`mounts`), where it is also mounted later: no prefix is
ever rewritten. `mksquashfs` turns that tree into `ID.sqfs` (written beside and renamed into
place); the tree is deleted, so only mounts are ever left at that path.

Changing an image env (`install`, `remove`) builds a new version from the current records
plus the change and switches `current` by renaming a new hpcenv-image.json into place: a
kill at any instant leaves the old version current, or the new one. Older versions stay while
the script of a queued or running job names them (and all of them while SLURM cannot be
asked), as packs do; `install`, `remove` and `clean` remove the others. A version still
mounted somewhere keeps working when its file goes: squashfuse holds it open.

`hpcenv image NAME` converts a plain env: the same package records are installed fresh at the
mount path and imaged, then the image directory replaces the tree in one journaled exchange
(`envjournal`), and the tree is deleted. It refuses an env holding files that no package
record (or recorded pip requirement) accounts for, unless told to drop them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpcenv import mounts
from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.journal import tick
from hpcenv.registry import IMAGE_RECORD, META_DIR, atomic_write, is_image

POINTER = IMAGE_RECORD
SUFFIX = ".sqfs"
FORMAT = 1
ZSTD_LEVEL = 3  # level 15 (mksquashfs's default) builds ~20x slower for an image ~13% smaller
_ID = re.compile(r"^[0-9a-f]{10}$")
_TMP_IMAGE = re.compile(r"^\.(?P<id>[0-9a-f]{10})\.sqfs\.tmp-(?P<pid>\d+)$")


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Version:
    id: str
    mount: str  # where it was built, and is mounted
    number: int  # 1, 2, ... for people
    created: float
    packages: int
    files: int  # files (and links and dirs) in the image
    bytes: int  # of the image file


@dataclass(frozen=True)
class ImageEnv:
    """hpcenv-image.json: the env's versions and the current one."""

    path: Path  # the env's directory in storage
    name: str | None
    current: str
    versions: tuple[Version, ...]
    made_by: str = "hpcenv"  # as env.json's (`registry.env_maker`)

    @property
    def version(self) -> Version:
        return next(v for v in self.versions if v.id == self.current)

    def file(self, version: Version | str | None = None) -> Path:
        vid = self.current if version is None else getattr(version, "id", version)
        return self.path / f"{vid}{SUFFIX}"


def is_image_dir(path: Path) -> bool:
    """Whether `path` is an image env's directory (it holds hpcenv-image.json)."""
    return is_image(path)


def read_image(path: Path) -> ImageEnv:
    """The record, or OperationError naming the damaged file."""
    where = Path(path) / POINTER
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
        versions = tuple(Version(**v) for v in data["versions"])
        img = ImageEnv(Path(path), data.get("name"), data["current"], versions,
                       str(data.get("made_by") or "hpcenv"))  # fmt: skip
        img.version  # noqa: B018 - the current one must be listed
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise OperationError(
            f"the image record {where} is damaged ({type(exc).__name__})",
            hint="re-create the env (`hpcenv create NAME --image --force ...`)",
        ) from None
    return img


def write_image(img: ImageEnv) -> None:
    """Replace the record in one step (the commit point of a version switch)."""
    from hpcenv.report import jsonable

    data = {
        "format": FORMAT,
        "name": img.name,
        "current": img.current,
        "versions": [jsonable(v) for v in img.versions],
        "made_by": img.made_by,
    }
    atomic_write(img.path / POINTER, json.dumps(data, indent=2) + "\n", 0o644)


def label_for(name: str | None, path: Path) -> str:
    """The readable part of a mount path (`sci` in /tmp/hpcenv-img-alice/sci.3f9a0c21d4)."""
    text = re.sub(r"[^A-Za-z0-9_+-]", "_", name or path.name)[:32].strip("_")
    return text or "env"


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class Built:
    version: Version
    warnings: tuple[str, ...]


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
) -> Built:
    """Install `packages` at a fresh mount path, image the tree into `out_dir/ID.sqfs` (atomic
    rename), delete the tree. `write_records(tree)` writes conda's history and records."""
    from hpcenv import engine, perms
    from hpcenv.envplan import EnvMeta
    from hpcenv.envs import _check_space, _pip_install, _write_activation

    tools = mounts.check_tools(build=True)
    base = mounts.ensure_base(mounts.user_base(settings.images_mount_root))
    _check_space(base, packages)
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
                _pip_install(layout, tree, meta.pip)
            perms.limit_installed(tree, layout.package_cache, packages)
            now = time.time()
            EnvMeta(**{**meta.__dict__, "updated": now, "created": meta.created or now}).save(tree)
            _write_activation(tree, tree, name, settings)
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
           force: bool, progress: bool, on_wait) -> tuple[list, list, bool]:  # fmt: skip
    """Build a new image env at `prefix` (journaled as `create` is: `envjournal`), replacing
    an existing env with `force`. Returns (warnings, recovered, resumed)."""
    from hpcenv.condameta import spec_name
    from hpcenv.envjournal import begin_build, recover
    from hpcenv.envs import _lock, _write_conda_records

    with _lock(layout, settings, on_wait):
        recovered = recover(layout)
        if not force and any(
            r.prefix == str(prefix) and r.action == "finished-create" for r in recovered
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
                _write_conda_records(tree, (), solution.packages, update_specs=specs,
                                     asked={spec_name(s): s for s in specs})  # fmt: skip

            built = build_version(
                layout, settings, tx.tmp, packages=solution.packages, meta=meta, name=name,
                label=label_for(name, prefix), number=1, write_records=records,
                progress=progress,
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
    from hpcenv.condameta import spec_name
    from hpcenv.envplan import EnvMeta
    from hpcenv.envs import ChangeReport, _lock, _write_conda_records

    start = time.perf_counter()
    with _lock(layout, settings, on_wait):
        from hpcenv.envjournal import recover

        recovered = recover(layout)
        img = read_image(plan.prefix)
        if img.current != plan.image_version:
            raise RefusedError(
                f"{plan.name or plan.prefix} changed while hpcenv was planning; "
                "nothing was changed",
                hint="re-run the command",
            )
        old = mount_current(plan.prefix)
        history = Path(old.mount) / "conda-meta" / "history"
        try:
            kept_history = history.read_bytes()
        except OSError:
            kept_history = b""

        def records(tree: Path) -> None:
            if kept_history:
                (tree / "conda-meta" / "history").write_bytes(kept_history)
            _write_conda_records(
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
    return ChangeReport(
        **{
            **r.__dict__,
            "dry_run": False,
            "warnings": tuple(warnings),
            "seconds": time.perf_counter() - start,
            "recovered": tuple(recovered),
            "leftovers_removed": tuple(x.path for x in recovered if x.action == "removed"),
        }
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
    from hpcenv.hygiene import _queued_scripts

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
    from hpcenv.envplan import EnvMeta, requested
    from hpcenv.envs import _read_pending, _refuse_damaged, require_writable
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
    _refuse_damaged(state, name, prefix)
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
    from hpcenv.envjournal import begin_build, recover
    from hpcenv.envs import _lock

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
    history = prefix / "conda-meta" / "history"
    with _lock(layout, settings, on_wait):
        recover(layout)
        state = engine.read_prefix(prefix)
        if {p.key for p in state.packages} != {p.key for p in plan.packages}:
            raise RefusedError(
                f"{plan.name or prefix} changed while hpcenv was planning; nothing was changed",
                hint="re-run the command",
            )
        try:
            kept_history = history.read_bytes()
        except OSError:
            kept_history = b""

        def records(tree: Path) -> None:
            if kept_history:
                (tree / "conda-meta" / "history").write_bytes(kept_history)

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


@dataclass(frozen=True)
class ImageSummary:
    """What `list`, `info` and `usage` say about an image env."""

    version: int
    image: str
    image_bytes: int
    image_files: int  # files in the image
    packages: int
    mount: str
    mounted: bool
    versions: int  # image files kept (the current one and older ones jobs may use)
    created: float = 0.0  # of the current version


def summary(path: Path) -> ImageSummary | None:
    try:
        img = read_image(path)
    except OperationError:
        return None
    v = img.version
    mounted = Path(v.mount) in mounts.mounts_under(Path(v.mount).parent)
    return ImageSummary(v.number, str(img.file(v)), v.bytes, v.files, v.packages, v.mount,
                        mounted, len(img.versions), v.created)  # fmt: skip


def readable_tree(path: Path) -> Path:
    """A path where the current version's files can be read: mounted here if needed."""
    return mount_current(path).mount


@dataclass(frozen=True)
class ImageCheck:
    image: str
    ok: bool
    detail: str
    inodes: int | None = None


def check_image(image: Path) -> ImageCheck:
    """Whether `image` is a readable squashfs (its superblock and its whole directory
    table, as `unsquashfs -l` reads them)."""
    import shutil

    exe = shutil.which("unsquashfs")
    if exe is None:
        return ImageCheck(str(image), False, "unsquashfs is not installed (package squashfs-tools)")
    if not os.path.isfile(image):
        return ImageCheck(str(image), False, "the image file is missing")
    stat_ = subprocess.run([exe, "-stat", str(image)], capture_output=True, text=True)
    listing = subprocess.run([exe, "-lc", "-d", "/", str(image)], capture_output=True, text=True)
    m = re.search(r"Number of inodes (\d+)", stat_.stdout)
    if stat_.returncode != 0 or listing.returncode != 0 or m is None:
        said = " ".join((listing.stderr or stat_.stderr or stat_.stdout).split())[:200]
        return ImageCheck(str(image), False, f"not a readable squashfs image: {said}")
    return ImageCheck(str(image), True, "readable", int(m[1]))


def verify(path: Path) -> list[ImageCheck]:
    """Every image file an image env's record lists, checked."""
    img = read_image(path)
    return [check_image(img.file(v)) for v in img.versions]


# --------------------------------------------------------------------------- unmount


@dataclass(frozen=True)
class UnmountReport:
    results: tuple[mounts.Unmounted, ...]
    tidied: tuple[mounts.Tidied, ...]

    @property
    def busy(self) -> tuple[mounts.Unmounted, ...]:
        return tuple(r for r in self.results if r.status != "unmounted")


def unmount(layout, settings, name_or_prefix: str | None = None) -> UnmountReport:
    """`hpcenv umount [NAME]`: this user's image mounts on this node (of NAME's versions)
    that nothing uses."""
    from hpcenv.registry import resolve

    names = None
    base = mounts.user_base(settings.images_mount_root)
    if name_or_prefix is not None:
        _, path = resolve(layout, name_or_prefix)
        if not is_image_dir(path):
            raise UsageError(f"{name_or_prefix} is not an image env; it has nothing to unmount")
        img = read_image(path)
        base = Path(img.version.mount).parent
        label = label_for(img.name, path)
        names = {Path(v.mount).name for v in img.versions}
        # and older versions no longer listed (their files are gone, their mounts may not be)
        names |= {p.name for p in mounts.mounts_under(base) if p.name.startswith(label + ".")}
    results, tidied = mounts.unmount(base, names)
    return UnmountReport(tuple(results), tuple(tidied))
