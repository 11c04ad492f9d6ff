"""What an env was asked to hold, and the plan of an install or remove that keeps the rest.

**What was requested.** An env hpcenv made records it in `PREFIX/etc/hpcenv/env.json`; what
conda or mamba changed since hpcenv's last entry in `conda-meta/history` is applied on top.
For an env hpcenv did not make: conda's history (`# update specs:` / `# remove specs:`, the
`# cmd:` line as a fallback), else the records' `requested_spec`, else every installed
package counts as requested by name.

**The rule.** `install` and `remove` never remove, downgrade or change the build of a
package the user did not name, unless the solve cannot succeed otherwise:

    install   1. the new specs + every other installed package pinned to its exact version
                 and build (`name ==version build`; the installed records are also given to
                 the solver, so a package from a channel no longer listed still solves)
              2. the same packages by name only (versions may move), installed ones preferred
              3. the requested specs only (packages may go)
    remove    no solve: the named packages go, with what only they needed (unless it was
              requested); a package that depends on a removed one must go too

The plan says which step it took and lists every change; a plan that removes, downgrades or
rebuilds a package nobody named needs consent (`PackageChange.needs_consent`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.condameta import (
    channel_base,
    channel_short,
    entries_since_hpcenv,
    read_history,
    requested_from_history,
)
from hpcenv.fsops import atomic_write
from hpcenv.registry import META_DIR, MadeBy
from hpcenv.strenum import StrEnum

if TYPE_CHECKING:
    from hpcenv.engine import PackageInfo
    from hpcenv.envs.journal import Recovered
    from hpcenv.gpu import GpuReport
    from hpcenv.sitelink import SiteUse


def spec_name(spec: str) -> str:
    """The package name of a match spec, as rattler reads it (through the engine)."""
    from hpcenv.engine import spec_name as engine_spec_name

    return engine_spec_name(spec)


@dataclass(frozen=True)
class EnvMeta:
    """What was asked for; stored in PREFIX/etc/hpcenv/env.json."""

    name: str | None
    prefix: str
    specs: tuple[str, ...]
    channels: tuple[str, ...]
    pip: tuple[str, ...] = ()
    cuda: str | None = None
    gpu: bool = False
    created: float = 0.0
    updated: float = 0.0
    made_by: MadeBy = MadeBy.HPCENV  # another maker: an env hpcenv adopted
    lockfile: str | None = None  # the lock file it was created from (made_by "lock")

    @classmethod
    def load(cls, prefix: Path) -> EnvMeta | None:
        try:
            data = json.loads((prefix / META_DIR / "env.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        fields = cls.__dataclass_fields__
        data = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields}
        try:
            data["made_by"] = MadeBy(data.get("made_by", MadeBy.HPCENV))
            return cls(**data)
        except (TypeError, ValueError):
            return None

    def save(self, prefix: Path) -> None:
        from hpcenv.report import jsonable

        atomic_write(prefix / META_DIR / "env.json", json.dumps(jsonable(self), indent=2) + "\n")


class SpecSource(StrEnum):
    """Where what an env was asked to hold was read from."""

    HPCENV = "hpcenv"  # env.json (and conda's entries since hpcenv's last)
    HISTORY = "history"  # conda-meta/history
    RECORDS = "records"  # the records' requested_spec
    INSTALLED = "installed"  # nothing said: every installed package, by name


@dataclass(frozen=True)
class Requested:
    specs: tuple[str, ...]
    source: SpecSource
    channels: tuple[str, ...]  # recorded, else the channels the packages came from


def used_channels(packages: Iterable) -> tuple[str, ...]:
    """The channels installed packages came from (base URLs, most used first)."""
    counts: dict[str, int] = {}
    for p in packages:
        base = channel_base(p.channel, p.subdir)
        if base:
            counts[base] = counts.get(base, 0) + 1
    return tuple(sorted(counts, key=lambda c: -counts[c]))


def requested(prefix: Path, packages: Sequence, meta: EnvMeta | None) -> Requested:
    """What the user asked this env to hold (see the module docstring)."""
    installed = {p.name for p in packages}
    entries = read_history(prefix)
    if meta is not None:
        base = {spec_name(s): s for s in meta.specs}
        specs, _ = requested_from_history(entries_since_hpcenv(entries), base)
        channels = meta.channels or used_channels(packages)
        return Requested(tuple(specs.values()), SpecSource.HPCENV, tuple(channels))
    channels = used_channels(packages)
    specs, said = requested_from_history(entries)
    specs = {n: s for n, s in specs.items() if n in installed}
    if said and specs:
        return Requested(tuple(specs.values()), SpecSource.HISTORY, channels)
    from_records = {p.name: p.requested[0] for p in packages if p.requested}
    if from_records:
        return Requested(tuple(from_records.values()), SpecSource.RECORDS, channels)
    return Requested(tuple(sorted(installed)), SpecSource.INSTALLED, channels)


# --------------------------------------------------------------------------- changes


class ChangeKind(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    REBUILD = "rebuild"  # same version, another build


@dataclass(frozen=True)
class PackageChange:
    kind: ChangeKind
    name: str
    old: str | None  # "VERSION BUILD"
    new: str | None
    named: bool  # the user named it (or it only served a package the user named)

    @property
    def needs_consent(self) -> bool:
        return not self.named and self.kind in (
            ChangeKind.REMOVE,
            ChangeKind.DOWNGRADE,
            ChangeKind.REBUILD,
        )

    def describe(self) -> str:
        old_v, _, old_b = (self.old or "").partition(" ")
        new_v, _, new_b = (self.new or "").partition(" ")
        if self.kind is ChangeKind.ADD:
            return f"+{self.name} {new_v}"
        if self.kind is ChangeKind.REMOVE:
            return f"-{self.name} {old_v}"
        if self.kind is ChangeKind.REBUILD:
            return f"{self.name} {old_v} ({old_b} → {new_b})"
        return f"{self.name} {old_v} → {new_v}"


def diff(
    installed: Sequence, target: Sequence, named: set[str], serving: set[str] = frozenset()
) -> tuple[PackageChange, ...]:
    """Every change from `installed` to `target`; `named` are the names the user gave,
    `serving` what only they needed (removed along with them)."""
    from hpcenv.engine import compare_versions

    before = {p.name: p for p in installed}
    after = {p.name: p for p in target}
    out = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        is_named = name in named or name in serving
        if old is None:
            out.append(PackageChange(ChangeKind.ADD, name, None, _vb(new), True))
        elif new is None:
            out.append(PackageChange(ChangeKind.REMOVE, name, _vb(old), None, is_named))
        elif (old.version, old.build) != (new.version, new.build):
            order = compare_versions(new.version, old.version)
            kind = (
                ChangeKind.UPGRADE
                if order > 0
                else ChangeKind.DOWNGRADE
                if order < 0
                else ChangeKind.REBUILD
            )
            out.append(PackageChange(kind, name, _vb(old), _vb(new), is_named))
    order = {"add": 0, "upgrade": 1, "downgrade": 1, "rebuild": 1, "remove": 2}
    return tuple(sorted(out, key=lambda c: (order[c.kind], c.name)))


def _vb(p) -> str:
    return f"{p.version} {p.build}"


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class PackageLine:
    name: str
    version: str
    build: str
    channel: str
    size: int | None = None


def lines(packages: Iterable[PackageInfo]) -> tuple[PackageLine, ...]:
    """Packages as the report shows them (sorted by name, the channel by its short name)."""
    return tuple(
        PackageLine(p.name, p.version, p.build, channel_short(p.channel, p.subdir), p.size)
        for p in sorted(packages, key=lambda p: p.name)
    )


@dataclass(frozen=True)
class ChangeReport:
    """The result of create / install / remove (a plan when `dry_run`)."""

    command: str
    name: str | None
    prefix: str
    dry_run: bool
    packages: tuple[PackageLine, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    download_bytes: int = 0
    pip: tuple[str, ...] = ()  # the PyPI requirements asked for
    pypi: tuple[str, ...] = ()  # "NAME VERSION" of the PyPI packages installed
    warnings: tuple[str, ...] = ()
    gpu: GpuReport | None = None
    seconds: float = 0.0
    leftovers_removed: tuple[str, ...] = ()
    changes: tuple[PackageChange, ...] = ()
    relaxed: str | None = None  # why packages the user did not name change
    recovered: tuple[Recovered, ...] = ()
    resumed: bool = False  # this run finished an interrupted run of the same command
    kernels_removed: tuple[str, ...] = ()  # the Jupyter kernels of a deleted env (`kernel`)
    site: SiteUse | None = None  # what came from the site's package caches (`sitelink`)

    @property
    def needs_consent(self) -> tuple[PackageChange, ...]:
        return tuple(c for c in self.changes if c.needs_consent)


def consent_question(report: ChangeReport) -> str:
    what = ", ".join(c.describe() for c in report.needs_consent)
    why = f" because {report.relaxed}" if report.relaxed else ""
    return f"this {report.command} changes packages you did not name{why}: {what}"


# --------------------------------------------------------------------------- install: solve


RELAXED_VERSIONS = "keeping every other package at its installed version and build is impossible"
RELAXED_REMOVALS = "keeping every other installed package is impossible"


def solve_keeping(
    urls: Sequence[str],
    add: Sequence[str],
    installed: Sequence,
    requested_specs: Sequence[str],
    *,
    cache_dir: Path,
    cuda: str | None,
):
    """(solution, None or why the plan relaxes the pins, the specs solved) — see the rule."""
    from hpcenv import engine
    from hpcenv.errors import UsageError

    add_names = {spec_name(s) for s in add}
    others = [p for p in installed if p.name not in add_names]
    asked = {spec_name(s): s for s in requested_specs}
    missing = [
        s for n, s in asked.items() if n not in add_names and n not in {p.name for p in installed}
    ]
    tiers = [
        (None, [*add, *(p.pin for p in others), *missing]),
        (RELAXED_VERSIONS, [*add, *(asked.get(p.name, p.name) for p in others), *missing]),
        (RELAXED_REMOVALS, [*add, *(s for n, s in asked.items() if n not in add_names)]),
    ]
    first_error = None
    for why, specs in tiers:
        specs = list(dict.fromkeys(specs))
        try:
            solution = engine.solve(
                urls, specs, cache_dir=cache_dir, cuda=cuda, installed=installed
            )
        except UsageError as exc:
            if "invalid package spec" in exc.message:
                raise
            first_error = first_error or exc
            continue
        if why is not None and first_error is not None:
            why = f"{why} ({_reason(first_error)})"
        return solution, why, specs
    raise first_error  # type: ignore[misc]


def _reason(exc) -> str:
    lines = [line.strip() for line in exc.message.splitlines()[1:] if line.strip()]
    return "; ".join(lines[:2]) or exc.message.splitlines()[0]


# --------------------------------------------------------------------------- remove: no solve


def removal(
    installed: Sequence, drop: set[str], requested_names: set[str]
) -> tuple[list, set[str], set[str]]:
    """(packages kept, dependents that must go too, packages that only served the removed
    ones). Nothing is solved: the versions of what stays never change."""
    by_name = {p.name: p for p in installed}
    gone = set(drop)
    dependents: set[str] = set()
    changed = True
    while changed:  # whatever depends on a removed package cannot stay
        changed = False
        for p in installed:
            if p.name not in gone and any(spec_name(d) in gone for d in p.depends):
                gone.add(p.name)
                dependents.add(p.name)
                changed = True

    def needs(names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = [n for n in names if n in by_name]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            todo += [m for m in (spec_name(d) for d in by_name[n].depends) if m in by_name]
        return seen

    served = needs(gone) - gone
    roots = [n for n in by_name if n not in gone and (n not in served or n in requested_names)]
    keep = needs(roots)
    orphans = served - keep
    kept = [p for p in installed if p.name in keep]
    return kept, dependents, orphans
