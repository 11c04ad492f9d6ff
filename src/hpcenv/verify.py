"""`hpcenv verify`: is every file of every package still what its record says?

An env loses files behind its owner's back: a scratch purge, an `rm` to free quota, a full
disk that truncated an install, another tool that overwrote or chmod'ed a file. This module
checks an env against its own records and names the packages that lost something:

    conda packages   every path of `conda-meta/*.json` (`paths_data`, else `files`): present,
                     of the recorded type (file, link, directory), of the recorded size, and
                     readable (and executable, for a program in `bin/`); with `full`, its
                     sha256 too
    PyPI packages    every path of the RECORD of a `*.dist-info` in site-packages that no
                     conda record lists (pip or uv put it there): present, size, sha256

Sizes: a file with a `prefix_placeholder` is rewritten at install. rattler (hpcenv, pixi, a
py-rattler script) records the size and sha256 of the file as written (`size_in_bytes`,
`sha256_in_prefix`); conda keeps the package's size, so for conda's records such a file is
checked for presence and, with `full`, against `sha256_in_prefix`. Byte-compiled caches
(`pyc_file` entries, `.pyc` lines of a RECORD) that are missing are not damage: python writes
them again; a `.pyc` present but of another size than its RECORD says is.

Extra files: an entry of a directory that holds files of exactly one package and that no
record lists (`__pycache__` and `.pyc` left out) is reported as extra, never as broken.

Speed: one `lstat` per recorded path, nothing else unless something is wrong (a `bin/` file
without an execute bit is read for `#!` or an ELF header). Packages are checked in this
process, in threads on a slow filesystem, or over forked processes for a big env
(`hpcenv.fanout`, the usage walker's rule). `deadline` (a `time.monotonic()` value) bounds
a check: what was not reached is reported as not checked (`EnvCheck.complete` is false).
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcenv import fanout

EXEC_DIRS = ("bin/", "sbin/", "libexec/")
LISTED_LIMIT = 200  # file names kept per package and kind (the counts are always exact)
# Checking a path costs about 3x what the usage walker spends on an entry (the record is
# parsed, the path looked up): fork for a third of the walker's entries.
FORK_AFTER_ENTRIES = 4000
_BYTES_PER_ENTRY = 300  # a conda record holds about this many bytes per path


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FileIssue:
    path: str  # relative to the prefix
    detail: str  # "68 bytes, not 112", "not readable (mode 0o000)", "content differs"
    in_the_way: bool = False  # a directory where a file belongs, or the other way round


@dataclass(frozen=True)
class PackageCheck:
    """What one package lost. `missing` and `changed` make it broken; `extra` does not."""

    name: str
    version: str
    build: str  # "" for a PyPI package
    source: str  # conda | pypi
    record: str  # conda-meta/NAME-VERSION-BUILD.json or the dist-info dir, relative
    files: int  # paths checked
    missing: tuple[str, ...] = ()
    changed: tuple[FileIssue, ...] = ()
    extra: tuple[str, ...] = ()
    unchecked: tuple[FileIssue, ...] = ()  # full: content not comparable, and why
    counts: tuple[int, int, int] = (0, 0, 0)  # missing, changed, extra (lists may be cut)
    installer: str | None = None  # PyPI: who installed it (INSTALLER)
    url: str = ""  # conda: the archive's URL

    @property
    def broken(self) -> bool:
        return bool(self.counts[0] or self.counts[1])

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" + (f" ({self.build})" if self.build else "")


@dataclass(frozen=True)
class UnreadableRecord:
    """A conda-meta/*.json that cannot be read: its package is invisible to every tool."""

    path: str
    name: str  # guessed from the file name
    version: str
    build: str
    reason: str


@dataclass(frozen=True)
class EnvCheck:
    name: str | None
    prefix: str
    full: bool
    packages: int  # packages checked
    files: int  # paths checked
    problems: tuple[PackageCheck, ...] = ()  # packages with something to report
    unreadable: tuple[UnreadableRecord, ...] = ()
    complete: bool = True  # False: the time ran out (see `packages`)
    total_packages: int = 0
    error: str | None = None  # the env could not be read at all
    interrupted_repair: bool = False
    seconds: float = 0.0

    @property
    def broken(self) -> bool:
        return bool(self.error or self.unreadable or any(p.broken for p in self.problems))

    @property
    def broken_packages(self) -> tuple[PackageCheck, ...]:
        return tuple(p for p in self.problems if p.broken)


@dataclass(frozen=True)
class VerifyReport:
    envs: tuple[EnvCheck, ...]
    full: bool
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    @property
    def broken(self) -> bool:
        return any(e.broken for e in self.envs)


# --------------------------------------------------------------------------- units of work


@dataclass(frozen=True)
class _Unit:
    kind: str  # conda | pypi
    path: str  # the record file, or the dist-info dir (absolute)
    weight: int  # bytes of the record: the work it stands for


@dataclass
class _Done:
    """One unit's outcome, sent back from a worker."""

    check: PackageCheck | None = None
    unreadable: UnreadableRecord | None = None
    names: dict[str, list[str]] = field(default_factory=dict)  # dir -> recorded names
    entries: int = 0
    seconds: float = 0.0


def _bad_record(path: str, reason: str) -> _Done:
    stem = os.path.basename(path).removesuffix(".json")
    parts = stem.rsplit("-", 2)
    name, version, build = (parts + ["", ""])[:3] if len(parts) == 3 else (stem, "", "")
    return _Done(unreadable=UnreadableRecord(path, name, version, build, reason))


def _conda_entries(data: dict) -> list[dict] | None:
    """The record's paths as installed: `paths_data` (conda's package-relative noarch paths
    mapped to the installed ones of `files`), else `files` alone (presence only)."""
    files = data.get("files")
    paths = (data.get("paths_data") or {}).get("paths") if isinstance(data, dict) else None
    if not isinstance(paths, list):
        if not isinstance(files, list):
            return None
        return [{"_path": f, "path_type": "any"} for f in files if isinstance(f, str)]
    if data.get("noarch") == "python" and isinstance(files, list) and paths:
        first = paths[0].get("_path", "") if isinstance(paths[0], dict) else ""
        if first.startswith(("site-packages/", "python-scripts/")):
            by_path = {e.get("_path"): e for e in paths if isinstance(e, dict)}
            out = []
            for f in files:
                if not isinstance(f, str):
                    continue
                if "/site-packages/" in f:
                    key = "site-packages/" + f.split("/site-packages/", 1)[1]
                elif f.startswith("bin/"):
                    key = "python-scripts/" + f[4:]
                else:
                    key = f
                entry = dict(by_path.get(key) or {"path_type": "any"})
                entry["_path"] = f
                out.append(entry)
            return out
    return paths


class _Checker:
    """The per-path checks of one package (the hot loop keeps everything in locals)."""

    def __init__(self, root: str, full: bool, extras: bool, deadline: float | None):
        self.root = root
        self.full = full
        self.extras = extras
        self.deadline = deadline

    def one(self, unit: _Unit) -> _Done | None:
        """Check one unit; None when the deadline passed."""
        return self.conda(unit) if unit.kind == "conda" else self.pypi(unit)

    def conda(self, unit: _Unit) -> _Done | None:
        t0 = time.perf_counter()
        try:
            with open(unit.path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError) as exc:
            return _bad_record(unit.path, f"not readable as JSON ({exc.__class__.__name__})")
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("name", "version", "build")
        ):
            return _bad_record(unit.path, "not a package record (no name, version or build)")
        entries = _conda_entries(data)
        if entries is None:
            return _bad_record(unit.path, "it lists no files (no paths_data, no files)")
        # rattler records the size of a file as written into the prefix; conda the package's
        sizes_in_prefix = "package_tarball_full_path" not in data
        done = self._check(entries, sizes_in_prefix)
        if done is None:
            return None
        missing, changed, unchecked, names = done
        rel_record = os.path.relpath(unit.path, self.root)
        check = _package(
            data["name"], data["version"], data["build"], "conda", rel_record, len(entries),
            missing, changed, unchecked, url=str(data.get("url") or ""),
        )  # fmt: skip
        return _Done(check, None, names, len(entries), time.perf_counter() - t0)

    def pypi(self, unit: _Unit) -> _Done | None:
        t0 = time.perf_counter()
        import csv

        dist = unit.path
        site = os.path.relpath(os.path.dirname(dist), self.root)
        try:
            with open(os.path.join(dist, "RECORD"), encoding="utf-8", newline="") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            name, version = _dist_name_version(dist)
            why = f"its RECORD is not readable ({exc.__class__.__name__})"
            return _Done(unreadable=UnreadableRecord(dist, name, version, "", why))
        entries = []
        for row in rows:
            if not row or not row[0]:
                continue
            rel = os.path.normpath(os.path.join(site, row[0]))
            if rel.startswith("../") or os.path.isabs(row[0]):
                continue  # outside the prefix: not ours to judge
            entry: dict = {"_path": rel, "path_type": "hardlink"}
            if len(row) > 2 and row[2].isdigit():
                entry["size_in_bytes"] = int(row[2])
            # no hash: RECORD itself, or what pip left unhashed (PEP 376): nothing to compare
            entry["sha256_b64"] = row[1][7:] if len(row) > 1 and row[1][:7] == "sha256=" else ""
            if rel.endswith((".pyc", ".pyo")):
                entry["path_type"] = "pyc_recorded"
            entries.append(entry)
        done = self._check(entries, True)
        if done is None:
            return None
        missing, changed, unchecked, names = done
        name, version = _dist_name_version(dist)
        installer = _read_small(os.path.join(dist, "INSTALLER"))
        check = _package(
            name, version, "", "pypi", os.path.relpath(dist, self.root), len(entries),
            missing, changed, unchecked, installer=installer,
        )  # fmt: skip
        return _Done(check, None, names, len(entries), time.perf_counter() - t0)

    def _check(self, entries: list, sizes_in_prefix: bool):
        """(missing, changed, unchecked, names) of `entries`, or None past the deadline.

        `names` maps each directory to the names it holds (for the extras), or, without
        extras, only the dist-info directories (to tell conda's dist-infos from PyPI's)."""
        root, full, deadline, want_names = self.root, self.full, self.deadline, self.extras
        lstat = os.lstat
        missing: list[str] = []
        changed: list[FileIssue] = []
        unchecked: list[FileIssue] = []
        names: dict[str, list[str]] = {}
        for i, e in enumerate(entries):
            if deadline is not None and not i & 1023 and time.monotonic() > deadline:
                return None
            try:
                rel = e["_path"]
                kind = e.get("path_type", "hardlink")
                if want_names:
                    parent, _, base = rel.rpartition("/")
                    found = names.get(parent)
                    if found is None:
                        names[parent] = [base]
                    else:
                        found.append(base)
                elif ".dist-info/" in rel:
                    names.setdefault(rel.rpartition("/")[0], [])
                st = lstat(root + rel)
            except (TypeError, KeyError, AttributeError):
                continue  # not a path entry
            except (FileNotFoundError, NotADirectoryError):
                if kind not in ("pyc_file", "pyc_recorded"):
                    missing.append(rel)
                continue
            except OSError as exc:
                changed.append(FileIssue(rel, f"cannot be checked: {exc.strerror}"))
                continue
            if kind == "hardlink" and not full:  # the common case, decided here
                mode = st.st_mode
                if mode & 0o170400 == 0o100400 and (mode & 0o100 or not rel.startswith(EXEC_DIRS)):
                    size = e.get("size_in_bytes")
                    if size is None or st.st_size == size:
                        continue
            problem = self._judge(rel, kind, e, st, sizes_in_prefix)
            if problem is None:
                continue
            broken, detail = problem
            if not broken:
                unchecked.append(FileIssue(rel, detail))
                continue
            way = stat.S_ISDIR(st.st_mode) != (kind == "directory") and kind != "softlink"
            way = way or (kind == "softlink" and stat.S_ISDIR(st.st_mode))
            changed.append(FileIssue(rel, detail, way))
        return missing, changed, unchecked, names

    def _judge(self, rel: str, kind: str, e: dict, st, sizes_in_prefix: bool):
        """(broken?, why) for one path that is there, or None when it is what it should be."""
        fmt = stat.S_IFMT(st.st_mode)
        mode = st.st_mode
        if kind == "softlink":
            return None if fmt == stat.S_IFLNK else (True, f"{_what(fmt)}, not a symbolic link")
        if kind == "directory":
            return None if fmt == stat.S_IFDIR else (True, f"{_what(fmt)}, not a directory")
        if kind == "any":  # a `files` entry without paths_data: a file or a link
            return (True, "a directory, not a file") if fmt == stat.S_IFDIR else None
        if fmt != stat.S_IFREG:  # a file: hardlink, entry points, pyc
            return True, f"{_what(fmt)}, not a file"
        if not mode & 0o400:
            return True, f"not readable (mode {mode & 0o7777:04o})"
        if not mode & 0o100 and rel.startswith(EXEC_DIRS) and _is_program(self.root + rel):
            return True, f"not executable (mode {mode & 0o7777:04o})"
        if kind == "pyc_file":
            return None  # written by the installer: no size or hash recorded
        placeholder = "prefix_placeholder" in e
        size = e.get("size_in_bytes")
        if size is not None and st.st_size != size and (sizes_in_prefix or not placeholder):
            return True, f"{st.st_size} bytes, not {size}"
        if self.full:
            return _content(self.root + rel, e, placeholder)
        return None


def _package(name, version, build, source, record, files, missing, changed, unchecked, *,
             url="", installer=None) -> PackageCheck:  # fmt: skip
    return PackageCheck(
        name, version, build, source, record, files,
        missing=tuple(missing[:LISTED_LIMIT]),
        changed=tuple(changed[:LISTED_LIMIT]),
        unchecked=tuple(unchecked[:LISTED_LIMIT]),
        counts=(len(missing), len(changed), 0),
        installer=installer, url=url,
    )  # fmt: skip


def _what(fmt: int) -> str:
    return {
        stat.S_IFDIR: "a directory",
        stat.S_IFLNK: "a symbolic link",
        stat.S_IFREG: "a file",
    }.get(fmt, "a special file")


def _is_program(path: str) -> bool:
    """Whether a file starts as a script (`#!`) or an ELF binary: one that must be executable."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"#!") or head == b"\x7fELF"


def _content(path: str, entry: dict, placeholder: bool) -> tuple[bool, str] | None:
    """(broken?, why) when the content does not match its record (or cannot be compared)."""
    import base64

    if "sha256_b64" in entry:  # a RECORD line: urlsafe base64 without padding
        want = entry["sha256_b64"]
        if not want:
            return None
        digest = _sha256(path)
        if digest is None:
            return True, "cannot be read"
        got = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return None if got == want else (True, "content differs (sha256)")
    want = entry.get("sha256_in_prefix") if placeholder else entry.get("sha256")
    if not isinstance(want, str):
        why = "rewritten at install and no sha256_in_prefix recorded"
        return False, why if placeholder else "no sha256 recorded"
    digest = _sha256(path)
    if digest is None:
        return True, "cannot be read"
    return None if digest.hex() == want.lower() else (True, "content differs (sha256)")


def _sha256(path: str) -> bytes | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            if hasattr(hashlib, "file_digest"):
                return hashlib.file_digest(f, "sha256").digest()
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.digest()
    except OSError:
        return None


def _read_small(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(200).strip() or None
    except OSError:
        return None


def _dist_name_version(dist: str) -> tuple[str, str]:
    """Name and version from METADATA (the dist-info's name as a fallback)."""
    name = version = None
    try:
        with open(os.path.join(dist, "METADATA"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key == "Name" and name is None:
                    name = value.strip()
                elif key == "Version" and version is None:
                    version = value.strip()
    except OSError:
        pass
    stem = os.path.basename(dist).removesuffix(".dist-info")
    guess_name, _, guess_version = stem.partition("-")
    return name or guess_name, version or guess_version


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


# --------------------------------------------------------------------------- the command


def verify(
    layout,
    settings,
    target: str | None,
    *,
    all_envs: bool = False,
    full: bool = False,
) -> VerifyReport:
    """`hpcenv verify [NAME | -p PREFIX | --all] [--full]`."""
    from hpcenv.errors import UsageError
    from hpcenv.registry import discover, is_env, resolve

    t0 = time.perf_counter()
    warnings: tuple[str, ...] = ()
    if all_envs:
        found = discover(layout, shared_root=settings.shared_root)
        warnings = found.warnings
        targets = [(e.name, e.prefix) for e in found.envs if is_env(e.prefix) is not False]
    elif target is None:
        raise UsageError("give an environment NAME, -p PREFIX or --all", hint="hpcenv verify NAME")
    else:
        targets = [resolve(layout, target)]
    envs = []
    for name, prefix in targets:
        check = check_prefix(prefix, name=name, full=full)
        if repair_pending(layout, prefix):
            from dataclasses import replace

            check = replace(check, interrupted_repair=True)
        envs.append(check)
    return VerifyReport(tuple(envs), full, time.perf_counter() - t0, warnings)


def as_json(report: VerifyReport) -> dict:
    """The report as JSON data, with each env's and package's `broken` spelled out."""
    from hpcenv.report import jsonable

    envs = []
    for env in report.envs:
        data = jsonable(env)
        data["broken"] = env.broken
        data["problems"] = [{**jsonable(p), "broken": p.broken} for p in env.problems]
        envs.append(data)
    return {**jsonable(report), "broken": report.broken, "envs": envs}


def repair_pending(layout, prefix: Path) -> bool:
    """Whether a repair of `prefix` was interrupted (its journal is still there)."""
    from hpcenv.repair import journal_name

    return (layout.journal_dir / f"{journal_name(Path(prefix))}.jsonl").exists()


def quick_check(layout, prefixes: dict, seconds: float) -> tuple[list[EnvCheck], int]:
    """For `doctor`: a stat-only check of each env (no extras), all of them within
    `seconds`; returns the checks made and how many envs were not reached."""
    deadline = time.monotonic() + seconds
    out = []
    todo = list(prefixes.items())
    while todo:
        prefix, name = todo[0]
        if time.monotonic() > deadline:
            break
        check = check_prefix(prefix, name=name, extras=False, deadline=deadline)
        out.append(check)
        todo.pop(0)
        if not check.complete:
            break
    return out, len(todo)


__all__ = [
    "EnvCheck",
    "FileIssue",
    "PackageCheck",
    "UnreadableRecord",
    "VerifyReport",
    "check_prefix",
    "quick_check",
    "site_packages_dirs",
    "verify",
]
