"""The engine seam on real packages: solve, install (hardlinks, differences, removal), the
errors users see, CUDA builds, lock files, and the venv-style python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcenv import engine
from hpcenv.channel import build_channel, demo_packages, native_subdir
from hpcenv.errors import OperationError, UsageError


def builds(solution: engine.Solution) -> dict[str, str]:
    return {p.name: f"{p.version}-{p.build}" for p in solution.packages}


def create(url: str, specs: list[str], tmp_path: Path, name: str = "env", **kw) -> Path:
    cache, prefix = tmp_path / "cache", tmp_path / name
    engine.install(engine.solve([url], specs, cache_dir=cache, **kw), prefix, cache_dir=cache)
    return prefix


def file_state(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def run_python(prefix: Path, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [prefix / "bin" / "python", "-c", code], capture_output=True, text=True, env=env
    )


def test_install_hardlinks_files_from_the_package_cache(demo_channel, tmp_path):
    prefix = create(demo_channel.url, ["python", "demo-tool"], tmp_path)
    tool = prefix / "bin" / "demo-tool"
    out = subprocess.run([tool], capture_output=True, text=True, check=True).stdout
    assert out.startswith("demo-tool 1.0\n")
    cached = engine.package_cache_dir(tmp_path / "cache") / "demo-tool-1.0-0" / "bin" / "demo-tool"
    assert os.stat(cached).st_ino == os.stat(tool).st_ino
    assert os.stat(tool).st_nlink >= 2


def test_install_leaves_a_conda_compatible_prefix(demo_channel, tmp_path):
    prefix = create(demo_channel.url, ["demo-tool"], tmp_path)
    meta = prefix / "conda-meta"
    assert (meta / "demo-tool-1.0-0.json").is_file()
    assert (meta / "history").is_file()
    (package,) = engine.installed_packages(prefix)
    assert (package.name, package.version, package.build) == ("demo-tool", "1.0", "0")
    assert package.url.startswith(demo_channel.url)
    assert package.extracted_dir == str(
        engine.package_cache_dir(tmp_path / "cache") / "demo-tool-1.0-0"
    )
    files = engine.linked_files(prefix)["demo-tool"]
    assert "bin/demo-tool" in files and "etc/conda/activate.d/demo-tool.sh" in files


def test_solve_respects_version_constraints(demo_channel, tmp_path):
    assert builds(engine.solve([demo_channel.url], ["libnum"], cache_dir=tmp_path))["libnum"] == (
        "2.0-0"
    )
    solution = engine.solve([demo_channel.url], ["numtool"], cache_dir=tmp_path)
    assert builds(solution) == {"numtool": "1.0-0", "libnum": "1.0-0"}


def test_a_plain_channel_path_works_like_its_file_url(demo_channel, tmp_path):
    by_path = engine.solve([str(demo_channel.path)], ["numtool"], cache_dir=tmp_path)
    by_url = engine.solve([demo_channel.url], ["numtool"], cache_dir=tmp_path)
    assert builds(by_path) == builds(by_url)


def test_unsatisfiable_specs_are_a_usage_error_with_the_solver_reasons(demo_channel, tmp_path):
    with pytest.raises(UsageError) as caught:
        engine.solve([demo_channel.url], ["numtool", "clash-a"], cache_dir=tmp_path)
    message = caught.value.message
    assert "numtool" in message and "clash-a" in message
    assert "libnum <2" in message and "libnum >=2" in message
    assert "Cannot solve the request" not in message  # rattler's preamble is noise
    assert caught.value.exit_code == 2


def test_an_unknown_package_is_a_usage_error_naming_it(demo_channel, tmp_path):
    with pytest.raises(UsageError, match="no-such-package"):
        engine.solve([demo_channel.url], ["no-such-package"], cache_dir=tmp_path)


@pytest.mark.parametrize("spec", ["python ==", "pytorch=*=cuda*", "bad name!"])
def test_an_invalid_spec_is_a_usage_error_naming_the_spec(demo_channel, tmp_path, spec):
    with pytest.raises(UsageError) as caught:
        engine.solve([demo_channel.url], [spec], cache_dir=tmp_path)
    assert repr(spec) in caught.value.message


@pytest.mark.parametrize(
    "channel", ["file:///nonexistent", "http://127.0.0.1:9/x", "{tmp}/no-channel-here"]
)
def test_a_missing_or_unreachable_channel_is_an_operation_error_with_a_mirror_hint(
    tmp_path, channel
):
    channel = channel.format(tmp=tmp_path)
    with pytest.raises(OperationError) as caught:
        engine.solve([channel], ["python"], cache_dir=tmp_path / "cache")
    assert channel.removeprefix("file://") in caught.value.message
    assert "mirror" in (caught.value.hint or "")
    assert caught.value.exit_code == 1


def test_a_cuda_build_is_chosen_when_forced_and_cuda_is_present(demo_channel, tmp_path):
    solution = engine.solve(
        [demo_channel.url], ["torchvision * cuda*"], cache_dir=tmp_path, cuda="12.4"
    )
    assert builds(solution) == {
        "torchvision": "0.20.1-cuda126_0",
        "pytorch": "2.5.1-cuda126_0",
        "cuda-version": "12.6-0",
    }


def test_plain_pytorch_without_cuda_gets_the_cpu_build(demo_channel, tmp_path):
    solution = engine.solve([demo_channel.url], ["torchvision"], cache_dir=tmp_path, cuda=None)
    assert builds(solution) == {"torchvision": "0.20.1-cpu_0", "pytorch": "2.5.1-cpu_0"}


def test_a_forced_cuda_build_without_cuda_is_a_usage_error_naming_cuda(demo_channel, tmp_path):
    with pytest.raises(UsageError, match="__cuda"):
        engine.solve([demo_channel.url], ["pytorch * cuda*"], cache_dir=tmp_path, cuda=None)


def test_virtual_packages_carry_cuda_only_when_asked():
    def names(packages) -> dict[str, str]:
        return {p.name.normalized: str(p.version) for p in packages}

    assert "__cuda" not in names(engine.virtual_packages(None))
    with_cuda = names(engine.virtual_packages("12.4"))
    assert with_cuda["__cuda"] == "12.4"
    assert "__unix" in with_cuda  # the host's own virtual packages stay


def test_install_with_installed_applies_only_the_difference(demo_channel, tmp_path):
    cache = tmp_path / "cache"
    prefix = create(demo_channel.url, ["python", "demo-tool"], tmp_path)
    untouched = [prefix / "bin/demo-tool", prefix / "conda-meta/demo-tool-1.0-0.json"]
    before = [file_state(p) for p in untouched]
    installed = engine.installed_packages(prefix)
    solution = engine.solve(
        [demo_channel.url], ["python", "demo-tool", "hello"], cache_dir=cache, installed=installed
    )
    engine.install(solution, prefix, cache_dir=cache, installed=installed)
    assert [file_state(p) for p in untouched] == before
    assert {p.name for p in engine.installed_packages(prefix)} == {"python", "demo-tool", "hello"}


def test_solving_with_installed_packages_keeps_their_versions(demo_channel, tmp_path):
    cache = tmp_path / "cache"
    prefix = create(demo_channel.url, ["python", "hello ==1.0"], tmp_path)
    installed = engine.installed_packages(prefix)
    kept = engine.solve(
        [demo_channel.url], ["python", "hello"], cache_dir=cache, installed=installed
    )
    fresh = engine.solve([demo_channel.url], ["python", "hello"], cache_dir=cache)
    assert builds(kept)["hello"] == "1.0-0"
    assert builds(fresh)["hello"] == "2.0-0"


def test_removing_a_package_removes_its_files_and_keeps_the_rest(demo_channel, tmp_path):
    cache = tmp_path / "cache"
    prefix = create(demo_channel.url, ["python", "demo-tool", "hello"], tmp_path)
    installed = engine.installed_packages(prefix)
    solution = engine.solve(
        [demo_channel.url], ["python", "hello"], cache_dir=cache, installed=installed
    )
    engine.install(solution, prefix, cache_dir=cache, installed=installed)
    assert not (prefix / "bin/demo-tool").exists()
    assert not (prefix / "etc/conda/activate.d/demo-tool.sh").exists()
    assert not (prefix / "conda-meta/demo-tool-1.0-0.json").exists()
    assert {p.name for p in engine.installed_packages(prefix)} == {"python", "hello"}
    assert run_python(prefix, "import hello").returncode == 0


def test_a_lock_file_recreates_the_same_packages_without_solving(tmp_path):
    channel = tmp_path / "channel"
    url = build_channel(channel, demo_packages())
    specs = ["python", "demo-tool", "hello ==1.0", "numtool"]
    solution = engine.solve([url], specs, cache_dir=tmp_path / "cache")
    lock = tmp_path / "hpcenv.lock"
    engine.write_lock(solution.packages, [url], lock)
    for repodata in channel.glob("*/repodata*"):  # nothing left to solve against
        repodata.unlink()
    shutil.rmtree(channel / native_subdir() / "shards", ignore_errors=True)
    shutil.rmtree(channel / "noarch" / "shards", ignore_errors=True)

    locked = engine.read_lock(lock)

    def identity(p):
        return (p.name, p.version, p.build, p.url, p.sha256)

    assert sorted(map(identity, locked)) == sorted(map(identity, solution.packages))
    prefix = tmp_path / "from-lock"
    engine.install(locked, prefix, cache_dir=tmp_path / "fresh-cache")
    assert sorted(map(identity, engine.installed_packages(prefix))) == sorted(
        map(identity, solution.packages)
    )
    with pytest.raises(OperationError):  # the channel really cannot be solved against now
        engine.solve([url], specs, cache_dir=tmp_path / "cache2")


def test_an_unreadable_lock_file_is_a_usage_error(tmp_path):
    lock = tmp_path / "broken.lock"
    lock.write_text("this is: [not a lock file\n")
    with pytest.raises(UsageError, match="lock"):
        engine.read_lock(lock)


def test_the_venv_style_python_makes_the_prefix_sys_prefix_and_imports_noarch_packages(
    demo_channel, tmp_path
):
    prefix = create(demo_channel.url, ["python", "hello"], tmp_path)
    out = run_python(prefix, "import sys, hello; print(sys.prefix); print(hello.greet())")
    assert out.returncode == 0, out.stderr
    sys_prefix, greeting = out.stdout.splitlines()
    assert os.path.realpath(sys_prefix) == os.path.realpath(prefix)
    assert greeting.startswith("hello from hpcenv")
    short = "{}.{}".format(*sys.version_info[:2])
    assert (prefix / f"lib/python{short}/site-packages/hello/__init__.py").is_file()


def test_noarch_python_packages_are_byte_compiled_and_removed_with_their_pyc(
    demo_channel, tmp_path
):
    cache = tmp_path / "cache"
    prefix = create(demo_channel.url, ["python", "hello"], tmp_path)
    site = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    pyc = f"{site}/hello/__pycache__/__init__.{sys.implementation.cache_tag}.pyc"
    assert (prefix / pyc).is_file()
    assert pyc in engine.linked_files(prefix)["hello"]
    engine.install(
        engine.solve([demo_channel.url], ["python"], cache_dir=cache),
        prefix,
        cache_dir=cache,
        installed=engine.installed_packages(prefix),
    )
    assert not (prefix / site / "hello").exists()


def test_a_binary_placeholder_shorter_than_the_prefix_fails_naming_the_reason(tmp_path):
    """`file_mode: binary` is replaced in place, NUL-padded: rattler refuses a longer prefix,
    and the error says so instead of only `failed to link`."""
    from hpcenv.channel import PackageRecipe

    blob = b"\x7fELF\x00/opt/b/lib\x00"
    spec = PackageRecipe(
        "binpkg", "1.0", files={"lib/blob": blob}, binary_prefix_files={"lib/blob": "/opt/b"}
    )
    url = build_channel(tmp_path / "chan", [spec])
    with pytest.raises(OperationError, match="cannot be longer than the placeholder"):
        create(url, ["binpkg"], tmp_path)
