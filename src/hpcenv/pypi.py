"""PyPI packages in a conda environment: what hpcenv installed, and what it knows of them.

A PyPI package hpcenv installed (an environment.yml `pip:` section, `hpcenv install ENV --pip
REQ...`, the PyPI part of a lock file; `pipstep` installs them) is recorded in
`PREFIX/etc/hpcenv/pypi.json`: name, version, the URL of the wheel or sdist (`file://` for a
local one) and its sha256, the dist-info and every file of its RECORD. `export` writes the
packages back under `pip:` pinned, `export --lock` puts them in the lock file with their
hashes (rattler's `pypi:` entries with `sha256:`, as pixi writes them), and `create -f LOCK`
installs exactly those artifacts again.

PyPI distributions in the env that hpcenv did not install (`pip install` by hand, an env conda
made from a `pip:` section) are "unrecorded": `export` pins them by version, a lock file
cannot hold them (no URL or hash is known) and says so.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from email.parser import HeaderParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hpcenv.errors import UsageError
from hpcenv.fsops import atomic_write
from hpcenv.registry import META_DIR

RECORD_FILE = "pypi.json"
PENDING_FILE = "pypi-pending.json"
_NOT_INDEX = ("-e", "--editable", "-r", "--requirement", "-c", "--constraint")
ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def clean_lines(requirements: Iterable[str]) -> list[str]:
    """Requirement lines without blanks and comments."""
    return [r.strip() for r in requirements if r.strip() and not r.strip().startswith("#")]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PypiPackage:
    """One PyPI distribution: where it came from and, once installed, what it installed."""

    name: str
    version: str
    url: str  # the wheel, sdist or archive; file:// for a local one; the directory or VCS URL
    sha256: str | None
    kind: str = "wheel"  # wheel | sdist | archive | directory | vcs
    editable: bool = False
    commit: str | None = None  # vcs
    dist_info: str | None = None  # prefix-relative, once installed
    files: tuple[str, ...] = field(default=(), repr=False)  # prefix-relative, from RECORD

    @property
    def lockable(self) -> bool:
        """An artifact with a hash: a lock file can pin it and uv can check it."""
        return self.sha256 is not None and self.kind in ("wheel", "sdist", "archive")

    @property
    def requirement(self) -> str:
        """The line that installs it again (what `export` writes under `pip:`)."""
        if self.kind == "directory":
            path = unquote(urlsplit(self.url).path)
            return f"-e {path}" if self.editable else path
        if self.kind == "vcs":
            return f"{self.name} @ {self.url}" + (f"@{self.commit}" if self.commit else "")
        if self.kind == "archive":
            return f"{self.name} @ {self.url}"
        return f"{self.name}=={self.version}"

    @property
    def direct_reference(self) -> str:
        """The requirement line that installs exactly this artifact (checked by its hash)."""
        if self.kind in ("directory", "vcs"):
            return self.requirement
        line = f"{self.name} @ {self.url}"
        return f"{line} --hash=sha256:{self.sha256}" if self.sha256 else line

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["files"] = list(self.files)
        return data

    @classmethod
    def from_json(cls, data: Any) -> PypiPackage | None:
        if not isinstance(data, dict):
            return None
        try:
            args = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            args["files"] = tuple(args.get("files") or ())
            pkg = cls(**args)
        except TypeError:
            return None
        return pkg if isinstance(pkg.name, str) and isinstance(pkg.version, str) else None


@dataclass(frozen=True)
class Dist:
    name: str
    version: str
    dist_info: str  # prefix-relative
    files: tuple[str, ...]
    installer: str


def read_pylock(path: Path) -> list[PypiPackage]:
    """The packages of a PEP 751 pylock.toml (`uv pip compile`'s output): one artifact each,
    the first wheel if any (only those the interpreter can install are listed), relative
    directory paths made absolute."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    with open(path, "rb") as f:
        doc = tomllib.load(f)
    out = []
    for entry in doc.get("packages") or []:
        name, version = entry["name"], str(entry.get("version") or "")
        if entry.get("wheels"):  # only wheels this interpreter can install are listed
            out.append(_artifact(name, version, "wheel", entry["wheels"][0], path.parent))
            continue
        for kind in ("sdist", "archive"):
            if kind in entry:
                out.append(_artifact(name, version, kind, entry[kind], path.parent))
        if "directory" in entry:
            d = entry["directory"]
            where = (path.parent / d["path"]).resolve()
            out.append(
                PypiPackage(
                    name, version, where.as_uri(), None, "directory", bool(d.get("editable"))
                )
            )
        if "vcs" in entry:
            v = entry["vcs"]
            url = f"{v.get('type', 'git')}+{v.get('url') or v.get('path')}"
            out.append(PypiPackage(name, version, url, None, "vcs", commit=v.get("commit-id")))
    return out


def _artifact(name: str, version: str, kind: str, table: dict, base: Path) -> PypiPackage:
    url = table.get("url") or (base / table["path"]).resolve().as_uri()
    sha = (table.get("hashes") or {}).get("sha256")
    return PypiPackage(name, version, url, sha, kind)


def from_lock(path: Path) -> list[PypiPackage]:
    """The PyPI part of a lock file: exact artifacts, each with its sha256."""
    from hpcenv import engine

    out = []
    for name, version, location, sha in engine.read_lock_pypi(path):
        if "://" not in location:
            location = Path(location).resolve().as_uri()
        if not sha or not urlsplit(location).path.endswith(ARCHIVE_SUFFIXES):
            raise UsageError(
                f"{path}: the PyPI package {name} {version} ({location}) has no file with a "
                "sha256, so it cannot be installed exactly",
                hint="lock an env whose PyPI packages come from an index or wheel files "
                "(`hpcenv export --lock`)",
            )
        kind = "wheel" if urlsplit(location).path.endswith(".whl") else "sdist"
        out.append(PypiPackage(name, version, location, sha, kind))
    return out


# --------------------------------------------------------------------------- dists on disk


def _site_dirs(prefix: Path) -> list[Path]:
    return sorted(p for p in Path(prefix).glob("lib/python*/site-packages") if p.is_dir())


def installed_dists(prefix: Path) -> list[Dist]:
    """Every `*.dist-info` in the prefix's site-packages: name, version, files (from RECORD,
    prefix-relative), installer."""
    out = []
    for site in _site_dirs(prefix):
        site_rel = os.path.relpath(site, prefix)
        for d in sorted(site.glob("*.dist-info")):
            meta = read_text(d / "METADATA")
            if meta is None:
                continue
            headers = HeaderParser().parsestr(meta)
            files = []
            for row in csv.reader((read_text(d / "RECORD") or "").splitlines()):
                if row and row[0]:
                    files.append(os.path.normpath(os.path.join(site_rel, row[0])))
            out.append(
                Dist(
                    name=headers.get("Name") or d.name.split("-")[0],
                    version=headers.get("Version") or "",
                    dist_info=os.path.join(site_rel, d.name),
                    files=tuple(files),
                    installer=(read_text(d / "INSTALLER") or "").strip(),
                )
            )
    return out


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def conda_owners(prefix: Path) -> dict[str, str]:
    """Prefix-relative file -> "NAME VERSION" of the conda package that installed it."""
    from hpcenv import engine

    owner = {}
    for p in engine.read_prefix(prefix).packages:
        if p.record_path is None:
            continue
        try:
            data = json.loads(Path(p.record_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for f in data.get("files") or []:
            owner[os.path.normpath(f)] = f"{p.name} {p.version}"
    return owner


# --------------------------------------------------------------------------- the record


def record(prefix: Path, new: Sequence[PypiPackage]) -> tuple[PypiPackage, ...]:
    """Merge what was just installed (files from the env's own RECORDs) into the record."""
    dists = {canonical(d.name): d for d in installed_dists(prefix)}
    done = []
    for p in new:
        d = dists.get(canonical(p.name))
        if d is not None:
            done.append(
                replace(p, version=p.version or d.version, dist_info=d.dist_info, files=d.files)
            )
    names = {canonical(p.name) for p in done}
    kept = [p for p in recorded(prefix) if canonical(p.name) not in names]
    packages = sorted([*kept, *done], key=lambda p: canonical(p.name))
    data = {"version": 1, "packages": [p.to_json() for p in packages]}
    atomic_write(Path(prefix) / META_DIR / RECORD_FILE, json.dumps(data, indent=1) + "\n")
    return tuple(done)


def recorded(prefix: Path) -> tuple[PypiPackage, ...]:
    """The PyPI packages hpcenv installed that are still there (same dist-info)."""
    try:
        data = json.loads((Path(prefix) / META_DIR / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    out = []
    for item in (data.get("packages") if isinstance(data, dict) else None) or []:
        p = PypiPackage.from_json(item)
        if p is not None and p.dist_info and (Path(prefix) / p.dist_info).is_dir():
            out.append(p)
    return tuple(out)


def unrecorded(prefix: Path) -> tuple[tuple[str, str], ...]:
    """(name, version) of PyPI distributions in the env that neither a conda package nor
    hpcenv installed (`pip install` by hand, an env made by conda with a pip section)."""
    ours = {canonical(p.name) for p in recorded(prefix)}
    conda_dists = {os.path.dirname(f) for f in conda_owners(prefix) if ".dist-info/" in f}
    return tuple(
        (d.name, d.version)
        for d in installed_dists(prefix)
        if d.dist_info not in conda_dists
        and canonical(d.name) not in ours
        and d.installer != "conda"
    )


def export_lines(prefix: Path, requested: Sequence[str]) -> list[str]:
    """The `pip:` list `export` writes: the index options asked for (`--index-url`,
    `--find-links`, ...; not the requirements, files or constraints), then every PyPI package
    of the env pinned (recorded ones as they were installed)."""
    options = [
        r for r in clean_lines(requested) if r.startswith("-") and not r.startswith(_NOT_INDEX)
    ]
    pins = [p.requirement for p in recorded(prefix)]
    pins += [f"{name}=={version}" for name, version in unrecorded(prefix)]
    return [*options, *pins] if pins else []


def has_pending(prefix: Path) -> bool:
    return (Path(prefix) / META_DIR / PENDING_FILE).exists()
