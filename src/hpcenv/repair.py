"""`hpcenv repair`: install again exactly the packages of an env that lost files.

`plan_repair` checks the env (`verify.check_prefix`) and decides, per broken package, where
its files come from; nothing is changed. `apply_repair` carries the plan out, journaled.

Conda packages get the same build again (the one in their record), linked from the package
cache as rattler links any install:

    cached       the extracted package in the cache is whole: linked from it
    re-extract   the cached copy is damaged too (a file missing or of another size, or one of
                 the env's damaged files is the cache's own inode: a hardlink shares every
                 change, or unreadable): it is set aside (the cache's trash) and extracted
                 again from the archive at the record's URL
    fetch        the cache lost it: downloaded again from the record's URL

The archive is fetched before the env is touched (`engine.fetch`): rattler, when a download
fails in the middle of an install, has already unlinked the package it replaces. A package
that is neither in the cache nor at its URL (a `file://` channel that lost it is seen while
planning) stops the repair with nothing changed, naming the package and the lock file to
re-create the env from.

PyPI packages (a dist-info no conda record lists) are installed again by uv at the version
their METADATA names (`NAME==VERSION`, with the index options of the env's `pip:` section).
A damaged file that shares its inode with uv's cache means uv's cache holds the damage: the
package is removed from uv's cache first (`uv cache clean NAME`), so uv unpacks it afresh.

The steps (journal `STATE/journal/repair-KEY.jsonl`, KEY from the prefix; each is redone
harmlessly by a re-run, so `hpcenv repair NAME` after a kill finishes the repair):

    saved     the records of the broken packages copied to STATE/repair/KEY/conda-meta
    cache     damaged cache entries set aside; missing ones fetched
    aside     what stands where a package's file belongs (a directory where a file was) is
              moved to PREFIX/etc/hpcenv/repair-aside/; directories that cannot be searched
              get their owner's permission back
    linked    rattler unlinks the packages and links them again (a record it had already
              removed when killed is taken from the saved copy)
    records   each record as it was: rattler writes its own fields only (no requested_spec,
              none of conda's), so the saved record is put back where nothing else differs
    pypi      uv reinstalls
    done      the env's modes and access times (`perms.limit_installed`), the copies removed
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv import perms  # early: it notes when this process started (fresh cache entries)
from hpcenv.errors import OperationError, RefusedError
from hpcenv.journal import Journal, StorageLock, pid_alive, tick
from hpcenv.registry import META_DIR, atomic_write
from hpcenv.storage import Layout, ensure_state_dir
from hpcenv.verify import EnvCheck, PackageCheck, check_prefix

ASIDE_DIR = META_DIR / "repair-aside"
_RECORD_ONLY = ("requested_spec", "requested_specs")  # fields rattler leaves empty


@dataclass(frozen=True)
class PackageFix:
    """How one broken package is repaired (the same line for --dry-run and the real run)."""

    name: str
    version: str
    build: str  # "" for PyPI
    source: str  # conda | pypi
    how: str  # conda: cached | re-extract | fetch | record; pypi: uv
    why: str  # what is wrong with it, and with its cached copy
    missing: int
    changed: int
    origin: str  # conda: the archive URL; pypi: the requirement uv installs
    aside: tuple[str, ...] = ()  # entries in the way, moved to etc/hpcenv/repair-aside
    unlock: tuple[str, ...] = ()  # directories that get their owner's permission back
    uv_cache_clean: bool = False  # pypi: uv's cache shares the damaged inode

    def describe(self) -> str:
        what = f"{self.name} {self.version}" + (f" ({self.build})" if self.build else "")
        lost = ", ".join(
            f"{n} {kind}" for n, kind in ((self.missing, "missing"), (self.changed, "changed")) if n
        )
        how = {
            "cached": "link again from the package cache",
            "re-extract": f"extract again from {self.origin} (the cached copy is damaged: "
            f"{self.why}), then link",
            "fetch": f"download again from {self.origin} (not in the package cache), then link",
            "record": f"install again from {self.origin} (its record is unreadable: {self.why})",
            "uv": (
                "remove it from uv's cache (it shares the damaged file), then "
                if self.uv_cache_clean
                else ""
            )
            + f"reinstall {self.origin} with uv",
        }[self.how]
        line = f"{what} [{self.source}]: {how}" + (f" ({lost})" if lost else "")
        for path in self.aside:
            line += f"; move {path} aside to {ASIDE_DIR}/"
        for path in self.unlock:
            line += f"; give {path} its owner's permissions back"
        return line


@dataclass(frozen=True)
class RepairReport:
    name: str | None
    prefix: str
    dry_run: bool
    fixes: tuple[PackageFix, ...]
    checked_packages: int = 0
    checked_files: int = 0
    full: bool = False
    resumed: bool = False  # this run finished an interrupted repair
    aside_dir: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(f.describe() for f in self.fixes)


@dataclass(frozen=True)
class RepairPlan:
    report: RepairReport
    prefix: Path
    name: str | None
    records: tuple[str, ...] = ()  # conda-meta file names of the broken conda packages
    unreadable: dict = field(default_factory=dict, repr=False)  # record file -> pin
    key_set: frozenset = frozenset()  # the records when planned (refused if they change)


def journal_name(prefix: Path) -> str:
    return "repair-" + hashlib.sha256(os.fsencode(str(prefix))).hexdigest()[:16]


def _work_dir(layout: Layout, prefix: Path) -> Path:
    return layout.state_dir / "repair" / journal_name(prefix).removeprefix("repair-")


# --------------------------------------------------------------------------- planning


def plan_repair(
    layout: Layout, settings, name_or_prefix: str, *, full: bool = False, dry_run: bool = False
) -> RepairPlan:
    """Check the env and decide how each broken package is repaired; nothing is changed.
    An interrupted repair of the env is planned from its journal (to be finished)."""
    from hpcenv.envs import require_writable
    from hpcenv.registry import resolve
    from hpcenv.trust import check_trusted

    name, prefix = resolve(layout, name_or_prefix)
    check_trusted(prefix)
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
    from hpcenv.verify import _bad_record

    return _bad_record(path, reason).unreadable


def _solve_pin(layout: Layout, settings, prefix: Path, state, bad):
    """The exact record of a package whose conda-meta file is unreadable (its name, version
    and build are in the file name), from the env's channels."""
    from hpcenv import engine
    from hpcenv.envplan import EnvMeta, used_channels
    from hpcenv.envs import channel_urls

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


def _cache_state(layout: Layout, prefix: Path, info, pkg: PackageCheck | None) -> tuple[str, str]:
    """("cached" | "re-extract" | "fetch", why) for one conda package."""
    from hpcenv import engine

    entry = engine.cache_entry(layout.package_cache, info)
    if not entry.is_dir():
        return "fetch", "not in the package cache"
    why = engine.check_cache_entry(entry)
    if why is None and pkg is not None:
        why = _cache_shares_damage(prefix, entry, info, pkg)
    return ("re-extract", why) if why else ("cached", "")


def _cache_path(entry: Path, info, rel: str) -> Path:
    """Where the cache entry holds the file the env has at `rel` (noarch: python packages
    keep `site-packages/` and `python-scripts/` there)."""
    if info.noarch == "python":
        if "/site-packages/" in rel:
            return entry / ("site-packages/" + rel.split("/site-packages/", 1)[1])
        if rel.startswith("bin/"):
            return entry / ("python-scripts/" + rel[4:])
    return entry / rel


def _cache_shares_damage(prefix: Path, entry: Path, info, pkg: PackageCheck) -> str | None:
    """Why the cached copy is damaged too: a changed env file that is the cache's own inode
    (a hardlink shares every change), or the cached file is not readable."""
    for issue in pkg.changed:
        cached = _cache_path(entry, info, issue.path)
        try:
            env_st = os.lstat(prefix / issue.path)
            cache_st = os.lstat(cached)
        except OSError:
            continue
        if (env_st.st_dev, env_st.st_ino) == (cache_st.st_dev, cache_st.st_ino):
            return f"{issue.path} is the cache's own file ({issue.detail})"
        if stat.S_ISREG(cache_st.st_mode) and not cache_st.st_mode & 0o400:
            return f"{cached.relative_to(entry)} is not readable"
    return None


def _shares_inode(prefix: Path, pkg: PackageCheck) -> bool:
    """Whether a changed file of a PyPI package is also linked elsewhere (uv's cache)."""
    for issue in pkg.changed:
        try:
            if os.lstat(prefix / issue.path).st_nlink > 1:
                return True
        except OSError:
            continue
    return False


def _in_the_way(prefix: Path, pkg: PackageCheck) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(entries that stand where a package's file or directory belongs, directories on the
    way that cannot be searched)."""
    aside, unlock = [], []
    for issue in pkg.changed:
        if issue.in_the_way:
            aside.append(issue.path)
        elif issue.detail.startswith("cannot be checked"):
            d = _unsearchable_ancestor(prefix, issue.path)
            if d is not None and d not in unlock:
                unlock.append(d)
    return tuple(aside), tuple(unlock)


def _unsearchable_ancestor(prefix: Path, rel: str) -> str | None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        try:
            st = os.lstat(prefix / d)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o500 != 0o500:
            return d
    return None


def _check_reachable(layout: Layout, prefix: Path, info, how: str) -> None:
    """A package to download from a `file://` channel that lost it: refuse now, nothing
    changed. Other URLs are tried by the fetch step, before the env is touched."""
    if how not in ("fetch", "re-extract", "record") or not info.url.startswith("file://"):
        return
    from urllib.parse import unquote, urlparse

    path = Path(unquote(urlparse(info.url).path))
    if not path.is_file():
        raise gone(layout, prefix, info, f"{path} does not exist", from_channel=True)


def gone(
    layout: Layout, prefix: Path, info, reason: str, *, from_channel: bool = False
) -> OperationError:
    """The error for a package nobody can give back: which one, and the lock to re-create from."""
    from hpcenv.envplan import EnvMeta

    meta = EnvMeta.load(prefix)
    env = meta.name if meta and meta.name else str(prefix)
    lock = f"the lock it was made from, {meta.lockfile}" if meta and meta.lockfile else None
    hint = (
        f"re-create the env from {lock}, with a channel that has the package"
        if lock
        else f"write a lock (`hpcenv export {env} --lock -o {Path(env).name}.lock`) and "
        f"re-create the env from it with a channel or mirror that has the package "
        f"(`hpcenv create {Path(env).name} -f {Path(env).name}.lock --force`)"
    )
    where = (
        "is gone from the package cache and from its channel"
        if from_channel
        else "is not in the package cache and cannot be downloaded again"
    )
    return OperationError(
        f"cannot repair {env}: {info.name} {info.version} ({info.build}) {where} ({reason}); "
        "nothing in the env was changed",
        hint=hint,
    )


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
    from hpcenv.envjournal import recover, remove_tree

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
    from hpcenv.envplan import EnvMeta, used_channels
    from hpcenv.envs import channel_urls

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
        entry = engine.cache_entry(layout.package_cache, p)
        if fix.how == "re-extract" and entry.is_dir():
            engine.set_aside(layout.package_cache, p)
    missing = [p for p in wanted if not engine.has_cached(layout.package_cache, p)]
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


def _pypi_origins(prefix: Path) -> Callable[[str, str], str]:
    """What installs a PyPI package again: the artifact hpcenv recorded when it installed it
    (pypi.json: the same wheel, checked by its hash, with the same direct_url.json), else
    NAME==VERSION from the env's index options."""
    from hpcenv.pypi import canonical, recorded

    known = {canonical(p.name): p for p in recorded(prefix)}

    def origin(name: str, version: str) -> str:
        rec = known.get(canonical(name))
        return rec.direct_reference if rec and rec.version == version else f"{name}=={version}"

    return origin


def _uv_reinstall(layout: Layout, prefix: Path, fix: PackageFix) -> None:
    """uv installs NAME==VERSION again, with the env's pip index options (pipstep.run_uv: the
    same cache, config and permission rules as the pip step of create/install)."""
    import tempfile

    from hpcenv.envplan import EnvMeta
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
