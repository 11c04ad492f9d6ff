"""Lock files in rattler's format (which pixi reads): exact URLs and hashes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import rattler

from hpcenv.engine.seam import (
    PackageInfo,
    as_os_error,
    first_line,
    info,
    is_rattler_error,
    platform,
)
from hpcenv.errors import OperationError, UsageError

MAX_LOCK_BYTES = 64 * 1024 * 1024


def write_lock(
    packages: Sequence[PackageInfo],
    channels: Sequence[str],
    path: Path,
    target_platform: str | None = None,
    pypi: Sequence[tuple[str, str, str, str]] = (),
) -> None:
    """A lock file (rattler's format, which pixi reads): exact URLs and hashes. `pypi` are
    PyPI packages as (name, version, URL, sha256 hex): py-rattler 0.28 writes their location
    only, so the `sha256:` of each is added to its entry after (the field pixi writes)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(
            f"cannot write {path}: {path.parent} is not a directory",
            hint="give -o a file in an existing directory",
        )
    try:
        plat = rattler.LockPlatform(target_platform or platform())
        lock = rattler.LockFile([plat])
        for p in packages:
            lock.add_conda_package("default", plat, p.record)
        for name, version, url, _sha in pypi:
            lock.add_pypi_package("default", plat, name, version, url)
        lock.set_channels("default", [rattler.LockChannel(c) for c in channels])
        lock.to_path(path)
        if pypi:
            _add_pypi_hashes(path, {url: sha for _n, _v, url, sha in pypi})
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise as_os_error(exc, path) or OperationError(
            f"writing the lock file {path} failed: {first_line(exc)}"
        ) from None


def _add_pypi_hashes(path: Path, hashes: dict[str, str]) -> None:
    """Give each `- pypi: URL` entry of the top-level `packages:` its `sha256:` line, then
    check that rattler reads every hash back."""
    import yaml

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out, top, done = [], False, set()
    for line in lines:
        out.append(line)
        if not line.startswith((" ", "-")):
            top = line.rstrip() == "packages:"
        elif top and line.startswith("- pypi: "):
            url = yaml.safe_load(line[2:])["pypi"]
            if url in hashes:
                out.append(f"  sha256: '{hashes[url]}'\n")  # quoted: all digits is an int
                done.add(url)
    if done != set(hashes):
        raise OperationError(f"writing the PyPI hashes into the lock file {path} failed")
    path.write_text("".join(out), encoding="utf-8")
    read = {entry[0]: entry[3] for entry in read_lock_pypi(path)}
    if sorted(read.values()) != sorted(hashes.values()):
        raise OperationError(f"the lock file {path} does not read back its PyPI hashes")


def read_lock_pypi(path: Path, target_platform: str | None = None):
    """The PyPI packages of a lock file's default environment for this platform, as
    (name, version, location, sha256 hex or None); a location is a URL or a local path."""
    name = target_platform or platform()
    try:
        lock = rattler.LockFile.from_path(path)
        env = lock.default_environment()
        plat = next((p for p in lock.platforms() if p.name == name), None)
        found = env.pypi_packages_for_platform(plat) if env is not None and plat else None
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise UsageError(f"{path} is not a readable lock file: {first_line(exc)}") from None
    written = _yaml_pypi_hashes(path) if found else {}
    out = []
    for p in found or []:
        hashes = p.hashes
        sha = hashes.sha256 if hashes is not None and hashes._hashes is not None else None
        out.append((p.name, p.version, p.location, sha.hex() if sha else written.get(p.location)))
    return out


def _yaml_pypi_hashes(path: Path) -> dict[str, str]:
    """location -> sha256 of the lock's PyPI entries, read from the YAML: rattler drops the
    hash of an entry whose location is a local file (it reads the location as a path)."""
    from urllib.parse import unquote, urlsplit

    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    out = {}
    for entry in (doc.get("packages") if isinstance(doc, dict) else None) or []:
        if isinstance(entry, dict) and isinstance(entry.get("pypi"), str):
            url, sha = entry["pypi"], entry.get("sha256")
            if isinstance(sha, str):
                out[url] = sha
                if url.startswith("file://"):
                    out[unquote(urlsplit(url).path)] = sha
    return out


def read_lock(path: Path, target_platform: str | None = None) -> list[PackageInfo]:
    """The exact packages of a lock file's default environment for this platform."""
    name = target_platform or platform()
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise UsageError(f"cannot read the lock file {path}: {exc.strerror}") from None
    if size > MAX_LOCK_BYTES:
        raise UsageError(
            f"{path} is larger than {MAX_LOCK_BYTES // 2**20} MiB: too large for a lock file"
        )
    try:
        lock = rattler.LockFile.from_path(path)
        env = lock.default_environment()
        plat = next((p for p in lock.platforms() if p.name == name), None)
        records = (
            env.conda_repodata_records_for_platform(plat) if env is not None and plat else None
        )
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise UsageError(f"{path} is not a readable lock file: {first_line(exc)}") from None
    if env is None or plat is None:
        raise UsageError(f"{path} has no packages for {name}", hint="re-lock on this platform")
    return [info(r) for r in records or []]


def lock_channels(path: Path) -> list[str]:
    """The channels a lock file's default environment names (for the env's record)."""
    try:
        env = rattler.LockFile.from_path(path).default_environment()
    except Exception:  # noqa: BLE001 - read_lock reports an unreadable file
        return []
    return [str(c) for c in env.channels()] if env is not None else []
