"""Match specs, read by rattler: checked, named, taken apart, compared."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import rattler
from rattler import exceptions as rx

from hpcenv.engine.seam import PackageInfo, first_line, is_rattler_error
from hpcenv.errors import UsageError


def check_specs(specs: Iterable[str]) -> None:
    """Raise UsageError (exit 2) for a spec rattler cannot read."""
    for spec in specs:
        try:
            rattler.MatchSpec(spec, strict=True)
        except (
            rx.InvalidMatchSpecError,
            rx.InvalidPackageNameError,
            rx.InvalidVersionSpecError,
        ) as exc:
            raise UsageError(
                f"invalid package spec {spec!r}: {first_line(exc)}",
                hint="use forms like `numpy`, `numpy>=1.26`, `pytorch * cuda*`",
            ) from None


def spec_matches(spec: str, package: PackageInfo) -> bool:
    """Whether an installed package satisfies a dependency spec (lenient: an unreadable spec
    counts as satisfied, the solver would have said otherwise)."""
    try:
        return bool(rattler.MatchSpec(spec, strict=False).matches(package.record))
    except Exception:  # noqa: BLE001 - rattler raises several types for odd specs
        return True


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as conda orders versions."""
    try:
        va, vb = rattler.Version(a), rattler.Version(b)
    except Exception:  # noqa: BLE001
        return (a > b) - (a < b)
    return (va > vb) - (va < vb)


def lenient(spec: str):
    try:
        return rattler.MatchSpec(spec, strict=False)
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        raise UsageError(
            f"invalid package spec {spec!r}: {first_line(exc)}",
            hint="use forms like `numpy`, `numpy>=1.26`, `pytorch * cuda*`",
        ) from None


def spec_name(spec: str) -> str:
    """The (normalized) package name of a match spec, as conda reads it: `numpy >=1.2`,
    `conda-forge::numpy=1`, `pytorch[version=">=2"]`, `demo-tool=1.0=0` -> its name."""
    match = lenient(spec.strip())
    if match.name is None:
        raise UsageError(f"invalid package spec {spec!r}: it names no package")
    return match.name.normalized


@dataclass(frozen=True)
class SpecParts:
    """A match spec as rattler reads it (conda's lenient reading)."""

    name: str  # normalized
    version: str | None  # "2.5.1.*", ">=2.4,<3"; None when the spec names none
    build: str | None
    ambiguous: bool  # rattler's strict reading gives another version or build
    has_other_fields: bool  # build number, hashes, file name, ... besides version and build


def parse_spec(spec: str) -> SpecParts:
    """The parts of a match spec; UsageError when rattler cannot read it."""
    match = lenient(spec.strip())
    if match.name is None:
        raise UsageError(f"invalid package spec {spec!r}: it names no package")
    version = None if match.version is None else str(match.version)
    build = None if match.build is None else str(match.build)
    try:
        strict = rattler.MatchSpec(spec.strip(), strict=True)
    except BaseException as exc:
        if not is_rattler_error(exc):
            raise
        ambiguous = False  # only the lenient (conda) reading exists
    else:
        ambiguous = (
            str(strict.version) if strict.version is not None else None,
            str(strict.build) if strict.build is not None else None,
        ) != (version, build)
    other = any(
        getattr(match, field, None) is not None
        for field in ("build_number", "md5", "sha256", "file_name")
    )
    return SpecParts(match.name.normalized, version, build, ambiguous, other)


def spec_name_or_none(spec: str) -> str | None:
    """The package name of a spec, or None when rattler cannot read one (lenient readers of
    other tools' files: conda's history)."""
    try:
        return spec_name(spec)
    except UsageError:
        return None


_CONDA_EXPORT = re.compile(
    r"^[^\s=<>!~\[\]:]+(?:::[^\s=<>!~\[\]:]+)?=[^\s=<>!~,|\[\]]+=[^\s=\[\]]+$"
)


def conda_spec(spec: str) -> str:
    """A spec conda writes that rattler's strict parser refuses, in rattler's words: the
    `name=version=build` lines of `conda env export` mean exactly that version and build
    (`demo-tool=1.0=0` -> `demo-tool ==1.0 0`). Any other spec is returned unchanged."""
    text = spec.strip()
    if not _CONDA_EXPORT.match(text):
        return spec
    return str(lenient(text))
