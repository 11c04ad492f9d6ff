"""CUDA builds: ask for them, choose the `__cuda` to solve for, check a solution against the
driver. Pure: the driver itself is detected by `cuda_driver`.

CUDA builds on conda-forge are told apart by their build string: pytorch, libtorch, torchvision,
torchaudio, jaxlib and tensorflow builds start with ``cuda126_``/``cpu_``, onnxruntime's end
with ``_cuda129``/``_cpu``; so a CUDA build is asked for with the build glob ``*cuda*``
(``"pytorch >=2.4 *cuda*"``). cupy and cupy-core have CUDA builds only, with plain
``py312h…_0`` build strings: a glob would make them unsatisfiable, so they are never forced;
their ``__cuda`` dependency marks them as CUDA builds in reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hpcenv.errors import UsageError
from hpcenv.settings import DEFAULT_GPU_PACKAGES
from hpcenv.strenum import StrEnum

if TYPE_CHECKING:
    from hpcenv.cuda_driver import CudaDriver

# CUDA-only on conda-forge and without a cuda tag in the build string: never forced.
NO_CPU_BUILD_PACKAGES = frozenset({"cupy", "cupy-core"})
CUDA_BUILD_GLOB = "*cuda*"

# ------------------------------------------------------------------------------- versions

_CUDA_VERSION = re.compile(r"^\d+(?:\.\d+){0,2}$")


def cuda_version_tuple(text: str) -> tuple[int, ...]:
    """ "12.4" -> (12, 4); "12" -> (12, 0); raises ValueError when it is not a CUDA version."""
    if not _CUDA_VERSION.match(text.strip()):
        raise ValueError(f"not a CUDA version: {text!r}")
    parts = tuple(int(p) for p in text.strip().split("."))
    return parts if len(parts) > 1 else (*parts, 0)


def version_at_least(have: str, need: str) -> bool:
    """ "12.4" >= "12" (compared as tuples of ints, missing parts are 0)."""
    a, b = cuda_version_tuple(have), cuda_version_tuple(need)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


def _display(version: str) -> str:
    return ".".join(str(p) for p in cuda_version_tuple(version))


# ---------------------------------------------------------------------------- build strings

_CUDA_TAG = re.compile(r"(?:^|_)cuda", re.IGNORECASE)
_CUDA_DEP = re.compile(r"^__cuda(?:\s*(?P<constraint>.*))?$")
_LOWER_BOUND = re.compile(r"^(?:>=|==|=|>)?\s*(?P<v>\d+(?:\.\d+){0,2})(?:\.\*|\*)?$")


def is_cuda_build(build: str) -> bool:
    """A conda-forge CUDA build string: "cuda126_mkl_py312_h…_300", "py312h…_0_cuda129"."""
    return bool(_CUDA_TAG.search(build))


def cuda_requirement(depends: Sequence[str]) -> str | None:
    """The highest lower bound on `__cuda` in `depends` ("__cuda >=12" -> "12.0"), or None.

    A bare `__cuda` or an upper bound only (`<13`) sets no minimum; constraints that are not a
    plain version bound are ignored.
    """
    best: str | None = None
    for dep in depends:
        match = _CUDA_DEP.match(dep.strip())
        if not match or not match["constraint"]:
            continue
        for part in match["constraint"].split(","):
            bound = _LOWER_BOUND.match(part.strip())
            if bound and (best is None or not version_at_least(best, bound["v"])):
                best = _display(bound["v"])
    return best


def _needs_cuda_driver(depends: Sequence[str]) -> bool:
    return any(_CUDA_DEP.match(dep.strip()) for dep in depends)


# ---------------------------------------------------------------------------- spec forcing


def _cannot_read(spec: str, name: str) -> UsageError:
    return UsageError(
        f"cannot read the spec {spec!r} to ask for its CUDA build",
        hint=f"write it as NAME VERSION, e.g. '{name} >=2.4', or give the build yourself: "
        f"'{name} * *cuda*'",
    )


def force_gpu_specs(specs: Sequence[str], table: Iterable[str] = DEFAULT_GPU_PACKAGES) -> list[str]:
    """Require the CUDA build of every spec naming a table package: "pytorch>=2.4" ->
    "pytorch >=2.4 *cuda*" (the version as rattler reads it). Specs with a build string, and
    all others, are returned unchanged; a table spec rattler cannot read unambiguously is a
    UsageError rather than a guess."""
    names = {n.lower() for n in table} - NO_CPU_BUILD_PACKAGES
    if not any(n in spec.lower() for spec in specs for n in names):
        return list(specs)  # no spec can name a table package: skip the engine's import
    from hpcenv import engine

    forced = []
    for spec in specs:
        try:
            parts = engine.parse_spec(spec)
        except UsageError:
            guess = re.match(r"[A-Za-z0-9_.\-]*", spec.strip().rpartition("::")[2])
            raise _cannot_read(spec, guess[0] if guess and guess[0] else "NAME") from None
        if parts.name not in names:
            forced.append(spec)
            continue
        if parts.ambiguous or parts.has_other_fields or (parts.build and " " in parts.build):
            raise _cannot_read(spec, parts.name)
        if parts.build is not None and parts.build != "*":
            forced.append(spec)  # the user chose a build: left alone
            continue
        channel = spec.strip().rpartition("::")[0]
        prefix = f"{channel}::" if channel else ""
        forced.append(f"{prefix}{parts.name} {parts.version or '*'} {CUDA_BUILD_GLOB}")
    return forced


# --------------------------------------------------------------------------- choosing __cuda


class CudaSource(StrEnum):
    FLAG = "flag"
    DETECTED = "detected"
    SITE = "site"
    NONE = "none"


@dataclass(frozen=True)
class CudaChoice:
    """The `__cuda` version given to the solver (None: none) and where it came from."""

    version: str | None
    source: CudaSource
    warnings: tuple[str, ...] = ()


def _checked(value: str | None, where: str, example: str) -> str | None:
    if value is None:
        return None
    try:
        cuda_version_tuple(value)
    except ValueError:
        raise UsageError(
            f"{where} {value!r} is not a CUDA version",
            hint=f"write it as MAJOR.MINOR, e.g. {example}",
        ) from None
    return value.strip()


def resolve_cuda(
    cuda_flag: str | None, site_cuda: str | None, detected: CudaDriver | None, gpu: bool
) -> CudaChoice:
    """Which `__cuda` to solve for: `--cuda` (flags win), else the detected driver, else the
    site config's GPU-node version (`gpu.cuda_version`), else none, which `--gpu` refuses."""
    flag = _checked(cuda_flag, "--cuda", "--cuda 12.4")
    site = _checked(
        site_cuda, "gpu.cuda_version (site config or HPCENV_GPU_CUDA_VERSION)", '"12.4"'
    )
    if flag is not None:
        warnings = []
        if detected is not None and not version_at_least(detected.version, flag):
            warnings.append(
                f"--cuda {flag} is above this node's CUDA driver ({detected.version}): "
                f"CUDA builds chosen for it may not run here"
            )
        elif detected is None and site is not None and not version_at_least(site, flag):
            warnings.append(
                f"--cuda {flag} is above the GPU nodes' CUDA driver ({site}, site config): "
                f"CUDA builds chosen for it may not run there"
            )
        return CudaChoice(flag, CudaSource.FLAG, tuple(warnings))
    if detected is not None:
        return CudaChoice(detected.version, CudaSource.DETECTED)
    if site is not None:
        return CudaChoice(site, CudaSource.SITE)
    if gpu:
        raise UsageError(
            "--gpu needs the CUDA version of the GPU nodes' driver, and this node has no GPU",
            hint='pass --cuda 12.4, or set cuda_version = "12.4" under [gpu] in the site config '
            "(or HPCENV_GPU_CUDA_VERSION=12.4)",
        )
    return CudaChoice(None, CudaSource.NONE)


# ------------------------------------------------------------------------- checking a solution


class PackageLike(Protocol):
    name: str
    version: str
    build: str
    depends: Sequence[str]


@dataclass(frozen=True)
class GpuPackage:
    name: str
    version: str
    build: str
    cuda_min: str | None  # from its `__cuda` dependency, if any


class DriverStatus(StrEnum):
    OK = "ok"
    TOO_OLD = "too_old"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class GpuReport:
    """The CUDA side of a solution or an installed environment."""

    cuda_builds: tuple[GpuPackage, ...]
    cpu_builds: tuple[GpuPackage, ...]  # table packages that resolved to CPU builds
    required_cuda: str | None  # the highest `__cuda` lower bound
    required_by: str | None  # "pytorch 2.5.1 cuda126_…" or "cuda-version 12.6"
    driver_version: str | None
    driver_status: DriverStatus


def gpu_report(
    packages: Iterable[PackageLike],
    driver_version: str | None,
    table: Iterable[str] = DEFAULT_GPU_PACKAGES,
) -> GpuReport:
    """Which packages are CUDA builds, what driver they need, and whether `driver_version` has it.

    Lower bounds come from `depends` and, when the objects have it, `constrains`; the
    `cuda-version` package (whose run_constrained is `__cuda >=MAJOR`) counts by its major.
    """
    names = {n.lower() for n in table}
    driver = _checked(driver_version, "the driver's CUDA version", "12.4")
    cuda_builds, cpu_builds = [], []
    required: str | None = None
    required_by: str | None = None
    for pkg in packages:
        deps = [*pkg.depends, *getattr(pkg, "constrains", ())]
        need = cuda_requirement(deps)
        if pkg.name == "cuda-version" and re.match(r"^\d+", pkg.version):
            major = re.match(r"^\d+", pkg.version)[0] + ".0"
            need = major if need is None or version_at_least(major, need) else need
        entry = GpuPackage(pkg.name, pkg.version, pkg.build, need)
        if is_cuda_build(pkg.build) or _needs_cuda_driver(pkg.depends):
            cuda_builds.append(entry)
        elif pkg.name.lower() in names:
            cpu_builds.append(entry)
        if need is not None and (required is None or not version_at_least(required, need)):
            required = need
            required_by = f"{pkg.name} {pkg.version} {pkg.build}"
    if not cuda_builds and required is None:
        status = DriverStatus.OK
    elif driver is None:
        status = DriverStatus.UNKNOWN
    elif required is None or version_at_least(driver, required):
        status = DriverStatus.OK
    else:
        status = DriverStatus.TOO_OLD
    return GpuReport(tuple(cuda_builds), tuple(cpu_builds), required, required_by, driver, status)


def _names(packages: Sequence[GpuPackage]) -> str:
    return ", ".join(p.name for p in packages)


def check_gpu_solution(report: GpuReport, forced: bool) -> list[str]:
    """Refuse (UsageError) a solution that cannot do what was asked; warnings for the rest.

    `forced` is True when `--gpu` was given. The driver checked is `report.driver_version`.
    """
    if forced and report.cpu_builds:
        first = report.cpu_builds[0]
        raise UsageError(
            f"--gpu was asked but {_names(report.cpu_builds)} resolved to a CPU build "
            f"({first.name} {first.version} {first.build})",
            hint=f"name it in the specs so hpcenv asks for its CUDA build (e.g. '{first.name}'), "
            "or drop a CPU build string from the spec",
        )
    if report.driver_status is DriverStatus.TOO_OLD:
        raise UsageError(
            f"the environment needs CUDA driver >= {report.required_cuda} ({report.required_by}) "
            f"but the driver supports CUDA {report.driver_version}",
            hint=f"solve for this driver with --cuda {report.driver_version} (or set gpu.cuda_version), "
            "or run it on GPU nodes with a newer driver",
        )
    warnings = []
    if not forced and report.cpu_builds and report.driver_version is not None:
        warnings.append(
            f"{_names(report.cpu_builds)} resolved to CPU builds although the GPU driver supports "
            f"CUDA {report.driver_version}; add --gpu for the CUDA builds"
        )
    if report.driver_status is DriverStatus.UNKNOWN:
        subject = _names(report.cuda_builds) or report.required_by
        need = (
            f" need CUDA driver >= {report.required_cuda}"
            if report.required_cuda
            else " need a CUDA driver"
        )
        warnings.append(
            f"{subject}{need}; no driver version is known here, so this was not checked"
        )
    if forced and not report.cuda_builds and not report.cpu_builds:
        warnings.append(
            "--gpu changed nothing: no package in the environment has CUDA builds "
            "hpcenv knows of (setting gpu.packages)"
        )
    return warnings


# ------------------------------------------------------------------------- one solve's plan


@dataclass(frozen=True)
class CudaPlan:
    """What `--gpu` / `--cuda` mean for one solve: the `__cuda` to solve for, the specs
    (with `--gpu`, the table packages' forced to CUDA builds), the driver version the solution
    is checked against, and warnings about the choice."""

    cuda: str | None
    specs: tuple[str, ...]
    driver: str | None
    forced: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SolutionCheck:
    report: GpuReport
    warnings: tuple[str, ...]


def plan_cuda(
    specs: Sequence[str],
    *,
    cuda_flag: str | None,
    gpu: bool,
    site_cuda: str | None,
    detected: CudaDriver | None,
    table: Iterable[str] = DEFAULT_GPU_PACKAGES,
) -> CudaPlan:
    """The plan for a solve of `specs`, given this node's detected driver (or None)."""
    if not gpu and cuda_flag is None:
        driver = detected.version if detected else site_cuda
        return CudaPlan(None, tuple(specs), driver, False)
    choice = resolve_cuda(cuda_flag, site_cuda, detected, gpu)
    forced = force_gpu_specs(specs, table) if gpu else list(specs)
    driver = detected.version if detected else (site_cuda or choice.version)
    return CudaPlan(choice.version, tuple(forced), driver, gpu, choice.warnings)


def check_solution(
    plan: CudaPlan, packages: Iterable[PackageLike], table: Iterable[str] = DEFAULT_GPU_PACKAGES
) -> SolutionCheck:
    """The solution's GPU report against the plan's driver: refused (UsageError) when it
    cannot do what was asked, warnings for the rest (`check_gpu_solution`)."""
    report = gpu_report(packages, plan.driver, table)
    return SolutionCheck(report, tuple(check_gpu_solution(report, forced=plan.forced)))
