"""`hpcenv doctor`: what is wrong with this account's Python setup, and the command that fixes it.

`diagnose` runs every check and returns a `DoctorReport`; it raises nothing (a check that cannot
look reports WARN with why). Each `Check` has a status: OK, WARN (works, but costs quota, time or
reproducibility) or FAIL (broken now, or loses data or lets others plant code); the CLI exits 1
when any check FAILs. `fix` is the exact command that fixes it.

The checks, by what they look at: `home` (storage, links, caches and envs in home, user site,
quota, Jupyter kernels), `shellrc` (`conda init` blocks; the one fix `--fix` applies), `envs`
(registries, records, package cache, interrupted operations, world-writable files, GPU
driver), `files` (every env's files, purged paths), `cluster` (conda's channels, SLURM,
modules).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from hpcenv.doctor import cluster, envs, files, home, images, shellrc
from hpcenv.doctor.check import Check, DoctorReport, Status
from hpcenv.doctor.shellrc import BlockInsideCode, find_conda_blocks, remove_conda_blocks
from hpcenv.errors import HpcenvError
from hpcenv.settings import Settings

__all__ = [
    "Check",
    "DoctorReport",
    "Status",
    "diagnose",
    "find_conda_blocks",
    "remove_conda_blocks",
]


def diagnose(
    settings: Settings, *, environ: Mapping[str, str] | None = None, fix: bool = False
) -> DoctorReport:
    """Run every check (after the safe fixes when `fix`); never raises for what it finds."""
    from hpcenv.storage import layout_from

    env = os.environ if environ is None else environ
    home_dir = settings.home
    fixed: list[str] = []
    if fix:
        for name in shellrc.SHELL_RC_FILES:
            path = home_dir / name
            try:
                backup = remove_conda_blocks(path) if path.is_file() else None
            except BlockInsideCode:
                continue  # the conda-init check says so
            except OSError as exc:
                fixed.append(f"could not remove the conda initialize block from {path}: {exc}")
                continue
            if backup is not None:
                fixed.append(f"removed the conda initialize block from {path} (backup: {backup})")

    layout, error = None, None
    try:
        layout = layout_from(settings)
    except HpcenvError as exc:
        error = exc.message
    checks: list[Check] = [home.storage_area(settings, layout, error)]
    run: list[tuple[str, Callable[[], Check]]] = []
    if layout is not None:
        from hpcenv.registry import discover, is_env, read_environments_txt

        try:
            prefixes = discover(layout).prefixes()
        except OSError:
            prefixes = {}  # the registry checks below say what cannot be read
        existing = {p: n for p, n in prefixes.items() if is_env(p)}
        run += [
            ("redirect", lambda: home.redirect(layout)),
            ("dangling-links", lambda: home.dangling_links(layout)),
            ("caches-in-home", lambda: home.caches_in_home(layout, env)),
            ("envs-in-home", lambda: home.envs_in_home(layout, existing, settings.allow_home)),
        ]
    run += [
        ("conda-init", lambda: shellrc.conda_init(home_dir)),
        ("user-site", lambda: home.user_site(home_dir, settings, env)),
    ]
    if layout is not None:
        run += [
            ("home-quota", lambda: home.home_quota(layout, settings)),
            (
                "env-registry",
                lambda: envs.env_registry(layout, list(read_environments_txt(layout).prefixes)),
            ),
            ("leftovers", lambda: envs.leftovers(layout)),
            ("pending-update", lambda: envs.pending_update(existing)),
            ("env-records", lambda: envs.env_records(existing)),
            ("env-files", lambda: files.env_files(layout, existing)),
            ("purged-paths", lambda: files.purged_paths(settings, layout, existing)),
            ("package-cache", lambda: envs.package_cache(layout)),
            ("interrupted", lambda: envs.interrupted(layout)),
            ("world-writable", lambda: envs.world_writable(layout, existing)),
            ("images", lambda: images.image_envs(settings, existing)),
        ]
    run += [
        ("condarc-defaults", lambda: cluster.condarc_defaults(home_dir, settings, env)),
        ("sbatch", lambda: cluster.sbatch(env)),
        ("modules", lambda: cluster.modules(env)),
        ("jupyter-kernels", lambda: home.jupyter_kernels(env)),
    ]
    if layout is not None:
        run.append(("gpu-driver", lambda: envs.gpu_driver(settings, existing, env)))
    for name, check in run:
        try:
            checks.append(check())
        except (OSError, ValueError, HpcenvError) as exc:
            message = exc.message if isinstance(exc, HpcenvError) else str(exc)
            checks.append(Check(name, Status.WARN, f"could not check: {message}"))
    return DoctorReport(tuple(checks), tuple(fixed))
