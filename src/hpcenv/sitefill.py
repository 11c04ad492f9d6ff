"""`hpcenv cache fill`: put packages into a site package cache, each one whole before it
appears, readable by everyone and writable by its owner alone.

Run by root or the `package_cache_owner` account (`check_filler`), on a layer they own. Each
package is extracted under a temporary name in the layer (`.hpcenv-fill-PID-NAME`), checked,
made public (`perms.make_public`), then renamed into place: users either see it whole or not
at all. A damaged entry, or another build under the same name, is first moved out of sight
into the layer's `.hpcenv/trash`. The layer's `.hpcenv/` (mode 0700) holds the fill's lock,
repodata cache and trash. A fill killed at any point leaves temporary names only; the next
one removes those of dead processes and finishes.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.sitecache import layer_owners, user_name, why_loose

if TYPE_CHECKING:
    from hpcenv.settings import Settings

STATE = ".hpcenv"  # in a layer: the filler's lock, repodata cache and trash (mode 0700)
TEMP_PREFIX = ".hpcenv-fill-"


@dataclass(frozen=True)
class FilledPackage:
    name: str  # NAME-VERSION-BUILD
    status: str  # added | present | replaced: WHY
    bytes: int  # archive size


@dataclass(frozen=True)
class FillReport:
    layer: str
    packages: tuple[FilledPackage, ...]
    downloaded_bytes: int
    modes_fixed: int
    configured: bool  # the layer is in package_caches
    unused_because: str | None = None  # why users would not link from it (see why_untrusted)
    removed_leftovers: tuple[str, ...] = ()

    @property
    def added(self) -> int:
        return sum(p.status != "present" for p in self.packages)


def fill_target(settings: Settings, to: Path | None) -> Path:
    """The layer `cache fill` writes: --to, else the first configured one."""
    if to is not None:
        return Path(os.path.abspath(os.path.expanduser(str(to))))
    if not settings.package_caches:
        raise UsageError(
            "no site package cache is configured",
            hint='give --to DIR, or set package_caches = ["/apps/hpcenv/pkgs"] in the site config',
        )
    return settings.package_caches[0]


def check_filler(settings: Settings, target: Path) -> frozenset[int]:
    """Refuse (exit 2, nothing changed) anyone but root or the owner account, and a target
    they do not own; return the layer owners."""
    owners, _ = layer_owners(settings)
    me = os.geteuid()
    if me not in owners:
        raise RefusedError(
            f"only root or the site's package cache account fills a site package cache; "
            f"{target} is not changed",
            hint="ask your site admins to add the packages (`hpcenv cache fill SPEC`); "
            "what you install goes to your own cache by itself",
        )
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return owners
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{target} is not a directory", hint="give --to a directory")
    if st.st_uid != me:
        raise RefusedError(
            f"{target} belongs to {user_name(st.st_uid)}, not to you; it is not changed",
            hint=f"run `hpcenv cache fill` as {user_name(st.st_uid)}",
        )
    return owners


def fill(
    settings: Settings,
    specs: Sequence[str],
    *,
    channels: Sequence[str] = (),
    to: Path | None = None,
    cuda: str | None = None,
    on_wait=None,
) -> FillReport:
    """Solve `specs` and put every package of the solution into the layer, each one whole
    before it appears: extracted under a temporary name in the layer, checked, its modes
    made public (`perms.make_public`), then renamed into place. Under the layer's own lock;
    a killed fill leaves only temporary names, which the next fill removes."""
    from hpcenv import engine, perms, pkgcache
    from hpcenv.channels import channel_urls, normalize_channel
    from hpcenv.journal import pid_alive, tick
    from hpcenv.lock import StorageLock

    if not specs:
        raise UsageError("give at least one package spec", hint="hpcenv cache fill numpy")
    engine.check_specs(specs)
    target = fill_target(settings, to)
    owners = check_filler(settings, target)
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} does not exist", hint="create it first")
    chans = [normalize_channel(c) for c in (channels or settings.channels)]
    target.mkdir(mode=0o755, exist_ok=True)
    state = target / STATE
    state.mkdir(mode=0o700, exist_ok=True)
    os.chmod(state, 0o700)
    solution = engine.solve(channel_urls(settings, chans), specs, cache_dir=state, cuda=cuda)
    done: list[FilledPackage] = []
    downloaded = fixed = 0
    leftovers = []
    with StorageLock(state / "lock", timeout=settings.lock_timeout, on_wait=on_wait):
        for name in os.listdir(target):
            if name.startswith(TEMP_PREFIX):
                pid = name[len(TEMP_PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    _remove(target / name)
                    leftovers.append(str(target / name))
        for package in solution.packages:
            name = pkgcache.entry_name(package)
            entry = target / name
            why = None
            if entry.is_dir() and not entry.is_symlink():
                why = pkgcache.check_cache_entry(entry, owners)
                sha = pkgcache.cached_sha256(entry)
                if why is None and package.sha256 and sha and sha != package.sha256:
                    why = "another build under that name (sha256 differs)"
                if why is None:
                    done.append(FilledPackage(name, "present", package.size))
                    continue
            tmp = target / f"{TEMP_PREFIX}{os.getpid()}-{name}"
            _remove(tmp)
            sha = engine.fetch_package(package, tmp)
            downloaded += package.size
            tick()
            damage = pkgcache.check_cache_entry(tmp)
            if damage is not None:
                _remove(tmp)
                raise OperationError(
                    f"{package.file_name} extracted incomplete ({damage}); the layer is unchanged",
                    hint="re-run `hpcenv cache fill`",
                )
            fixed += perms.make_public(tmp)
            if os.path.lexists(entry):  # first out of sight, so no user links from it meanwhile
                trash = state / "trash"
                trash.mkdir(mode=0o700, exist_ok=True)
                os.rename(entry, trash / f"{name}-{time.time_ns()}")
                tick()
            pkgcache.write_cache_metadata(entry, sha)
            os.rename(tmp, entry)  # the one step that makes it visible, whole
            tick()
            done.append(FilledPackage(name, f"replaced: {why}" if why else "added", package.size))
        _remove(state / "trash")
        mode = stat.S_IMODE(os.stat(target).st_mode)
        if (mode | 0o555) & ~0o022 != mode:
            os.chmod(target, (mode | 0o555) & ~0o022)
            fixed += 1
    return FillReport(
        str(target), tuple(done), downloaded, fixed, target in settings.package_caches,
        _untrusted_for_users(target, owners), tuple(leftovers),
    )  # fmt: skip


def _untrusted_for_users(target: Path, owners: Collection[int]) -> str | None:
    """Why users would ignore the layer (the checks that do not depend on who reads it)."""
    real = Path(os.path.realpath(target))
    for above in reversed(real.parents):
        why = why_loose(above, owners, sticky_ok=True)
        if why:
            return f"{above} above it {why}"
    why = why_loose(real, owners, sticky_ok=False)
    return f"it {why}" if why else None


def _remove(path: Path) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
