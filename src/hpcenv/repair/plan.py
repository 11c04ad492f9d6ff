"""Planning a repair: the env checked, each broken package's source decided; nothing is changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError
from hpcenv.repair.checks import (
    _cache_state,
    _check_reachable,
    _in_the_way,
    _pypi_origins,
    _shares_inode,
)
from hpcenv.repair.model import PackageFix, RepairPlan, RepairReport, journal_name
from hpcenv.storage import Layout
from hpcenv.verify import EnvCheck, check_prefix

# --------------------------------------------------------------------------- planning


def plan_repair(
    layout: Layout, settings, name_or_prefix: str, *, full: bool = False, dry_run: bool = False
) -> RepairPlan:
    """Check the env and decide how each broken package is repaired; nothing is changed.
    An interrupted repair of the env is planned from its journal (to be finished)."""
    from hpcenv.envs.checks import require_writable
    from hpcenv.trust import refuse_image, resolve_for_use

    usable = resolve_for_use(layout, name_or_prefix, mount=False)  # refused: others can plant in
    refuse_image(
        usable, name_or_prefix, "its files live in a read-only image that repair cannot change",
        f"`hpcenv verify {name_or_prefix}` checks the image; if it is damaged, re-create the env "
        f"from `hpcenv export {name_or_prefix} --lock -o env.lock`",
    )  # fmt: skip
    name, prefix = usable.name, usable.prefix
    require_writable(prefix, [prefix, prefix / "conda-meta"])
    h = _pending_header(layout, prefix)
    if h is not None:
        fixes = tuple(
            PackageFix(**{k: tuple(v) if isinstance(v, list) else v for k, v in f.items()})
            for f in h.get("fixes", [])
        )
        report = RepairReport(name, str(prefix), dry_run, fixes, full=full, resumed=True)
        return RepairPlan(report, prefix, name, tuple(h.get("records", [])),
                          dict(h.get("unreadable", {})))  # fmt: skip
    check = check_prefix(prefix, name=name, full=full, extras=False)
    if check.error:
        raise RefusedError(f"cannot check {prefix}: {check.error}")
    fixes, records, unreadable = _decide(layout, settings, prefix, check)
    report = RepairReport(
        name, str(prefix), dry_run, tuple(fixes), check.packages, check.files, full
    )
    keys = frozenset(_record_names(prefix))
    return RepairPlan(report, prefix, name, tuple(records), unreadable, keys)


def _pending_header(layout: Layout, prefix: Path) -> dict | None:
    """The header of an interrupted repair of `prefix` (read only), or None."""
    try:
        with open(layout.journal_dir / f"{journal_name(prefix)}.jsonl", encoding="utf-8") as f:
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) and "fixes" in header else None


def _record_names(prefix: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(prefix / "conda-meta") if n.endswith(".json"))
    except OSError:
        return []


def _decide(layout: Layout, settings, prefix: Path, check: EnvCheck):
    from hpcenv import engine

    fixes: list[PackageFix] = []
    records: list[str] = []
    state = engine.read_prefix(prefix)
    by_record = {os.path.basename(p.record_path or ""): p for p in state.packages}
    pypi_origin = _pypi_origins(prefix)
    for pkg in check.broken_packages:
        aside, unlock = _in_the_way(prefix, pkg)
        lost = dict(missing=pkg.counts[0], changed=pkg.counts[1], aside=aside, unlock=unlock)
        if pkg.source == "pypi":
            fixes.append(
                PackageFix(
                    pkg.name,
                    pkg.version,
                    "",
                    "pypi",
                    "uv",
                    "",
                    origin=pypi_origin(pkg.name, pkg.version),
                    uv_cache_clean=_shares_inode(prefix, pkg),
                    **lost,
                )  # fmt: skip
            )
            continue
        info = by_record.get(os.path.basename(pkg.record))
        if info is None:  # the engine cannot read it: repaired as an unreadable record below
            continue
        how, why = _cache_state(layout, prefix, info, pkg)
        _check_reachable(layout, prefix, info, how)
        fixes.append(
            PackageFix(info.name, info.version, info.build, "conda", how, why, origin=info.url, **lost)
        )  # fmt: skip
        records.append(os.path.basename(pkg.record))
    unreadable = {}
    for u in check.unreadable:
        if not u.path.endswith(".json") and u.version:  # a PyPI package's RECORD
            origin = pypi_origin(u.name, u.version)
            fixes.append(PackageFix(u.name, u.version, "", "pypi", "uv", u.reason, 0, 0, origin))
    bad = {u.path: u for u in check.unreadable if u.path.endswith(".json")}
    for d in state.damaged:  # records the engine refuses although they are JSON
        if d.path not in bad:
            bad[d.path] = _unreadable_record(d.path, d.reason)
    for u in bad.values():
        if not u.version:
            raise RefusedError(
                f"{u.path} is damaged ({u.reason}) and its name does not say which version",
                hint=f"re-create the env: `hpcenv export {prefix} --lock -o env.lock` and "
                "`hpcenv create NAME -f env.lock --force`",
            )
        info = _solve_pin(layout, settings, prefix, state, u)
        how, why = _cache_state(layout, prefix, info, None)
        _check_reachable(layout, prefix, info, how)
        fixes.append(
            PackageFix(
                info.name,
                info.version,
                info.build,
                "conda",
                "record",
                u.reason,
                0,
                0,
                origin=info.url,
            )  # fmt: skip
        )
        unreadable[os.path.basename(u.path)] = info.pin
    return fixes, records, unreadable


def _unreadable_record(path: str, reason: str):
    from hpcenv.verify.checker import _bad_record

    return _bad_record(path, reason).unreadable


def _solve_pin(layout: Layout, settings, prefix: Path, state, bad):
    """The exact record of a package whose conda-meta file is unreadable (its name, version
    and build are in the file name), from the env's channels."""
    from hpcenv import engine
    from hpcenv.channels import channel_urls
    from hpcenv.envs.plan import EnvMeta, used_channels

    meta = EnvMeta.load(prefix)
    channels = list(meta.channels if meta and meta.channels else used_channels(state.packages))
    pin = f"{bad.name} =={bad.version} {bad.build}"
    solution = engine.solve(
        channel_urls(settings, channels) or list(settings.channels),
        [pin, *(p.pin for p in state.packages)],
        cache_dir=layout.package_cache,
        installed=state.packages,
    )
    for p in solution.packages:
        if p.name == bad.name:
            return p
    raise OperationError(f"{bad.name} {bad.version} ({bad.build}) is not in the env's channels")
