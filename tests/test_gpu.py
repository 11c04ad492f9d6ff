"""Spec forcing, CUDA builds and versions, the __cuda rule, solution checks (pure)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from hpcenv.cuda_driver import CudaDriver
from hpcenv.errors import EXIT_USAGE, UsageError
from hpcenv.gpu import (
    DEFAULT_GPU_PACKAGES,
    check_gpu_solution,
    cuda_requirement,
    force_gpu_specs,
    gpu_report,
    is_cuda_build,
    resolve_cuda,
    version_at_least,
)

# -------------------------------------------------------------------------------- spec forcing


@pytest.mark.parametrize(
    ("spec", "forced"),
    [
        ("pytorch", "pytorch * *cuda*"),
        ("pytorch>=2.4", "pytorch >=2.4 *cuda*"),
        ("pytorch >=2.4", "pytorch >=2.4 *cuda*"),
        ("pytorch >= 2.4", "pytorch >=2.4 *cuda*"),
        ("pytorch>=2.4,<3", "pytorch >=2.4,<3 *cuda*"),
        ("pytorch=2.5.1", "pytorch 2.5.1.* *cuda*"),  # conda: =2.5.1 means 2.5.1.*
        ("pytorch =2.5.1", "pytorch 2.5.1.* *cuda*"),
        ("pytorch=2.5", "pytorch 2.5.* *cuda*"),
        ("pytorch=2.5.*", "pytorch 2.5.* *cuda*"),
        ("pytorch==2.5.1", "pytorch ==2.5.1 *cuda*"),
        ("pytorch 2.5.1", "pytorch ==2.5.1 *cuda*"),  # the version as rattler reads it
        ("pytorch 2.5.1 *", "pytorch ==2.5.1 *cuda*"),
        ("pytorch[version='>=2.4']", "pytorch >=2.4 *cuda*"),  # conda's bracket form
        ("pytorch=2.4|=2.5", "pytorch 2.4.*|2.5.* *cuda*"),
        ("pytorch=*", "pytorch * *cuda*"),
        ("conda-forge::pytorch>=2.4", "conda-forge::pytorch >=2.4 *cuda*"),
        ("onnxruntime", "onnxruntime * *cuda*"),  # its builds end in _cuda129 / _cpu
        ("jaxlib<0.5", "jaxlib <0.5 *cuda*"),
    ],
)
def test_table_package_spec_asks_for_a_cuda_build(spec, forced):
    assert force_gpu_specs([spec], DEFAULT_GPU_PACKAGES) == [forced]


@pytest.mark.parametrize(
    "spec",
    [
        "pytorch=2.5.1=cuda126*",
        "pytorch==2.5.1=cpu*",
        "pytorch 2.5.1 cpu_mkl*",
        "pytorch * cuda*",
        "pytorch[build=cuda*]",
        "numpy>=2",
        "python=3.12",
        "pytorch-lightning",
        "cupy",  # CUDA-only, and its build strings carry no cuda tag
        "cupy-core>=13",
    ],
)
def test_spec_with_a_build_or_outside_the_table_is_left_alone(spec):
    assert force_gpu_specs([spec], DEFAULT_GPU_PACKAGES) == [spec]


@pytest.mark.parametrize(
    "spec",
    [
        "pytorch>=2.4 a b",
        "pytorch 2.4 cuda* extra",
        "pytorch@2.4",
        "pytorch=2.4 cuda*",  # conda reads ==2.4 with build cuda*, rattler's strict 2.4.*
    ],
)
def test_table_spec_that_cannot_be_read_is_refused(spec):
    with pytest.raises(UsageError) as err:
        force_gpu_specs([spec], DEFAULT_GPU_PACKAGES)
    assert err.value.exit_code == EXIT_USAGE
    assert spec in err.value.message and "*cuda*" in err.value.hint


def test_the_table_passed_in_decides_what_is_forced():
    forced = force_gpu_specs(["numpy", "pytorch", "scipy"], table=("numpy",))
    assert forced == ["numpy * *cuda*", "pytorch", "scipy"]


# ------------------------------------------------------------------------- builds and versions


@pytest.mark.parametrize(
    ("build", "cuda"),
    [
        ("cuda126_mkl_py312_h1234abcd_300", True),  # pytorch, libtorch
        ("cuda129py312h1234abcd_200", True),  # tensorflow
        ("py312h1234abcd_0_cuda129", True),  # onnxruntime
        ("py3.11_cuda12.1_cudnn8.9.2_0", True),  # the old pytorch channel
        ("cpu_mkl_py312_h1234abcd_100", False),
        ("py312h1234abcd_0_cpu", False),
        ("py312h7d319b9_2", False),
        ("h1234abcd_0", False),
    ],
)
def test_cuda_builds_are_told_by_their_build_string(build, cuda):
    assert is_cuda_build(build) is cuda


@pytest.mark.parametrize(
    ("depends", "minimum"),
    [
        (["python >=3.12", "__cuda >=12"], "12.0"),
        (["__cuda>=11.8"], "11.8"),
        (["__cuda >=11.8", "__cuda >=12"], "12.0"),
        (["__cuda >=12.0,<13"], "12.0"),
        (["__cuda >=12.4.1"], "12.4.1"),
        (["__cuda 12.*"], "12.0"),
        (["__cuda"], None),
        (["__cuda <13"], None),
        (["numpy >=1.26"], None),
        ([], None),
    ],
)
def test_cuda_requirement_is_the_highest_cuda_lower_bound(depends, minimum):
    assert cuda_requirement(depends) == minimum


@pytest.mark.parametrize(
    ("have", "need", "ok"),
    [("12.4", "12", True), ("12", "12.0", True), ("11.8", "12", False), ("12.10", "12.9", True)],
)
def test_versions_compare_as_tuples_of_integers(have, need, ok):
    assert version_at_least(have, need) is ok


def test_version_comparison_rejects_what_is_not_a_version():
    with pytest.raises(ValueError):
        version_at_least("12.x", "12")


# ---------------------------------------------------------------------------- the __cuda rule

H100 = CudaDriver("12.4", "libcuda", "/usr/lib64/libcuda.so.1")


def test_login_node_uses_the_cuda_flag():
    choice = resolve_cuda("12.4", None, None, gpu=True)
    assert (choice.version, choice.source, choice.warnings) == ("12.4", "flag", ())


def test_login_node_without_flag_uses_the_site_gpu_node_version():
    choice = resolve_cuda(None, "12.2", None, gpu=True)
    assert (choice.version, choice.source) == ("12.2", "site")


def test_login_node_with_gpu_and_no_version_says_both_ways_to_give_one():
    with pytest.raises(UsageError) as err:
        resolve_cuda(None, None, None, gpu=True)
    assert err.value.exit_code == EXIT_USAGE
    assert "--cuda 12.4" in err.value.hint
    assert "cuda_version" in err.value.hint and "HPCENV_GPU_CUDA_VERSION" in err.value.hint


def test_login_node_without_gpu_flag_needs_no_cuda_version():
    choice = resolve_cuda(None, None, None, gpu=False)
    assert (choice.version, choice.source) == (None, "none")


def test_gpu_node_uses_the_detected_driver_over_the_site_version():
    choice = resolve_cuda(None, "11.8", H100, gpu=True)
    assert (choice.version, choice.source, choice.warnings) == ("12.4", "detected", ())


def test_cuda_flag_above_the_detected_driver_wins_with_a_warning():
    choice = resolve_cuda("12.8", None, H100, gpu=True)
    assert (choice.version, choice.source) == ("12.8", "flag")
    assert len(choice.warnings) == 1 and "12.4" in choice.warnings[0]


def test_cuda_flag_below_the_detected_driver_is_taken_silently():
    choice = resolve_cuda("11.8", None, H100, gpu=True)
    assert (choice.version, choice.warnings) == ("11.8", ())


def test_cuda_flag_above_the_site_gpu_node_version_warns():
    choice = resolve_cuda("12.8", "12.2", None, gpu=True)
    assert choice.version == "12.8" and "12.2" in choice.warnings[0]


@pytest.mark.parametrize("bad", ["twelve", "12.4.1.0", "12.", "v12", ""])
def test_cuda_flag_that_is_not_a_version_is_refused(bad):
    with pytest.raises(UsageError, match="--cuda"):
        resolve_cuda(bad, None, None, gpu=True)


@pytest.mark.parametrize("good", ["12", "12.4", "12.4.1"])
def test_cuda_flag_accepts_major_minor_patch(good):
    assert resolve_cuda(good, None, None, gpu=True).version == good


def test_site_cuda_version_that_is_not_a_version_is_refused():
    with pytest.raises(UsageError, match="gpu.cuda_version"):
        resolve_cuda(None, "latest", None, gpu=True)


# -------------------------------------------------------------------------- checking solutions


@dataclass(frozen=True)
class Pkg:
    name: str
    version: str
    build: str
    depends: tuple[str, ...] = ()


TORCH_CUDA = Pkg("pytorch", "2.5.1", "cuda126_mkl_py312_h1234abcd_300", ("__cuda", "numpy"))
TORCH_CPU = Pkg("pytorch", "2.5.1", "cpu_mkl_py312_h1234abcd_100", ("numpy",))
CUDA_VERSION_12_6 = Pkg("cuda-version", "12.6", "h7480c83_3")
NUMPY = Pkg("numpy", "2.1.3", "py312h58c1407_0", ("python >=3.12",))


def test_cuda_solution_on_a_recent_driver_is_ok():
    report = gpu_report([TORCH_CUDA, CUDA_VERSION_12_6, NUMPY], "12.4", DEFAULT_GPU_PACKAGES)
    assert [p.name for p in report.cuda_builds] == ["pytorch"]
    assert report.cpu_builds == ()
    assert (report.required_cuda, report.driver_status) == ("12.0", "ok")
    assert report.required_by == "cuda-version 12.6 h7480c83_3"
    assert check_gpu_solution(report, forced=True) == []


def test_explicit_cuda_lower_bound_in_depends_is_the_requirement():
    torch = Pkg("pytorch", "2.5.1", "cuda126_x_300", ("__cuda >=12.6",))
    report = gpu_report([torch, CUDA_VERSION_12_6], "12.8", DEFAULT_GPU_PACKAGES)
    assert (report.required_cuda, report.required_by) == ("12.6", "pytorch 2.5.1 cuda126_x_300")


def test_constrains_are_read_when_the_package_objects_have_them():
    @dataclass(frozen=True)
    class WithConstrains(Pkg):
        constrains: tuple[str, ...] = ()

    pin = WithConstrains("cuda-version", "12.8", "h0_3", (), ("__cuda >=12.8",))
    assert gpu_report([pin], "12.4", DEFAULT_GPU_PACKAGES).required_cuda == "12.8"


def test_solution_needing_a_newer_driver_is_refused():
    report = gpu_report([TORCH_CUDA, CUDA_VERSION_12_6], "11.8", DEFAULT_GPU_PACKAGES)
    assert report.driver_status == "too_old"
    with pytest.raises(UsageError) as err:
        check_gpu_solution(report, forced=True)
    assert "needs CUDA driver >= 12.0" in err.value.message and "11.8" in err.value.message
    assert "--cuda 11.8" in err.value.hint


def test_gpu_flag_with_a_cpu_build_of_a_table_package_is_refused():
    report = gpu_report([TORCH_CPU, NUMPY], "12.4", DEFAULT_GPU_PACKAGES)
    assert [p.name for p in report.cpu_builds] == ["pytorch"]
    with pytest.raises(UsageError, match="CPU build"):
        check_gpu_solution(report, forced=True)


def test_cpu_build_chosen_for_a_gpu_target_without_gpu_flag_warns():
    report = gpu_report([TORCH_CPU], "12.4", DEFAULT_GPU_PACKAGES)
    warnings = check_gpu_solution(report, forced=False)
    assert len(warnings) == 1 and "pytorch" in warnings[0] and "--gpu" in warnings[0]


def test_cpu_build_without_any_gpu_target_is_silent():
    report = gpu_report([TORCH_CPU, NUMPY], None, DEFAULT_GPU_PACKAGES)
    assert report.driver_status == "ok"
    assert check_gpu_solution(report, forced=False) == []


def test_cuda_builds_with_no_known_driver_are_reported_unchecked():
    report = gpu_report([TORCH_CUDA, CUDA_VERSION_12_6], None, DEFAULT_GPU_PACKAGES)
    assert report.driver_status == "unknown"
    (warning,) = check_gpu_solution(report, forced=False)
    assert "pytorch" in warning and ">= 12.0" in warning


def test_gpu_flag_that_changed_nothing_warns():
    report = gpu_report([NUMPY], "12.4", DEFAULT_GPU_PACKAGES)
    (warning,) = check_gpu_solution(report, forced=True)
    assert "--gpu changed nothing" in warning


def test_cuda_only_package_counts_as_cuda_build_through_its_cuda_dependency():
    cupy = Pkg("cupy-core", "13.3.0", "py312h7d319b9_2", ("__cuda >=12.0", "cuda-version >=12"))
    report = gpu_report([cupy], "12.4", DEFAULT_GPU_PACKAGES)
    assert [p.name for p in report.cuda_builds] == ["cupy-core"] and report.cpu_builds == ()


def test_the_table_passed_in_decides_what_counts_as_a_cpu_variant():
    report = gpu_report([TORCH_CPU, NUMPY], "12.4", table=("numpy",))
    assert [p.name for p in report.cpu_builds] == ["numpy"]


def test_report_refuses_a_driver_version_that_is_not_a_version():
    with pytest.raises(UsageError):
        gpu_report([NUMPY], "550.54.15.1", DEFAULT_GPU_PACKAGES)


def test_gpu_module_imports_with_the_standard_library_only():
    code = "import sys, hpcenv.gpu, hpcenv.cuda_driver, hpcenv.oldrecipe; print(sorted(m for m in ('rattler', 'rich', 'typer') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
