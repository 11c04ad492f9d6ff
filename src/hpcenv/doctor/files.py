"""Doctor checks of the envs' files: every file still there (`verify`'s quick check, within a
time budget), and envs that live where the site purges old files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hpcenv.doctor.check import Check, Status, ok, q
from hpcenv.settings import Settings
from hpcenv.storage import Layout

VERIFY_SECONDS = 10.0  # the quick verify of every env stops after this long


def env_files(
    layout: Layout, prefixes: Mapping[Path, str | None], seconds: float = VERIFY_SECONDS
) -> Check:
    """Every env's files against its records (stat only, all envs within `seconds`)."""
    from hpcenv.verify import quick_check

    checks, not_reached = quick_check(layout, dict(prefixes), seconds)
    broken = [c for c in checks if c.broken]
    partial = [c for c in checks if not c.complete]
    late = ""
    if not_reached or partial:
        late = (
            f"stopped after {seconds:g} s: {len(checks) - len(partial)} of {len(prefixes)} "
            "envs checked (`hpcenv verify --all` checks them all)"
        )
    if broken:
        parts = []
        for c in broken:
            names = [p.name for p in c.broken_packages] + [u.name for u in c.unreadable]
            parts.append(f"{c.name or c.prefix}: {', '.join(names) or c.error} lost files")
        fix = " && ".join(f"hpcenv repair {q(c.name or c.prefix)}" for c in broken)
        return Check(
            "env-files", Status.FAIL, "; ".join(parts) + (f"; {late}" if late else ""), fix
        )
    if late:
        return Check("env-files", Status.WARN, late, "hpcenv verify --all")
    return ok("env-files", f"every file of {len(checks)} envs is there (sizes checked)")


def purged_paths(settings: Settings, layout: Layout, prefixes: Mapping[Path, str | None]) -> Check:
    """Envs (and the package cache) where the site purges old files."""
    from hpcenv.purge import purge_of

    if not settings.purged_paths:
        return ok("purged-paths", "the site names no purged paths (purged_paths)")
    found = []
    for prefix, name in prefixes.items():
        purge = purge_of(settings, prefix)
        if purge is not None:
            found.append(f"{name or prefix} ({purge.path}: {purge.days} days)")
    purge = purge_of(settings, layout.package_cache)
    if purge is not None:
        found.append(f"the package cache {layout.package_cache} ({purge.path}: {purge.days} days)")
    if not found:
        return ok("purged-paths", "no env lives where the site purges old files")
    return Check(
        "purged-paths",
        Status.WARN,
        "under paths the site purges of files not used for N days: "
        + ", ".join(found)
        + "; their files go unless used (`hpcenv verify` finds the loss, `hpcenv repair` "
        "puts it back)",
        "re-create them in storage: hpcenv export NAME > env.yml && hpcenv create NAME2 -f env.yml",
    )
