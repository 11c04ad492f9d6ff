"""Solving, installing, indexing a local channel: rattler's async calls behind sync ones."""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import rattler
from rattler import exceptions as rx

from hpcenv.engine.layers import from_layers, site_view, site_view_dir
from hpcenv.engine.seam import (
    MIRROR_HINT,
    PackageInfo,
    Solution,
    as_os_error,
    first_and_cause,
    first_line,
    info,
    is_rattler_error,
    package_cache_dir,
    platform,
    repodata_cache_dir,
    run,
)
from hpcenv.engine.specs import check_specs
from hpcenv.errors import OperationError, UsageError
from hpcenv.pkgcache import cache_lock_where_flock_works, set_aside_damaged


def index_channel(channel_dir: Path) -> None:
    """Write repodata for a local channel directory (linux-64/, noarch/)."""
    try:
        run(rattler.index.index_fs(Path(channel_dir)))
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise as_os_error(exc, channel_dir) or OperationError(
            f"indexing the channel {channel_dir} failed: {first_line(exc)}"
        ) from None


def virtual_packages(cuda: str | None = None) -> list:
    """This host's virtual packages, with `__cuda` exactly as the caller says."""
    try:
        packages = [
            vp.into_generic()
            for vp in rattler.VirtualPackage.detect()
            if not str(vp).startswith("__cuda")
        ]
        packages = [p for p in packages if p.name.normalized != "__cuda"]
        if cuda:
            packages.append(
                rattler.GenericVirtualPackage(
                    rattler.PackageName("__cuda"), rattler.Version(cuda), rattler.BuildString("0")
                )
            )
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise UsageError(f"cannot describe this host to the solver: {first_line(exc)}") from None
    return packages


def solve(
    channels: Sequence[str],
    specs: Sequence[str],
    *,
    cache_dir: Path,
    cuda: str | None = None,
    installed: Sequence[PackageInfo] = (),
    target_platform: str | None = None,
) -> Solution:
    """Solve `specs` against `channels` (URLs). Keeps installed versions where possible."""
    check_specs(specs)
    try:
        sources = [rattler.Channel(url) for url in channels]
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise UsageError(
            f"invalid channel in {', '.join(channels)}: {first_line(exc)}",
            hint="give a channel name (conda-forge), a URL or a local directory",
        ) from None
    try:
        gateway = rattler.Gateway(cache_dir=repodata_cache_dir(cache_dir))
        records = run(
            rattler.solve(
                sources=sources,
                specs=list(specs),
                gateway=gateway,
                platforms=[target_platform or platform(), "noarch"],
                virtual_packages=virtual_packages(cuda),
                locked_packages=[p.record for p in installed if p.record is not None] or None,
            )
        )
    except rx.SolverError as exc:
        raise UsageError(
            "the requested packages cannot be installed together:\n" + _solver_lines(exc),
            hint="relax a version constraint or drop a package",
        ) from None
    except (rx.FetchRepoDataError, rx.GatewayError, rx.InvalidChannelError, rx.IoError) as exc:
        raise OperationError(
            f"cannot read channel(s) {', '.join(channels)}: {first_line(exc)}", hint=MIRROR_HINT
        ) from None
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise OperationError(
            f"solving for {', '.join(channels)} failed: {first_line(exc)}"
        ) from None
    return Solution(tuple(info(r) for r in records))


def _solver_lines(exc: BaseException) -> str:
    """The useful part of rattler's explanation: its tree of reasons, without the noise."""
    lines = [line.rstrip() for line in str(exc).splitlines() if line.strip()]
    keep = [
        line
        for line in lines
        if not line.lower().startswith(("cannot solve the request", "solver error"))
    ]
    return "\n".join(keep[:20]) or first_line(exc)


def install(
    packages: Solution | Sequence[PackageInfo],
    prefix: Path,
    *,
    cache_dir: Path,
    installed: Sequence[PackageInfo] | None = None,
    final_prefix: Path | None = None,
    reinstall: Iterable[str] = (),
    show_progress: bool = False,
    layers: Sequence[Path] = (),
    layer_owners: Collection[int] = (0,),
) -> list[str]:
    """Link `packages` into `prefix`, applying only the difference to `installed`; return
    warnings (cached packages found damaged and extracted again, site cache entries skipped).

    `final_prefix` is the path patched into files when building in a temporary sibling that
    is renamed into place afterwards (atomic create).

    `layers` are read-only package caches (a site's, trusted by the caller: `sitecache`)
    searched before the user's own: a package whole there, its files owned by one of
    `layer_owners` and writable by no one else, is linked from there (`engine.layers`).
    """
    if isinstance(packages, Solution):
        packages = packages.packages
    reinstall = set(reinstall)
    have = {p.key for p in installed or ()}
    linking = [p for p in packages if p.key not in have or p.name in reinstall]
    warnings = set_aside_damaged(cache_dir, linking)
    served, skipped = from_layers(layers, linking, layer_owners)
    warnings += skipped
    caches: dict = {"cache_dir": package_cache_dir(cache_dir)}
    lock_dir = package_cache_dir(cache_dir)
    if served:
        caches = {"package_cache": site_view(cache_dir, served)}
        lock_dir = site_view_dir(cache_dir)
    try:
        with cache_lock_where_flock_works(lock_dir):
            run(
                rattler.install(
                    [p.record for p in packages],
                    target_prefix=prefix,
                    **caches,
                    installed_packages=[p.record for p in installed]
                    if installed is not None
                    else None,
                    reinstall_packages=reinstall or None,
                    show_progress=show_progress,
                    alternative_target_prefix=final_prefix,
                    execute_link_scripts=False,
                )
            )
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        text = str(exc)
        if any(
            s in text
            for s in ("No space left", "Disk quota exceeded", "os error 28", "os error 122")
        ):
            raise OSError(errno.ENOSPC, "no space left while installing packages") from None
        raise OperationError(
            f"installing packages into {prefix} failed: {first_and_cause(exc)}",
            hint="if a package file is damaged, `hpcenv doctor` checks the package cache",
        ) from None
    from hpcenv.noarch import compile_noarch_python

    compile_noarch_python(Path(prefix), Path(final_prefix or prefix), packages)
    return warnings
