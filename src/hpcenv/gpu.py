"""CUDA: detect the driver, ask for CUDA builds, check a solution against the driver.

Detection (`detect_cuda_driver`), in order:

1. The library: the `library` argument, else `$HPCENV_LIBCUDA`, else `libcuda.so.1` (the
   driver's soname, found by the dynamic loader). `HPCENV_LIBCUDA=none` means "no GPU here"
   and stops there (admins, tests, a login node that has a driver but must not count as a GPU
   node); an empty value counts as unset.
2. The library is loaded with ctypes *in a child Python* (`python -I -S`, 30 s limit), as conda
   does: a broken driver can hang or crash, and `cuInit` in our own process would make a later
   fork unsafe. The child drops `CUDA_VISIBLE_DEVICES` (empty or invalid, it makes `cuInit`
   fail although the node has GPUs), calls `cuInit(0)` and then `cuDriverGetVersion`
   (12040 -> "12.4"). A non-zero return (`CUDA_ERROR_NO_DEVICE` on a node with a driver but no
   GPU) or a version of 0 is a definite "no usable GPU": None, nothing else is asked.
3. Only when the library could not be asked (not found, not a shared object, symbols missing,
   the child crashed or timed out): `nvidia-smi` from PATH; its header line
   "CUDA Version: 12.4" is the same number cuDriverGetVersion returns, read by the driver
   itself, so no driver-version -> CUDA table is needed (`--query-gpu=driver_version` gives
   "550.54.15", which would need one).
4. Otherwise None. Detection never raises.

CUDA builds on conda-forge are told apart by their build string: pytorch, libtorch, torchvision,
torchaudio, jaxlib and tensorflow builds start with ``cuda126_``/``cpu_``, onnxruntime's end
with ``_cuda129``/``_cpu``; so a CUDA build is asked for with the build glob ``*cuda*``
(``"pytorch >=2.4 *cuda*"``). cupy and cupy-core have CUDA builds only, with plain
``py312h…_0`` build strings: a glob would make them unsatisfiable, so they are never forced;
their ``__cuda`` dependency marks them as CUDA builds in reports.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from hpcenv.errors import UsageError

LIBCUDA_ENV = "HPCENV_LIBCUDA"
DEFAULT_LIBCUDA = "libcuda.so.1"
PROBE_TIMEOUT_S = 30.0

# Packages with CPU and CUDA builds on conda-forge (settings key `gpu.packages` overrides it).
DEFAULT_GPU_PACKAGES: tuple[str, ...] = (
    "pytorch",
    "torchvision",
    "torchaudio",
    "libtorch",
    "jaxlib",
    "tensorflow",
    "tensorflow-base",
    "cupy",
    "cupy-core",
    "onnxruntime",
)
# CUDA-only on conda-forge and without a cuda tag in the build string: never forced.
NO_CPU_BUILD_PACKAGES = frozenset({"cupy", "cupy-core"})
CUDA_BUILD_GLOB = "*cuda*"

# ---------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class CudaDriver:
    """The CUDA version the node's driver supports, and where it was read."""

    version: str  # "12.4"
    source: Literal["libcuda", "nvidia-smi"]
    path: str | None  # the libcuda that answered, or the nvidia-smi that was run


# Runs in `python -I -S`: stdlib only. Prints one line: "ok VERSION PATH", "error CODE" (the
# driver answered no) or "unavailable WHY" (it could not be asked).
_PROBE = r"""
import ctypes, sys
name = sys.argv[1]
try:
    lib = ctypes.CDLL(name)
    init, get_version = lib.cuInit, lib.cuDriverGetVersion
except (OSError, AttributeError) as exc:
    print("unavailable", str(exc).replace("\n", " ")); sys.exit(0)
init.argtypes, init.restype = [ctypes.c_uint], ctypes.c_int
get_version.argtypes, get_version.restype = [ctypes.POINTER(ctypes.c_int)], ctypes.c_int
code = init(0)
if code != 0:
    print("error", code); sys.exit(0)
value = ctypes.c_int(0)
code = get_version(ctypes.byref(value))
if code != 0:
    print("error", code); sys.exit(0)
path = name
try:
    class Info(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                    ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
    info = Info()
    if ctypes.CDLL(None).dladdr(ctypes.cast(get_version, ctypes.c_void_p), ctypes.byref(info)):
        path = info.fname.decode()
except Exception:
    pass
print("ok", value.value, path)
"""


def _version_from_int(value: int) -> str:
    """cuDriverGetVersion's 1000*major + 10*minor: 12040 -> "12.4"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _start_probe(library: str) -> subprocess.Popen | tuple[str, str]:
    """The probe child, started; or ("unavailable", why) when it cannot start."""
    if not sys.executable:
        return "unavailable", "no Python interpreter to run the probe"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _PROBE, library],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    except OSError as exc:
        return "unavailable", str(exc)


def _probe_answer(child: subprocess.Popen | tuple[str, str]) -> tuple[str, str]:
    """("ok", "12.4 PATH") | ("error", code) | ("unavailable", why)."""
    if isinstance(child, tuple):
        return child
    try:
        out, _ = child.communicate(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return "unavailable", f"probe did not answer in {PROBE_TIMEOUT_S} s"
    status, _, detail = out.strip().partition(" ")
    if child.returncode != 0 or status not in ("ok", "error", "unavailable"):
        return "unavailable", f"probe exited with {child.returncode}"
    return status, detail


def _from_nvidia_smi() -> CudaDriver | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", done.stdout)
    if match is None:  # "No devices were found", "CUDA Version: N/A", not a driver
        return None
    return CudaDriver(f"{int(match[1])}.{int(match[2])}", "nvidia-smi", exe)


def detect_cuda_driver(library: str | None = None) -> CudaDriver | None:
    """The node's CUDA driver version, or None when there is no usable one (never raises)."""
    return detect_cuda_driver_soon(library)()


def detect_cuda_driver_soon(library: str | None = None) -> Callable[[], CudaDriver | None]:
    """Start detecting now; the returned function waits for the answer. The probe is a child
    process (~10 ms), so a caller overlaps it with its own work (create: the engine import)."""
    library = library or os.environ.get(LIBCUDA_ENV) or DEFAULT_LIBCUDA
    if library.strip().lower() == "none":
        return lambda: None
    child = _start_probe(library)
    answer: list[CudaDriver | None] = []

    def wait() -> CudaDriver | None:
        if not answer:
            answer.append(_driver_from(library, *_probe_answer(child)))
        return answer[0]

    return wait


def _driver_from(library: str, status: str, detail: str) -> CudaDriver | None:
    if status == "ok":
        value, _, path = detail.partition(" ")
        if value.isdigit() and int(value) > 0:
            return CudaDriver(_version_from_int(int(value)), "libcuda", path or library)
        return None
    if status == "error":
        return None
    return _from_nvidia_smi()


def is_gpu_node(library: str | None = None) -> bool:
    """True when this node has a CUDA driver with at least one usable GPU."""
    return detect_cuda_driver(library) is not None


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

_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)(?P<rest>.*)$", re.DOTALL)
_OP = r"(?:==|!=|>=|<=|~=|>|<|=)"
_ATOM = rf"{_OP}?[0-9A-Za-z_.*+!]+"
_VERSION = re.compile(rf"^{_ATOM}(?:[,|]{_ATOM})*$")
_VERSION_THEN_BUILD = re.compile(rf"^(?P<v>{_ATOM}(?:[,|]{_ATOM})*)(?:=(?P<b>[^=\s]+))?$")
_BARE_OP = re.compile(rf"^{_OP}$")


def _split_channel(spec: str) -> tuple[str, str]:
    channel, sep, body = spec.strip().rpartition("::")
    return (channel + sep, body)


def _spec_names(specs: Sequence[str]) -> list[str]:
    """The package names of `specs`, as rattler reads them (through the engine)."""
    from hpcenv import engine

    return [engine.spec_name(s) for s in specs]


def _cannot_read(spec: str, name: str) -> UsageError:
    return UsageError(
        f"cannot read the spec {spec!r} to ask for its CUDA build",
        hint=f"write it as NAME VERSION, e.g. '{name} >=2.4', or give the build yourself: '{name} * *cuda*'",
    )


def _version_and_build(spec: str, name: str, rest: str) -> tuple[str, str | None]:
    """The version constraint and build string of the part after the name."""
    if not rest.strip():
        return "*", None
    if rest.lstrip().startswith("["):
        if re.search(r"\bbuild\s*=", rest):
            return "*", rest  # the user chose a build: left alone
        raise _cannot_read(spec, name)
    glued = not rest[0].isspace()
    tokens = rest.split()
    if len(tokens) > 1 and _BARE_OP.match(tokens[0]):  # "pytorch >= 2.4"
        tokens = [tokens[0] + tokens[1], *tokens[2:]]
    if len(tokens) > 2:
        raise _cannot_read(spec, name)
    version, build = tokens[0], tokens[1] if len(tokens) == 2 else None
    if glued and version.startswith("=") and not version.startswith("=="):
        if build is not None:
            raise _cannot_read(spec, name)
        version, _, build = version[1:].partition("=")  # conda's name=VER[=BUILD]
        if not re.fullmatch(r"[0-9A-Za-z_.*+!]+", version) or "=" in build:
            raise _cannot_read(spec, name)
        version, build = "=" + version, build or None
    elif glued:
        match = _VERSION_THEN_BUILD.match(version)  # name>=2.4=cuda*
        if not match or (match["b"] and build is not None):
            raise _cannot_read(spec, name)
        version, build = match["v"], match["b"] or build
    if not _VERSION.match(version):
        raise _cannot_read(spec, name)
    if version.startswith("=") and not version.startswith("==") and not re.search(r"[,|]", version):
        version = version[1:] if version.endswith("*") else version[1:] + ".*"  # =2.5.1 -> 2.5.1.*
    return version, build


def force_gpu_specs(specs: Sequence[str], table: Iterable[str] = DEFAULT_GPU_PACKAGES) -> list[str]:
    """Require the CUDA build of every spec naming a table package: "pytorch>=2.4" ->
    "pytorch >=2.4 *cuda*". Specs with a build string, and all others, are returned unchanged;
    a table spec that cannot be read is a UsageError rather than a guess."""
    names = {n.lower() for n in table} - NO_CPU_BUILD_PACKAGES
    forced = []
    for spec in specs:
        prefix, body = _split_channel(spec)
        match = _NAME.match(body)
        if not match or match["name"].lower() not in names:
            forced.append(spec)
            continue
        version, build = _version_and_build(spec, match["name"], match["rest"])
        if build is not None and build != "*":
            forced.append(spec)
        else:
            forced.append(f"{prefix}{match['name']} {version} {CUDA_BUILD_GLOB}")
    return forced


# --------------------------------------------------------------------------- choosing __cuda


@dataclass(frozen=True)
class CudaChoice:
    """The `__cuda` version given to the solver (None: none) and where it came from."""

    version: str | None
    source: Literal["flag", "detected", "site", "none"]
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
        return CudaChoice(flag, "flag", tuple(warnings))
    if detected is not None:
        return CudaChoice(detected.version, "detected")
    if site is not None:
        return CudaChoice(site, "site")
    if gpu:
        raise UsageError(
            "--gpu needs the CUDA version of the GPU nodes' driver, and this node has no GPU",
            hint='pass --cuda 12.4, or set cuda_version = "12.4" under [gpu] in the site config '
            "(or HPCENV_GPU_CUDA_VERSION=12.4)",
        )
    return CudaChoice(None, "none")


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


@dataclass(frozen=True)
class GpuReport:
    """The CUDA side of a solution or an installed environment."""

    cuda_builds: tuple[GpuPackage, ...]
    cpu_builds: tuple[GpuPackage, ...]  # table packages that resolved to CPU builds
    required_cuda: str | None  # the highest `__cuda` lower bound
    required_by: str | None  # "pytorch 2.5.1 cuda126_…" or "cuda-version 12.6"
    driver_version: str | None
    driver_status: Literal["ok", "too_old", "unknown"]


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
        status = "ok"
    elif driver is None:
        status = "unknown"
    elif required is None or version_at_least(driver, required):
        status = "ok"
    else:
        status = "too_old"
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
    if report.driver_status == "too_old":
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
    if report.driver_status == "unknown":
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


# ------------------------------------------------------------------------------ old recipe

_OLD_CHANNELS = frozenset({"pytorch", "nvidia", "pytorch-nightly"})
_PYTORCH_FAMILY = frozenset({"pytorch", "torchvision", "torchaudio", "pytorch-cuda", "cpuonly"})
_DROPPED = frozenset({"pytorch-cuda", "cpuonly", "pytorch-mutex"})


@dataclass(frozen=True)
class OldRecipe:
    """The `-c pytorch -c nvidia` recipe, and its conda-forge equivalent."""

    explanation: tuple[str, str]
    specs: tuple[str, ...]
    channels: tuple[str, ...]
    gpu: bool
    requested_cuda: str | None  # from pytorch-cuda=12.1; not pinned, see `note`
    note: str | None
    command: str


_SUBDIR = re.compile(r"^(?:noarch|(?:linux|osx|win|emscripten|wasi)-\w+)$")


def _channel_name(channel: str) -> str:
    """ "pytorch", "https://conda.anaconda.org/pytorch/", "nvidia/label/cuda-12.1" -> the name."""
    parts = [p for p in channel.strip().lower().split("/") if p]
    if "label" in parts:
        parts = parts[: parts.index("label")]
    while parts and _SUBDIR.match(parts[-1]):
        parts.pop()
    return parts[-1] if parts else ""


def old_recipe(
    specs: Sequence[str], channels: Sequence[str], name: str = "NAME"
) -> OldRecipe | None:
    """Recognise PyTorch from the pytorch/nvidia channels and say what to do on conda-forge.

    pytorch-cuda=X is not turned into a `cuda-version X.*` pin: on conda-forge the CUDA build
    follows the driver (`__cuda`), and conda-forge builds PyTorch for its own CUDA versions
    (12.6, 12.8, 12.9, …), so a 12.1 pin would usually leave no build to install.
    """
    prefixed = [_channel_name(_split_channel(s)[0][:-2]) for s in specs if "::" in s]
    old_channels = {_channel_name(c) for c in channels} | set(prefixed)
    if not any(f in s.lower() for s in specs for f in _PYTORCH_FAMILY):
        return None  # no spec can name the family: skip parsing them (the engine's import)
    spec_names = _spec_names(specs)
    uses_family = any(n in _PYTORCH_FAMILY for n in spec_names)
    if not uses_family or not (old_channels & _OLD_CHANNELS or "pytorch-cuda" in spec_names):
        return None
    requested_cuda = None
    new_specs = []
    for spec, spec_name in zip(specs, spec_names, strict=True):
        if spec_name == "pytorch-cuda":
            found = re.search(r"(\d+(?:\.\d+)?)", _split_channel(spec)[1][len("pytorch-cuda") :])
            requested_cuda = found[1] if found else None
        if spec_name in _DROPPED:
            continue
        prefix, body = _split_channel(spec)
        new_specs.append(body if _channel_name(prefix[:-2]) in _OLD_CHANNELS else spec.strip())
    gpu = "cpuonly" not in spec_names
    extra = [
        c
        for c in dict.fromkeys(channels)
        if _channel_name(c) not in _OLD_CHANNELS | {"conda-forge"}
    ]
    command = ["hpcenv", "create", name, *new_specs]
    for channel in extra:
        command += ["-c", channel]
    if gpu:
        command.append("--gpu")
    note = None
    if requested_cuda:
        note = (
            f"pytorch-cuda={requested_cuda} is not pinned: conda-forge picks the CUDA build the "
            f"GPU driver supports; on a node without a GPU add --cuda {requested_cuda} "
            "or set gpu.cuda_version in the site config"
        )
    second = (
        "conda-forge carries CUDA builds of PyTorch: drop -c pytorch -c nvidia and pytorch-cuda, "
        "and ask for the CUDA build with --gpu."
        if gpu
        else "conda-forge carries CPU builds of PyTorch: drop -c pytorch and cpuonly."
    )
    return OldRecipe(
        explanation=(
            "The pytorch channel stopped publishing conda packages after PyTorch 2.5, "
            "and the nvidia channel was only needed beside it.",
            second,
        ),
        specs=tuple(new_specs),
        channels=("conda-forge", *extra),
        gpu=gpu,
        requested_cuda=requested_cuda,
        note=note,
        command=shlex.join(command),
    )
