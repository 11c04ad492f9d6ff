"""The node's CUDA driver: the only impure part of GPU support (a probe in a child process).

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
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from hpcenv.strenum import StrEnum

LIBCUDA_ENV = "HPCENV_LIBCUDA"
DEFAULT_LIBCUDA = "libcuda.so.1"
PROBE_TIMEOUT_S = 30.0


class DriverSource(StrEnum):
    LIBCUDA = "libcuda"
    NVIDIA_SMI = "nvidia-smi"


@dataclass(frozen=True)
class CudaDriver:
    """The CUDA version the node's driver supports, and where it was read."""

    version: str  # "12.4"
    source: DriverSource
    path: str | None  # the libcuda that answered, or the nvidia-smi that was run


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
    return CudaDriver(f"{int(match[1])}.{int(match[2])}", DriverSource.NVIDIA_SMI, exe)


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
            return CudaDriver(_version_from_int(int(value)), DriverSource.LIBCUDA, path or library)
        return None
    if status == "error":
        return None
    return _from_nvidia_smi()
