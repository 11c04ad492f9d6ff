"""Carrying out a clean plan, under the storage lock, journaled, reporting only what is gone.

A package directory is first renamed into the cache's trash (`Layout.cache_trash`, one atomic
step: rattler then sees no entry and re-extracts when needed; it must never see a
half-deleted one as valid), then its `.lock` file goes, then the trash. Each step is journaled
(`journal/clean.jsonl`), so a killed run is finished by the next `hpcenv clean`.

An item is reported `removed` only when nothing of it is left on disk (a cache: the tool or
hpcenv emptied it); otherwise `failed`, with what is left, and only the bytes really freed are
counted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from hpcenv.clean.plan import CleanItem, CleanKind, CleanPlan, CleanStatus, plan_clean
from hpcenv.fsops import remove_tree, tree_size
from hpcenv.journal import Journal, tick
from hpcenv.lock import StorageLock
from hpcenv.storage import Layout, ensure_state_dir


@dataclass(frozen=True)
class CleanReport:
    dry_run: bool
    items: tuple[CleanItem, ...]
    freed_bytes: int
    kept_packages: tuple[str, ...]
    envs_checked: int
    warnings: tuple[str, ...] = ()
    resumed: bool = False
    waited_for_lock: bool = False


def dry_run_report(plan: CleanPlan) -> CleanReport:
    return CleanReport(
        dry_run=True,
        items=plan.items,
        freed_bytes=0,
        kept_packages=plan.kept_packages,
        envs_checked=plan.envs_checked,
        warnings=plan.warnings,
    )


def execute_clean(
    plan: CleanPlan,
    *,
    lock_timeout: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> CleanReport:
    """Remove what `plan` lists, under the storage lock, journaled.

    The plan is made again once the lock is held and only what is in both is removed: what the
    user was shown and agreed to, and what is still unused now (an env created in between keeps
    its packages)."""
    layout = plan.layout
    ensure_state_dir(layout)
    lock = StorageLock(layout.lock_path, timeout=lock_timeout, on_wait=on_wait)
    with lock:
        fresh = plan_clean(layout)
        now = {(i.kind, i.path): i for i in fresh.items}
        journal = Journal.open(layout.journal_dir, "clean", {"items": len(plan.items)})
        results = []
        for item in plan.items:
            current = now.get((item.kind, item.path))
            if current is None:
                if os.path.lexists(item.path):
                    results.append(_outcome(item, 0, CleanStatus.KEPT, "in use now"))
                else:
                    results.append(_outcome(item, 0, CleanStatus.REMOVED, "already gone"))
                continue
            try:
                left = _remove(layout, current, journal, environ or os.environ)
            except (OSError, subprocess.SubprocessError) as exc:
                results.append(_outcome(current, 0, CleanStatus.FAILED, str(exc)))
                continue
            if left is None:
                freed, status, detail = current.bytes, CleanStatus.REMOVED, ""
            else:
                freed = max(0, current.bytes - tree_size(left.path)[0])
                status, detail = CleanStatus.FAILED, left.why
            if current.kind in (CleanKind.PIP_CACHE, CleanKind.UV_CACHE) and left is None:
                freed = max(0, freed - tree_size(current.path)[0])  # the tools keep a few files
            journal.record(item=current.path, kind=current.kind, step=str(status))
            results.append(_outcome(current, freed, status, detail))
        try:
            layout.cache_trash.rmdir()
        except OSError:
            pass  # absent, or not empty (something failed): the next clean retries
        journal.finish()
    return CleanReport(
        dry_run=False,
        items=tuple(results),
        freed_bytes=sum(i.bytes for i in results),
        kept_packages=fresh.kept_packages,
        envs_checked=fresh.envs_checked,
        warnings=fresh.warnings,
        resumed=journal.resumed,
        waited_for_lock=lock.waited,
    )


def _outcome(item: CleanItem, freed: int, status: CleanStatus, detail: str) -> CleanItem:
    return replace(item, bytes=freed, status=status, detail=detail)


@dataclass(frozen=True)
class _Left:
    """What a removal left on disk: where, and why."""

    path: str
    why: str


def _remove(
    layout: Layout, item: CleanItem, journal: Journal, environ: Mapping[str, str]
) -> _Left | None:
    """Remove one item; None when nothing of it is left, else what is left."""
    path = Path(item.path)
    left: _Left | None = None
    if item.kind in (CleanKind.ARCHIVE, CleanKind.PACK):
        path.unlink(missing_ok=True)
    elif item.kind == CleanKind.PACKAGE:
        aside = _set_aside(layout, path)
        journal.record(item=item.path, kind=item.kind, step="set-aside", to=str(aside))
        path.with_name(path.name + ".lock").unlink(missing_ok=True)
        tick()
        left = _left(aside, remove_tree(aside))
    elif item.kind == CleanKind.IMAGE:
        from hpcenv.images import remove_version

        remove_version(path)
    elif item.kind == CleanKind.TRASH:
        left = _left(path, remove_tree(path))
    elif item.kind == CleanKind.LEFTOVER:
        from hpcenv.envs.journal import recover

        for r in recover(layout):
            if r.action == "failed" and r.path == item.path:
                left = _Left(item.path, r.detail)
        if left is None and os.path.lexists(path):
            left = _Left(item.path, "still there")
    elif item.kind == CleanKind.PIP_CACHE:
        if not _run_tool(_pip_command(), {"PIP_CACHE_DIR": str(path)}, environ):
            left = _empty_dir(layout, path)
    elif item.kind == CleanKind.UV_CACHE:
        if not _run_tool(_uv_command(), {"UV_CACHE_DIR": str(path)}, environ):
            left = _empty_dir(layout, path)
    else:
        raise AssertionError(item.kind)
    tick()
    return left


def _left(path: Path, problem: str | None) -> _Left | None:
    return None if problem is None else _Left(str(path), problem)


def _set_aside(layout: Layout, path: Path) -> Path:
    """Rename a cache entry into the trash (same filesystem): it vanishes in one step."""
    root = layout.cache_trash
    root.mkdir(mode=0o700, exist_ok=True)
    target = root / f"{path.name}-{os.getpid()}"
    n = 0
    while os.path.lexists(target):
        n += 1
        target = root / f"{path.name}-{os.getpid()}.{n}"
    os.rename(path, target)
    return target


def _empty_dir(layout: Layout, path: Path) -> _Left | None:
    """Without the tool: set every entry aside, then delete it; what could not go stays in
    the trash (the next clean retries)."""
    left = None
    for entry in sorted(path.iterdir()):
        aside = _set_aside(layout, entry)
        problem = remove_tree(aside)
        if problem is not None and left is None:
            left = _Left(str(aside), problem)
    return left


def _pip_command() -> list[str] | None:
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "cache", "purge"]
    exe = shutil.which("pip") or shutil.which("pip3")
    return [exe, "cache", "purge"] if exe else None


def _uv_command() -> list[str] | None:
    from hpcenv.pipstep.uv import uv_path

    exe = uv_path()
    return [exe, "cache", "clean"] if exe else None


def _run_tool(argv: list[str] | None, extra: dict[str, str], environ: Mapping[str, str]) -> bool:
    """Run pip/uv against our cache dir; False when the tool is absent or refused."""
    if argv is None:
        return False
    env = {**environ, **extra, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_YES": "1"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    return result.returncode == 0
