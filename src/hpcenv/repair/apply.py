"""Carrying a repair out, journaled step by step (see the package's docstring)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from hpcenv import (
    perms,  # early: it notes when this process started (fresh cache entries)
    pkgcache,
)
from hpcenv.errors import OperationError, RefusedError
from hpcenv.fsops import atomic_write
from hpcenv.journal import Journal, pid_alive, tick
from hpcenv.lock import StorageLock
from hpcenv.repair.checks import gone
from hpcenv.repair.model import (
    _RECORD_ONLY,
    ASIDE_DIR,
    PackageFix,
    RepairPlan,
    RepairReport,
    _work_dir,
    journal_name,
)
from hpcenv.repair.plan import _record_names
from hpcenv.storage import Layout, ensure_state_dir
from hpcenv.verify import check_prefix

# --------------------------------------------------------------------------- carrying it out


def apply_repair(
    layout: Layout,
    settings,
    plan: RepairPlan,
    *,
    on_wait: Callable[[str], None] | None = None,
) -> RepairReport:
    """Carry out a plan under the storage lock (see the module docstring for the steps)."""
    from hpcenv import engine
    from hpcenv.envs.journal import recover
    from hpcenv.fsops import remove_tree

    start = time.perf_counter()
    r = plan.report
    if not r.fixes:
        return r
    prefix = plan.prefix
    ensure_state_dir(layout)
    with StorageLock(layout.lock_path, timeout=settings.lock_timeout, on_wait=on_wait):
        recover(layout)
        if not r.resumed and frozenset(_record_names(prefix)) != plan.key_set:
            raise RefusedError(
                f"{plan.name or prefix} changed while hpcenv was checking it; nothing was changed",
                hint="re-run the command",
            )
        journal = _open_journal(layout, plan)
        work = _work_dir(layout, prefix)
        saved = work / "conda-meta"
        if not journal.last(step="saved"):
            _save_records(prefix, saved, plan.records)
            journal.record(step="saved")
        conda = [f for f in r.fixes if f.source == "conda"]
        state = engine.read_prefix(prefix)
        copies = {
            os.path.basename(p.record_path or ""): p for p in engine.read_prefix(work).packages
        }
        wanted = _wanted(state, copies, plan.records)
        wanted += _unreadable_wanted(layout, settings, prefix, state, plan.unreadable)
        if not journal.last(step="cache"):
            try:
                _refresh_cache(layout, prefix, conda, wanted, state)
            except OperationError:  # nothing in the env changed: no repair to finish
                remove_tree(work)
                journal.finish("not-repaired")
                raise
            journal.record(step="cache")
        for fix in r.fixes:
            _move_aside(prefix, fix, journal)
        tick()
        names = {f.name for f in conda}
        if conda and not journal.last(step="linked"):
            _hide_unreadable(prefix, plan.unreadable)
            state = engine.read_prefix(prefix)
            have = {p.name for p in state.packages}
            target = [*state.packages, *(p for p in wanted if p.name not in have)]
            warnings = engine.install(
                target, prefix, cache_dir=layout.package_cache, installed=state.packages,
                reinstall=names,
            )  # fmt: skip
            journal.record(step="linked", warnings=warnings)
        warnings = list((journal.last(step="linked") or {}).get("warnings", []))
        if not journal.last(step="records"):
            _restore_records(prefix, saved, plan.records)
            journal.record(step="records")
        for fix in r.fixes:
            if fix.source == "pypi" and not journal.last(step="pypi", name=fix.name):
                _uv_reinstall(layout, prefix, fix)
                journal.record(step="pypi", name=fix.name)
        perms.limit_installed(prefix, layout.package_cache, engine.read_prefix(prefix).packages)
        tick()
        remove_tree(work)
        journal.finish()
    warnings += _still_broken(prefix, r.fixes, full=r.full)
    return RepairReport(
        **{
            **r.__dict__,
            "dry_run": False,
            "warnings": (*r.warnings, *warnings),
            "aside_dir": str(prefix / ASIDE_DIR) if any(f.aside for f in r.fixes) else None,
            "seconds": time.perf_counter() - start,
        }
    )


def _still_broken(prefix: Path, fixes, *, full: bool) -> list[str]:
    """A repaired package that still does not match its record is as its archive ships it
    (a program in bin/ packed without its execute bit, say): said, not repaired again."""
    names = {f.name for f in fixes}
    check = check_prefix(prefix, full=full, extras=False)
    out = []
    for pkg in check.broken_packages:
        if pkg.name in names:
            first = (pkg.changed[0].path + ": " + pkg.changed[0].detail) if pkg.changed else ""
            what = "; ".join(x for x in (first, ", ".join(pkg.missing[:1])) if x)
            out.append(
                f"{pkg.label} still differs from its record after it was installed again "
                f"({what}): the package itself may ship it that way"
            )
    return out


def _open_journal(layout: Layout, plan: RepairPlan) -> Journal:
    from hpcenv.report import jsonable

    header = {
        "prefix": str(plan.prefix),
        "name": plan.name,
        "pid": os.getpid(),
        "records": list(plan.records),
        "unreadable": plan.unreadable,
        "fixes": jsonable(plan.report.fixes),
    }
    journal = Journal.open(layout.journal_dir, journal_name(plan.prefix), header)
    if journal.resumed:
        pid = journal.header.get("pid")
        if isinstance(pid, int) and pid_alive(pid):
            raise RefusedError(
                f"another hpcenv (pid {pid}) is repairing {plan.prefix}",
                hint="wait for it to finish, or re-run once it is gone",
            )
        journal.record(step="resumed", pid=os.getpid())
    return journal


def _save_records(prefix: Path, saved: Path, records: tuple[str, ...]) -> None:
    """Copy the records of the packages to repair (bytes and mode), each atomically."""
    saved.mkdir(parents=True, exist_ok=True, mode=0o700)
    for record in records:
        src = prefix / "conda-meta" / record
        try:
            data, mode = src.read_bytes(), stat.S_IMODE(os.stat(src).st_mode)
        except FileNotFoundError:
            continue
        atomic_write(saved / record, data, mode)


def _wanted(state, copies: dict, records: tuple[str, ...]) -> list:
    """The records to install: the env's own, or the saved copy of one rattler removed."""
    have = {os.path.basename(p.record_path or ""): p for p in state.packages}
    out = []
    for record in records:
        p = have.get(record) or copies.get(record)
        if p is not None:
            out.append(p)
    return out


def _unreadable_wanted(layout: Layout, settings, prefix: Path, state, unreadable: dict) -> list:
    """The records of the packages whose record is unreadable, solved from their pins."""
    from hpcenv import engine

    out = []
    for pin in unreadable.values():
        name = engine.spec_name(pin)
        if any(p.name == name for p in state.packages):
            continue  # installed again by an earlier run
        solution = engine.solve(
            _channels(settings, prefix, state), [pin, *(p.pin for p in state.packages)],
            cache_dir=layout.package_cache, installed=state.packages,
        )  # fmt: skip
        out += [p for p in solution.packages if p.name == name]
    return out


def _hide_unreadable(prefix: Path, unreadable: dict) -> None:
    """rattler writes the record anew under the same name: the unreadable one goes first,
    kept beside it as `.NAME.unreadable` (a hidden name no tool reads)."""
    for record in unreadable:
        damaged = prefix / "conda-meta" / record
        if damaged.exists():
            os.replace(damaged, damaged.with_name(f".{record}.unreadable"))


def _channels(settings, prefix: Path, state) -> list[str]:
    from hpcenv.channels import channel_urls
    from hpcenv.envs.plan import EnvMeta, used_channels

    meta = EnvMeta.load(prefix)
    channels = list(meta.channels if meta and meta.channels else used_channels(state.packages))
    return channel_urls(settings, channels) or list(settings.channels)


def _refresh_cache(layout: Layout, prefix: Path, fixes, wanted, state) -> None:
    """Set aside damaged cache entries, then fetch what the cache lacks (env untouched)."""
    from hpcenv import engine

    by_name = {p.name: p for p in wanted}
    for fix in fixes:
        p = by_name.get(fix.name)
        if p is None:
            continue
        entry = pkgcache.cache_entry(layout.package_cache, p)
        if fix.how == "re-extract" and entry.is_dir():
            pkgcache.set_aside(layout.package_cache, p)
    missing = [p for p in wanted if not pkgcache.has_cached(layout.package_cache, p)]
    if not missing:
        return
    python = next((p for p in state.packages if p.name == "python"), None)
    python = python or by_name.get("python")
    scratch = _work_dir(layout, prefix) / "fetch"
    try:
        engine.fetch(missing, layout.package_cache, scratch, python=python)
    except engine.FetchError as exc:
        raise gone(layout, prefix, exc.package, exc.reason) from None


def _move_aside(prefix: Path, fix: PackageFix, journal: Journal) -> None:
    """Entries in the way to PREFIX/etc/hpcenv/repair-aside/<stamp>/..., unsearchable
    directories their owner's permissions (idempotent: what was done is not there anymore)."""
    from hpcenv.perms import current_umask

    for rel in fix.unlock:
        path = prefix / rel
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o500 != 0o500:
            os.chmod(path, (stat.S_IMODE(st.st_mode) | 0o700 | 0o055) & ~current_umask())
    if not fix.aside:
        return
    stamp = (journal.last(step="aside-dir") or {}).get("dir")
    if stamp is None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        journal.record(step="aside-dir", dir=stamp)
    for rel in fix.aside:
        src = prefix / rel
        if not os.path.lexists(src):
            continue
        dst = prefix / ASIDE_DIR / stamp / rel
        if os.path.lexists(dst):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        tick()


def _restore_records(prefix: Path, saved: Path, records: tuple[str, ...]) -> None:
    """Put each saved record back: its bytes when rattler's new one differs only in the
    fields rattler does not write, else the new one with the saved fields it lacks."""
    for record in records:
        copy = saved / record
        target = prefix / "conda-meta" / record
        try:
            old_bytes = copy.read_bytes()
            old = json.loads(old_bytes)
            new = json.loads(target.read_bytes())
        except (OSError, ValueError):
            continue
        mode = stat.S_IMODE(os.stat(copy).st_mode)
        if _without(new) == _without(old):
            if target.read_bytes() != old_bytes:
                atomic_write(target, old_bytes, mode)
            continue
        merged = {**{k: v for k, v in old.items() if k not in new}, **new}
        for key in _RECORD_ONLY:
            if key in old:
                merged[key] = old[key]
        atomic_write(target, json.dumps(merged, indent=1), mode)


def _without(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in _RECORD_ONLY}


def _uv_reinstall(layout: Layout, prefix: Path, fix: PackageFix) -> None:
    """uv installs NAME==VERSION again, with the env's pip index options (pipstep.run_uv: the
    same cache, config and permission rules as the pip step of create/install)."""
    import tempfile

    from hpcenv.envs.plan import EnvMeta
    from hpcenv.pipstep import limit_lock_file, run_uv

    meta = EnvMeta.load(prefix)
    options = [line for line in (meta.pip if meta else ()) if line.strip().startswith("-")]
    if fix.uv_cache_clean:
        run_uv(layout, ["cache", "clean", fix.name])
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
        reqs.write("\n".join([*options, fix.origin]) + "\n")
    try:
        result = run_uv(
            layout,
            ["pip", "install", "--python", str(prefix / "bin" / "python"),
             "--reinstall-package", fix.name, "-r", reqs.name],
        )  # fmt: skip
    finally:
        os.unlink(reqs.name)
        limit_lock_file(prefix)  # uv leaves the env's .lock world-writable
    if result.returncode != 0:
        msgs = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise OperationError(
            f"uv could not install {fix.origin} again: {' / '.join(msgs[-2:])}",
            hint="if its index is unreachable, re-run where it is (the rest is repaired; "
            "re-running `hpcenv repair` finishes it)",
        )
