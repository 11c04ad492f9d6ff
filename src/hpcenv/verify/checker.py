"""Checking one conda record's or RECORD's paths against the disk: the unit of work `check_prefix`
spreads over threads or processes (`treescan.fanout`)."""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field

from hpcenv.verify.results import FileIssue, PackageCheck, UnreadableRecord

EXEC_DIRS = ("bin/", "sbin/", "libexec/")
LISTED_LIMIT = 200  # file names kept per package and kind (the counts are always exact)


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
