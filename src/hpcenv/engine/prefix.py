"""What conda-meta says is installed in a prefix, read by rattler; damaged records named."""

from __future__ import annotations

from pathlib import Path

import rattler
from rattler import exceptions as rx

from hpcenv.engine.seam import DamagedRecord, PackageInfo, PrefixState, first_line, info


def read_prefix(prefix: Path) -> PrefixState:
    """The packages recorded in `prefix/conda-meta/*.json`, and the records that are damaged
    (named, never skipped silently)."""
    meta = Path(prefix) / "conda-meta"
    out, damaged, relative = [], [], []
    try:
        paths = sorted(meta.glob("*.json"))
    except OSError:
        paths = []
    for path in paths:
        try:
            record = rattler.PrefixRecord.from_path(path)
        except (rx.IoError, ValueError, TypeError) as exc:
            stem = path.name.removesuffix(".json")
            name = stem.rsplit("-", 2)[0] if stem.count("-") >= 2 else stem
            damaged.append(DamagedRecord(str(path), name, first_line(exc)))
            continue
        extracted = record.extracted_package_dir
        requested = list(record.requested_specs)
        if record.requested_spec and record.requested_spec not in requested:
            requested.insert(0, record.requested_spec)
        package = info(record, str(extracted) if extracted else None, requested, str(path))
        if package.noarch == "python" and _package_relative_paths(record):
            relative.append(str(path))
        out.append(package)
    return PrefixState(tuple(out), tuple(damaged), tuple(relative))


def _package_relative_paths(record) -> bool:
    """conda (26) writes `site-packages/x.py` into paths_data of noarch:python records while
    `files` holds `lib/python3.X/site-packages/x.py`; rattler unlinks by paths_data."""
    files = {str(f) for f in record.files}
    try:
        entries = record.paths_data.paths
    except AttributeError:
        return False
    return any(str(e.relative_path) not in files for e in entries)


def installed_packages(prefix: Path) -> tuple[PackageInfo, ...]:
    """The packages recorded in `prefix/conda-meta/*.json` (damaged records left out: use
    `read_prefix` where they must be reported)."""
    return read_prefix(prefix).packages


def linked_files(prefix: Path) -> dict[str, list[str]]:
    """Per installed package name, the files it put into `prefix` (relative paths)."""
    out = {}
    for path in sorted((Path(prefix) / "conda-meta").glob("*.json")):
        try:
            record = rattler.PrefixRecord.from_path(path)
        except Exception:
            continue
        out[record.name.normalized] = [str(f) for f in record.files]
    return out
