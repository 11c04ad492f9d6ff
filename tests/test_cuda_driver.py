"""CUDA driver detection through real shared objects (a fake libcuda built with gcc) and a
fake nvidia-smi: the only hardware hpcenv fakes, at the narrowest seam."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcenv.cuda_driver import CudaDriver, detect_cuda_driver
from tests.conftest import need

FAKE_LIBCUDA_C = Path(__file__).with_name("fake_libcuda.c")
GCC = shutil.which("gcc")
BUILD_PATH = os.environ.get("PATH", "")  # gcc finds `as` and `ld` on it, whatever tests set

NVIDIA_SMI_HEADER = """\
Thu Aug 14 10:12:03 2025
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |                    0 |
| N/A   31C    P0             70W /  700W |       1MiB /  81559MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+
"""


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture
def build_libcuda(tmp_path: Path):
    """Compile tests/fake_libcuda.c into DIR/libcuda.so.1 with the given -D defines."""
    need("gcc", GCC is not None, "gcc is needed to build the fake libcuda.so.1")
    count = 0

    def build(*defines: str) -> Path:
        nonlocal count
        count += 1
        out = tmp_path / f"lib{count}" / "libcuda.so.1"
        out.parent.mkdir()
        flags = [f"-D{d}" for d in defines]
        subprocess.run(
            [GCC, "-shared", "-fPIC", "-o", str(out), str(FAKE_LIBCUDA_C), *flags],
            check=True,
            env={**os.environ, "PATH": BUILD_PATH},
        )
        return out

    return build


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one empty directory: no nvidia-smi, whatever this machine has."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("HPCENV_LIBCUDA", raising=False)
    return bin_dir


def install_nvidia_smi(bin_dir: Path, output: str, exit_code: int = 0) -> Path:
    """A real executable named nvidia-smi that prints `output` (we have no GPU to ask)."""
    script = bin_dir / "nvidia-smi"
    assert "'" not in output
    # printf is a shell builtin: the script works with PATH holding only its own directory
    script.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nexit {exit_code}\n")
    script.chmod(0o755)
    return script


# ---------------------------------------------------------------------------------- detection


def test_detects_driver_version_from_libcuda_given_as_argument(build_libcuda, empty_path):
    lib = build_libcuda()
    driver = detect_cuda_driver(str(lib))
    assert driver == CudaDriver("12.4", "libcuda", str(lib))


def test_detection_started_early_gives_the_same_answer_once_asked(build_libcuda, empty_path):
    from hpcenv.cuda_driver import detect_cuda_driver_soon

    lib = build_libcuda()
    answer = detect_cuda_driver_soon(str(lib))  # the probe child runs meanwhile
    assert answer() == CudaDriver("12.4", "libcuda", str(lib))
    assert answer() == CudaDriver("12.4", "libcuda", str(lib))  # asked twice, probed once
    assert detect_cuda_driver_soon(str(lib.parent / "missing.so"))() is None


def test_detects_driver_version_from_libcuda_named_by_hpcenv_libcuda(
    build_libcuda, empty_path, monkeypatch
):
    lib = build_libcuda()
    monkeypatch.setenv("HPCENV_LIBCUDA", str(lib))
    assert detect_cuda_driver() == CudaDriver("12.4", "libcuda", str(lib))
    assert detect_cuda_driver() is not None


def test_argument_wins_over_hpcenv_libcuda(build_libcuda, empty_path, monkeypatch):
    monkeypatch.setenv("HPCENV_LIBCUDA", str(build_libcuda("FAKE_VERSION=11080")))
    lib = build_libcuda("FAKE_VERSION=12080")
    assert detect_cuda_driver(str(lib)).version == "12.8"


def test_default_soname_is_found_by_the_dynamic_loader(build_libcuda, empty_path, monkeypatch):
    lib = build_libcuda("FAKE_VERSION=12060")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    driver = detect_cuda_driver()
    assert driver is not None
    assert (driver.version, driver.source, driver.path) == ("12.6", "libcuda", str(lib))


@pytest.mark.parametrize(("value", "version"), [(11080, "11.8"), (12000, "12.0"), (13000, "13.0")])
def test_driver_integer_becomes_major_minor(build_libcuda, empty_path, value, version):
    lib = build_libcuda(f"FAKE_VERSION={value}")
    assert detect_cuda_driver(str(lib)).version == version


def test_empty_cuda_visible_devices_does_not_hide_the_driver(
    build_libcuda, empty_path, monkeypatch
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_cuda_driver(str(build_libcuda())).version == "12.4"


@pytest.mark.parametrize(
    "defines",
    [
        ("FAKE_VERSION_RESULT=1",),  # cuDriverGetVersion -> CUDA_ERROR_INVALID_VALUE
        ("FAKE_INIT_RESULT=100",),  # cuInit -> CUDA_ERROR_NO_DEVICE: a driver without GPUs
        ("FAKE_VERSION=0",),  # no driver behind the library
    ],
)
def test_driver_that_answers_no_means_no_gpu_without_asking_nvidia_smi(
    build_libcuda, empty_path, defines
):
    install_nvidia_smi(empty_path, NVIDIA_SMI_HEADER)
    assert detect_cuda_driver(str(build_libcuda(*defines))) is None


def test_file_that_is_not_a_shared_object_gives_none(tmp_path, empty_path):
    fake = tmp_path / "libcuda.so.1"
    fake.write_text("not an ELF file\n")
    assert detect_cuda_driver(str(fake)) is None


def test_library_without_cudrivergetversion_gives_none(build_libcuda, empty_path):
    assert detect_cuda_driver(str(build_libcuda("FAKE_WITHOUT_GET_VERSION"))) is None


def test_missing_library_and_no_nvidia_smi_gives_none(tmp_path, empty_path):
    assert detect_cuda_driver(str(tmp_path / "nowhere" / "libcuda.so.1")) is None
    assert detect_cuda_driver(str(tmp_path / "nowhere" / "libcuda.so.1")) is None


def test_falls_back_to_nvidia_smi_header_when_the_library_is_missing(
    tmp_path, empty_path, monkeypatch
):
    smi = install_nvidia_smi(empty_path, NVIDIA_SMI_HEADER)
    monkeypatch.setenv("HPCENV_LIBCUDA", str(tmp_path / "nowhere" / "libcuda.so.1"))
    assert detect_cuda_driver() == CudaDriver("12.4", "nvidia-smi", str(smi))


def test_falls_back_to_nvidia_smi_when_the_library_lacks_the_symbol(build_libcuda, empty_path):
    install_nvidia_smi(empty_path, NVIDIA_SMI_HEADER.replace("12.4", "12.2"))
    driver = detect_cuda_driver(str(build_libcuda("FAKE_WITHOUT_GET_VERSION")))
    assert driver is not None and (driver.version, driver.source) == ("12.2", "nvidia-smi")


def test_nvidia_smi_without_devices_gives_none(tmp_path, empty_path):
    install_nvidia_smi(empty_path, "No devices were found\n", exit_code=6)
    assert detect_cuda_driver(str(tmp_path / "missing.so")) is None


@pytest.mark.parametrize("value", ["none", "None", "NONE"])
def test_hpcenv_libcuda_none_forces_no_gpu_even_with_a_driver(
    build_libcuda, empty_path, monkeypatch, value
):
    install_nvidia_smi(empty_path, NVIDIA_SMI_HEADER)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(build_libcuda().parent))
    monkeypatch.setenv("HPCENV_LIBCUDA", value)
    assert detect_cuda_driver() is None
    assert detect_cuda_driver() is None


def test_empty_hpcenv_libcuda_counts_as_unset(build_libcuda, empty_path, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", str(build_libcuda().parent))
    monkeypatch.setenv("HPCENV_LIBCUDA", "")
    assert detect_cuda_driver().version == "12.4"


def test_detection_runs_in_a_child_so_our_process_never_loads_libcuda(build_libcuda, empty_path):
    lib = build_libcuda()
    detect_cuda_driver(str(lib))
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(lib) not in maps.read_text()
