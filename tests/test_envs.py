"""Environments on the real engine and a real local channel: create, install, remove, list,
info, export, lock round trips, atomicity, and the errors."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from hpcenv import engine
from hpcenv.channel import build_channel, demo_packages
from tests.channels import many_files_package
from tests.fs import cli_env, hpcenv, tmpfs


def env_dir(h, name: str) -> Path:
    return h["home"] / ".conda" / "envs" / name


def run(h, *args: str, **kw) -> subprocess.CompletedProcess:
    return hpcenv(*args, env={**h["env"], **kw.pop("env", {})}, **kw)


def test_create_puts_a_conda_compatible_env_in_storage_and_registers_it_once(ready_home):
    h = ready_home
    r = run(h, "create", "demo", "python", "demo-tool", "-c", h["url"])
    assert r.returncode == 0, r.stderr
    prefix = env_dir(h, "demo")
    assert os.path.realpath(prefix).startswith(os.path.realpath(h["storage"]))
    assert subprocess.run(
        [prefix / "bin" / "demo-tool"], capture_output=True, text=True
    ).stdout.startswith("demo-tool 1.0")
    metas = sorted(p.name for p in (prefix / "conda-meta").iterdir())
    assert "history" in metas and "demo-tool-1.0-0.json" in metas
    assert "+" in (prefix / "conda-meta" / "history").read_text()
    lines = (h["home"] / ".conda" / "environments.txt").read_text().splitlines()
    assert lines.count(str(prefix)) == 1
    run(h, "install", "demo", "hello")
    lines = (h["home"] / ".conda" / "environments.txt").read_text().splitlines()
    assert lines.count(str(prefix)) == 1


def test_install_hardlinks_files_from_the_package_cache(ready_home):
    h = ready_home
    assert run(h, "create", "a", "demo-tool", "-c", h["url"]).returncode == 0
    assert run(h, "create", "b", "demo-tool", "-c", h["url"]).returncode == 0
    fa = env_dir(h, "a") / "share/demo-tool/data.txt"
    fb = env_dir(h, "b") / "share/demo-tool/data.txt"
    cached = h["storage"] / ".cache/rattler/pkgs/demo-tool-1.0-0/share/demo-tool/data.txt"
    assert os.stat(fa).st_ino == os.stat(fb).st_ino == os.stat(cached).st_ino


def test_version_constraints_are_respected(ready_home):
    h = ready_home
    r = run(h, "create", "n", "numtool", "-c", h["url"], "--json")
    assert r.returncode == 0, r.stderr
    packages = {p["name"]: p["version"] for p in json.loads(r.stdout)["result"]["packages"]}
    assert packages["libnum"] == "1.0"


def test_unsatisfiable_specs_exit_2_with_the_solver_explanation_and_write_nothing(ready_home):
    h = ready_home
    r = run(h, "create", "bad", "numtool", "clash-a", "-c", h["url"])
    assert r.returncode == 2
    assert "cannot be installed together" in r.stderr and "libnum" in r.stderr
    assert not env_dir(h, "bad").exists()


def test_unreachable_channel_exits_1_naming_the_url_and_the_mirror_setting(ready_home):
    h = ready_home
    r = run(h, "create", "x", "python", "-c", "file:///nonexistent/channel")
    assert r.returncode == 1
    assert "file:///nonexistent/channel" in r.stderr and "mirror" in r.stderr
    assert not env_dir(h, "x").exists()


@pytest.mark.parametrize("name", ["../x", "a b", "$(id)", "", "-rf", "x/y"])
def test_hostile_names_exit_2_and_write_nothing(ready_home, name):
    h = ready_home
    before = sorted(os.listdir(h["storage"] / ".conda"))
    r = run(h, "create", name, "python", "-c", h["url"])
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(h["storage"] / ".conda")) == before


def test_bad_spec_exits_2(ready_home):
    r = run(ready_home, "create", "s", "python >>=3", "-c", ready_home["url"])
    assert r.returncode == 2 and "invalid package spec" in r.stderr


def test_existing_env_is_refused_unless_force(ready_home):
    h = ready_home
    assert run(h, "create", "e", "demo-tool", "-c", h["url"]).returncode == 0
    again = run(h, "create", "e", "numtool", "-c", h["url"])
    assert again.returncode == 2 and "already exists" in again.stderr
    forced = run(h, "create", "e", "numtool", "-c", h["url"], "--force")
    assert forced.returncode == 0, forced.stderr
    assert (env_dir(h, "e") / "bin/numtool").exists() and not (
        env_dir(h, "e") / "bin/demo-tool"
    ).exists()


def test_create_refuses_an_env_in_home_before_setup(fake_home, demo_channel):
    env = cli_env(fake_home["home"], fake_home["storage"])
    r = hpcenv("create", "e", "python", "-c", demo_channel.url, env=env)
    assert r.returncode == 2 and "hpcenv setup" in r.stderr
    assert not (fake_home["home"] / ".conda").exists()


def test_dry_run_solves_and_writes_nothing(ready_home):
    h = ready_home
    r = run(h, "create", "d", "numtool", "-c", h["url"], "--dry-run")
    assert r.returncode == 0 and "numtool" in r.stdout
    assert not env_dir(h, "d").exists()


def test_kill_during_create_leaves_no_env_and_the_leftover_is_removed_next_time(ready_home):
    h = ready_home
    killed = run(
        h, "create", "k", "demo-tool", "-c", h["url"], env={"_HPCENV_TEST_KILL_AFTER": "1"}
    )
    assert killed.returncode == -9
    assert not env_dir(h, "k").exists()
    leftovers = [p for p in (h["storage"] / ".conda/envs").iterdir() if p.name.startswith(".k.")]
    assert leftovers, "the interrupted build should have left its temporary prefix"
    listed = run(h, "list")
    assert "removed the leftover of an interrupted create" in listed.stderr
    assert not any(p.exists() for p in leftovers)
    assert run(h, "create", "k", "demo-tool", "-c", h["url"]).returncode == 0


def test_install_applies_only_the_difference(ready_home):
    h = ready_home
    assert run(h, "create", "i", "python", "demo-tool", "-c", h["url"]).returncode == 0
    tool = env_dir(h, "i") / "bin" / "demo-tool"
    before = os.stat(tool)
    r = run(h, "install", "i", "hello", "numtool")
    assert r.returncode == 0, r.stderr
    after = os.stat(tool)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert (env_dir(h, "i") / "bin/numtool").exists()
    meta = json.loads((env_dir(h, "i") / "etc/hpcenv/env.json").read_text())
    assert meta["specs"] == ["python", "demo-tool", "hello", "numtool"]


def test_remove_packages_removes_their_files_and_the_spec(ready_home):
    h = ready_home
    assert run(h, "create", "r", "demo-tool", "numtool", "-c", h["url"]).returncode == 0
    r = run(h, "remove", "r", "numtool")
    assert r.returncode == 0, r.stderr
    prefix = env_dir(h, "r")
    assert not (prefix / "bin/numtool").exists() and (prefix / "bin/demo-tool").exists()
    assert not list((prefix / "conda-meta").glob("libnum-*.json"))


def test_remove_env_deletes_it_and_unregisters_it_everywhere(ready_home):
    h = ready_home
    assert run(h, "create", "gone", "demo-tool", "-c", h["url"]).returncode == 0
    refused = run(h, "remove", "gone", stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert run(h, "remove", "gone", "--yes").returncode == 0
    assert not env_dir(h, "gone").exists()
    assert str(env_dir(h, "gone")) not in (h["home"] / ".conda/environments.txt").read_text()
    listed = json.loads(run(h, "list", "--json").stdout)["result"]
    assert all(e["name"] != "gone" for e in listed)


def test_list_and_info_report_packages_sizes_and_specs(ready_home):
    h = ready_home
    assert run(h, "create", "l", "python", "hello", "-c", h["url"]).returncode == 0
    rows = json.loads(run(h, "list", "--json").stdout)["result"]
    row = next(e for e in rows if e["name"] == "l")
    assert (
        row["packages"] == 2
        and row["files"] > 0
        and 0 < row["unique_bytes"] <= row["apparent_bytes"]
    )
    info = json.loads(run(h, "info", "l", "--json").stdout)["result"]
    assert info["specs"] == ["python", "hello"] and info["channels"] == [h["url"]]
    assert {p["name"] for p in info["packages"]} == {"python", "hello"}


def test_export_writes_environment_yml_from_requested_specs_and_it_recreates(ready_home, tmp_path):
    h = ready_home
    assert run(h, "create", "x1", "python", "hello", "-c", h["url"]).returncode == 0
    yml = run(h, "export", "x1").stdout
    assert "- hello" in yml and h["url"] in yml
    f = tmp_path / "environment.yml"
    f.write_text(yml.replace("name: x1", "name: x2"))
    r = run(h, "create", "-f", str(f))
    assert r.returncode == 0, r.stderr
    assert (env_dir(h, "x2") / "conda-meta").is_dir()


def test_lock_file_recreates_the_exact_env_without_solving(ready_home, tmp_path):
    h = ready_home
    assert run(h, "create", "src", "numtool", "hello", "python", "-c", h["url"]).returncode == 0
    lock = tmp_path / "src.lock"
    assert run(h, "export", "src", "--lock", "-o", str(lock)).returncode == 0
    assert "sha256" in lock.read_text()
    # a channel that no longer exists proves nothing is solved from repodata
    r = run(h, "create", "dst", "-f", str(lock))
    assert r.returncode == 0, r.stderr
    names = lambda p: sorted(x.name for x in (p / "conda-meta").glob("*.json"))  # noqa: E731
    assert names(env_dir(h, "src")) == names(env_dir(h, "dst"))


def test_create_by_prefix_anywhere_in_storage(ready_home):
    h = ready_home
    prefix = h["storage"] / "projects" / "my env"
    r = run(h, "create", "-p", str(prefix), "demo-tool", "-c", h["url"])
    assert r.returncode == 0, r.stderr
    assert (prefix / "bin/demo-tool").exists()
    assert str(prefix) in (h["home"] / ".conda/environments.txt").read_text()


def _wheel(dest: Path) -> Path:
    """A real, minimal pure-Python wheel (no network, no build backend)."""
    name = "hpcwheel-1.0-py3-none-any.whl"
    path = dest / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hpcwheel/__init__.py", "VALUE = 'from a wheel'\n")
        z.writestr(
            "hpcwheel-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: hpcwheel\nVersion: 1.0\n",
        )
        z.writestr(
            "hpcwheel-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(
            "hpcwheel-1.0.dist-info/RECORD",
            "hpcwheel/__init__.py,,\nhpcwheel-1.0.dist-info/METADATA,,\nhpcwheel-1.0.dist-info/WHEEL,,\n"
            "hpcwheel-1.0.dist-info/RECORD,,\n",
        )
    return path


def test_environment_yml_pip_section_installs_into_the_prefix_with_uv(ready_home, tmp_path):
    h = ready_home
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    yml = tmp_path / "environment.yml"
    yml.write_text(
        f"name: piped\nchannels:\n  - {h['url']}\ndependencies:\n  - python\n  - pip:\n"
        f"    - --no-index\n    - --find-links {wheels}\n    - hpcwheel==1.0\n"
    )
    r = run(h, "create", "-f", str(yml))
    assert r.returncode == 0, r.stderr
    py = env_dir(h, "piped") / "bin" / "python"
    out = subprocess.run(
        [py, "-c", "import hpcwheel, sys; print(hpcwheel.VALUE, hpcwheel.__file__)"],
        capture_output=True,
        text=True,
    )
    assert out.stdout.startswith("from a wheel " + str(env_dir(h, "piped")))
    assert (h["storage"] / ".cache/uv").is_dir()


@pytest.mark.root("a size-limited tmpfs needs root")
def test_full_filesystem_exits_1_and_leaves_no_partial_env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    chan = tmp_path / "chan"
    url = build_channel(chan, [*demo_packages(), many_files_package("bulky", 5000)])
    with tmpfs(tmp_path / "small", "16m") as storage:
        env = cli_env(home, storage)
        assert hpcenv("setup", "--yes", env=env).returncode == 0
        r = hpcenv("create", "big", "bulky", "-c", url, env=env)
        assert r.returncode == 1, r.stderr
        assert "space" in r.stderr
        envs = storage / ".conda" / "envs"
        assert not (envs / "big").exists()
        assert not [p for p in envs.iterdir()] if envs.exists() else True


def test_engine_solves_cuda_builds_only_with_cuda(demo_channel, tmp_path):
    cpu = engine.solve([demo_channel.url], ["pytorch"], cache_dir=tmp_path, cuda="12.4")
    gpu = engine.solve([demo_channel.url], ["pytorch * *cuda*"], cache_dir=tmp_path, cuda="12.4")
    assert {p.name: p.build for p in cpu.packages}[
        "pytorch"
    ] == "cpu_0"  # the tie ENGINE-NOTES describes
    assert {p.name: p.build for p in gpu.packages}["pytorch"] == "cuda126_0"


def test_both_package_formats_install(demo_channel, tmp_path):
    sol = engine.solve([demo_channel.url], ["hello ==1.0", "python"], cache_dir=tmp_path / "c")
    assert {p.file_name for p in sol.packages if p.name == "hello"} == {"hello-1.0-0.conda"}
    engine.install(sol, tmp_path / "env", cache_dir=tmp_path / "c")
    assert list((tmp_path / "env").glob("lib/python*/site-packages/hello/__init__.py"))


def test_create_prints_one_summary_line_and_the_package_table_only_with_verbose(ready_home):
    h = ready_home
    r = run(h, "create", "quiet1", "numtool", "-c", h["url"])
    assert r.returncode == 0, r.stderr
    assert "numtool" not in r.stdout  # no per-package table: it is the plan of a dry run
    assert f"created quiet1 at {env_dir(h, 'quiet1')}: " in r.stdout
    assert " packages in " in r.stdout
    r = run(h, "-v", "create", "verbose1", "numtool", "-c", h["url"])
    assert r.returncode == 0, r.stderr
    assert "numtool" in r.stdout
