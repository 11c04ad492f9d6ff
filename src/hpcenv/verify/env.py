"""One env checked: every record's files (`checker`), then the files no record lists (extras)."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from hpcenv.treescan import fanout
from hpcenv.verify.checker import LISTED_LIMIT, _Checker, _Done, _Unit
from hpcenv.verify.results import EnvCheck, PackageCheck

# Checking a path costs about 3x what the usage walker spends on an entry (the record is
# parsed, the path looked up): fork for a third of the walker's entries.
FORK_AFTER_ENTRIES = 4000
_BYTES_PER_ENTRY = 300  # a conda record holds about this many bytes per path


# --------------------------------------------------------------------------- one env


def site_packages_dirs(prefix: Path) -> list[Path]:
    """PREFIX/lib/python*/site-packages that exist."""
    try:
        names = os.listdir(prefix / "lib")
    except OSError:
        return []
    out = []
    for name in sorted(names):
        if name.startswith("python"):
            site = prefix / "lib" / name / "site-packages"
            if site.is_dir():
                out.append(site)
    return out


def _dist_infos(prefix: Path) -> list[Path]:
    out = []
    for site in site_packages_dirs(prefix):
        try:
            names = sorted(os.listdir(site))
        except OSError:
            continue
        out += [
            site / n for n in names if n.endswith(".dist-info") and (site / n / "RECORD").is_file()
        ]
    return out


def check_prefix(
    prefix: Path,
    *,
    name: str | None = None,
    full: bool = False,
    extras: bool = True,
    deadline: float | None = None,
    threads: int | None = None,
    processes: int | None = None,
) -> EnvCheck:
    """Check one env against its records (see the module docstring). Never raises for what
    it finds; an env that cannot be read at all has `error` set."""
    t0 = time.perf_counter()
    prefix = Path(prefix)
    root = os.fspath(prefix) + "/"
    meta = prefix / "conda-meta"
    try:
        records = [e for e in os.scandir(meta) if e.name.endswith(".json")]
        units = [_Unit("conda", e.path, _weight(e)) for e in records]
    except OSError as exc:
        return EnvCheck(name, str(prefix), full, 0, 0, error=f"cannot read {meta}: {exc.strerror}")
    units.sort(key=lambda u: u.path)
    checker = _Checker(root, full, extras, deadline)
    done, complete = fanout.run(
        units,
        checker.one,
        threads=threads,
        processes=processes,
        fork_after=_BYTES_PER_ENTRY * FORK_AFTER_ENTRIES,
    )
    conda_dirs: set[str] = set()
    for d in done:
        conda_dirs.update(d.names)
    pypi = [
        _Unit("pypi", str(d), _weight_of(d / "RECORD"))
        for d in _dist_infos(prefix)
        if os.path.relpath(d, prefix) not in conda_dirs
    ]
    if complete and pypi:
        more, complete = fanout.run(
            pypi,
            checker.one,
            threads=threads,
            processes=processes,
            fork_after=_BYTES_PER_ENTRY * FORK_AFTER_ENTRIES,
        )
        done += more
    checked = [d for d in done if d.check is not None]
    extra = _extras(root, checked, threads, processes) if extras and complete else {}
    problems = []
    for d in sorted(checked, key=lambda d: (d.check.source, d.check.name)):
        check = d.check
        found = extra.get(check.record, [])
        if found:
            m, c, _ = check.counts
            check = _with_extras(check, found, (m, c, len(found)))
        if check.broken or check.counts[2] or check.unchecked:
            problems.append(check)
    unreadable = tuple(sorted((d.unreadable for d in done if d.unreadable), key=lambda u: u.path))
    return EnvCheck(
        name,
        str(prefix),
        full,
        packages=len(checked),
        files=sum(d.entries for d in done),
        problems=tuple(problems),
        unreadable=unreadable,
        complete=complete,
        total_packages=len(units) + len(pypi),
        seconds=time.perf_counter() - t0,
    )


def _weight(entry: os.DirEntry) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0


def _weight_of(path: Path) -> int:
    try:
        return os.lstat(path).st_size * 3  # a RECORD line is about a third of a record's
    except OSError:
        return 0


def _with_extras(check: PackageCheck, extra: list[str], counts) -> PackageCheck:
    from dataclasses import replace

    return replace(check, extra=tuple(sorted(extra)[:LISTED_LIMIT]), counts=counts)


@dataclass(frozen=True)
class _Owned:
    """The directories only one package has files in (a piece of the extras' listing)."""

    record: str
    dirs: tuple[tuple[str, tuple[str, ...]], ...]  # directory, the names recorded in it
    mine: frozenset  # every directory on the way to the package's paths
    weight: int


@dataclass
class _Listed:
    record: str
    found: list[str]
    entries: int
    seconds: float


def _extras(root: str, checked: list[_Done], threads, processes) -> dict[str, list[str]]:
    """Per package record: entries of the directories only it has files in that no record
    lists (`__pycache__` and .pyc left out: python's own caches)."""
    ancestors: list[set[str]] = []
    holders: dict[str, int] = {}
    for d in checked:
        mine: set[str] = set()
        for directory in d.names:
            while directory and directory not in mine:
                mine.add(directory)
                directory = directory.rpartition("/")[0]
        ancestors.append(mine)
        for directory in mine:
            holders[directory] = holders.get(directory, 0) + 1
    pieces = []
    for d, mine in zip(checked, ancestors, strict=True):
        owned = tuple(
            (directory, tuple(names))
            for directory, names in d.names.items()
            if directory and holders.get(directory) == 1
        )
        if owned:
            weight = sum(len(names) for _, names in owned)
            pieces.append(_Owned(d.check.record, owned, frozenset(mine), weight))
    done, _complete = fanout.run(
        pieces, lambda piece: _list_owned(root, piece), threads=threads, processes=processes,
        fork_after=FORK_AFTER_ENTRIES * 2,
    )  # fmt: skip
    return {d.record: d.found for d in done if d.found}


def _list_owned(root: str, piece: _Owned) -> _Listed:
    t0 = time.perf_counter()
    found = []
    for directory, recorded in piece.dirs:
        try:
            unlisted = set(os.listdir(root + directory)).difference(recorded)
        except OSError:
            continue
        for entry in sorted(unlisted):
            if entry == "__pycache__" or entry.endswith((".pyc", ".pyo")):
                continue
            path = f"{directory}/{entry}"
            if path in piece.mine:
                continue
            try:
                is_dir = stat.S_ISDIR(os.lstat(root + path).st_mode)
            except OSError:
                continue
            found.append(path + "/" if is_dir else path)
    return _Listed(piece.record, found, piece.weight, time.perf_counter() - t0)
