"""Every env the user already has (issue 14): envs made by a lock file, by a plain py-rattler
script and by conda (its record and history formats) are found, listed with their maker,
and `install`/`remove` never drop a package nobody named. Real engine, real channel."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpcenv.channel import PackageRecipe, build_channel, native_subdir
from tests.condafmt import conda_env, rattler_env
from tests.fs import hpcenv_in, hpcenv_ok


def env_dir(h, name: str) -> Path:
    return h["home"] / ".conda" / "envs" / name


def names(prefix: Path) -> set[str]:
    return {json.loads(p.read_text())["name"] for p in (prefix / "conda-meta").glob("*.json")}


def versions(prefix: Path) -> dict[str, str]:
    out = {}
    for p in (prefix / "conda-meta").glob("*.json"):
        data = json.loads(p.read_text())
        out[data["name"]] = data["version"]
    return out


def register(h, prefix: Path) -> None:
    txt = h["home"] / ".conda" / "environments.txt"
    with open(txt, "a") as f:
        f.write(f"{prefix}\n")


@pytest.fixture(scope="session")
def lib_channel(tmp_path_factory):
    """app needs lib (2.0 is newest); tool needs lib <2; plugin needs app."""
    path = tmp_path_factory.mktemp("lib-channel")
    return build_channel(
        path,
        [
            PackageRecipe("lib", "1.0", files={"lib/lib.txt": "1\n"}),
            PackageRecipe("lib", "2.0", files={"lib/lib.txt": "2\n"}),
            PackageRecipe("app", "1.0", depends=("lib >=1",), files={"share/app.txt": "a\n"}),
            PackageRecipe("tool", "1.0", depends=("lib <2",), files={"share/tool.txt": "t\n"}),
            PackageRecipe("plugin", "1.0", depends=("app",), files={"share/plugin.txt": "p\n"}),
            PackageRecipe("extra", "1.0", files={"share/extra.txt": "e\n"}),
        ],
    )


# ----------------------------------------------------------------- the reproductions


def test_install_into_a_lock_created_env_never_removes_an_unnamed_package(ready_home, tmp_path):
    h = ready_home
    hpcenv_ok(h, "create", "src", "python", "demo-tool", "hello", "-c", h["url"])
    lock = tmp_path / "myenv.lock"
    hpcenv_ok(h, "export", "src", "--lock", "-o", str(lock))
    hpcenv_ok(h, "create", "copy2", "-f", str(lock))
    dry = hpcenv_ok(h, "install", "copy2", "numtool", "--dry-run")
    real = hpcenv_ok(h, "install", "copy2", "numtool")
    assert names(env_dir(h, "copy2")) == {"python", "demo-tool", "hello", "numtool", "libnum"}
    assert "install: copy2: +libnum 1.0, +numtool 1.0" in dry.stdout
    assert "install: copy2: +libnum 1.0, +numtool 1.0" in real.stdout
    info = json.loads(hpcenv_ok(h, "info", "copy2", "--json").stdout)["result"]
    assert info["channels"] == [h["url"]] and info["made_by"] == "lock"


def test_lock_then_create_then_export_then_create_gives_the_same_packages(ready_home, tmp_path):
    h = ready_home
    hpcenv_ok(h, "create", "src", "python", "hello", "numtool", "-c", h["url"])
    lock = tmp_path / "src.lock"
    hpcenv_ok(h, "export", "src", "--lock", "-o", str(lock))
    hpcenv_ok(h, "create", "fromlock", "-f", str(lock))
    yml = hpcenv_ok(h, "export", "fromlock").stdout
    assert "dependencies: []" not in yml and h["url"] in yml
    f = tmp_path / "again.yml"
    f.write_text(yml.replace("name: fromlock", "name: again"))
    hpcenv_ok(h, "create", "-f", str(f))
    assert versions(env_dir(h, "again")) == versions(env_dir(h, "src"))


def test_install_into_a_prefix_made_by_a_plain_rattler_script_keeps_its_packages(ready_home):
    h = ready_home
    prefix = h["storage"] / "raw"
    rattler_env(prefix, h["url"], ["python", "hello", "demo-tool"], h["storage"] / "rcache")
    r = hpcenv_ok(h, "install", "-p", str(prefix), "numtool")
    assert names(prefix) == {"python", "hello", "demo-tool", "numtool", "libnum"}
    assert "-" not in r.stdout.split(":", 2)[2].replace("demo-tool", "")
    listed = json.loads(hpcenv_ok(h, "list", "--json").stdout)["result"]
    row = next(e for e in listed if e["prefix"] == str(prefix))
    assert row["made_by"] == "unknown"  # no history, no env.json: we cannot say who made it


@pytest.mark.parametrize("history", ["specs", "cmd", None])
def test_install_into_a_conda_env_keeps_every_package_and_reads_what_was_requested(
    ready_home, history
):
    h = ready_home
    prefix = h["storage"] / "condaenv"
    conda_env(prefix, h["url"], ["python", "hello"], h["storage"] / "ccache", history=history)
    register(h, prefix)
    info = json.loads(hpcenv_ok(h, "info", str(prefix), "--json").stdout)["result"]
    assert sorted(info["specs"]) == ["hello", "python"]
    assert info["specs_from"] == {"specs": "history", "cmd": "history", None: "records"}[history]
    hpcenv_ok(h, "install", "-p", str(prefix), "demo-tool")
    assert names(prefix) == {"python", "hello", "demo-tool"}
    assert (prefix / "bin" / "demo-tool").exists()


def test_remove_of_a_conda_installed_noarch_python_package_unlinks_its_files(ready_home):
    h = ready_home
    prefix = h["storage"] / "condanoarch"
    conda_env(prefix, h["url"], ["python", "hello", "demo-tool"], h["storage"] / "ccache")
    [module] = prefix.glob("lib/python*/site-packages/hello/__init__.py")
    hpcenv_ok(h, "remove", "-p", str(prefix), "hello")
    assert not module.exists()
    assert names(prefix) == {"python", "demo-tool"}


# ----------------------------------------------------------------- discovery


def test_list_shows_every_env_the_user_has_and_who_made_each(ready_home, tmp_path):
    h = ready_home
    hpcenv_ok(h, "create", "mine", "demo-tool", "-c", h["url"])
    lock = tmp_path / "m.lock"
    hpcenv_ok(h, "export", "mine", "--lock", "-o", str(lock))
    hpcenv_ok(h, "create", "locked", "-f", str(lock))
    outside = h["storage"] / "elsewhere" / "mambaenv"  # registered as mamba does
    conda_env(outside, h["url"], ["demo-tool"], h["storage"] / "ccache")
    hist = outside / "conda-meta" / "history"
    hist.write_text(hist.read_text().replace("/opt/conda/bin/conda", "/opt/mf/bin/mamba"))
    register(h, outside)
    condarc_dir = h["storage"] / "conda-envs"  # envs_dirs from ~/.condarc
    conda_env(condarc_dir / "fromrc", h["url"], ["hello", "python"], h["storage"] / "ccache")
    (h["home"] / ".condarc").write_text(f"envs_dirs:\n  - {condarc_dir}\n")
    envs_path = h["storage"] / "envs-path"  # $CONDA_ENVS_PATH
    rattler_env(envs_path / "scripted", h["url"], ["demo-tool"], h["storage"] / "rcache")
    r = hpcenv_in(h, "list", "--json", CONDA_ENVS_PATH=str(envs_path))
    rows = {e["prefix"]: e for e in json.loads(r.stdout)["result"]}
    assert rows[str(env_dir(h, "mine"))]["made_by"] == "hpcenv"
    assert rows[str(env_dir(h, "locked"))]["made_by"] == "lock"
    assert rows[str(outside)]["made_by"] == "mamba"
    assert rows[str(condarc_dir / "fromrc")]["made_by"] == "conda"
    assert rows[str(condarc_dir / "fromrc")]["name"] == "fromrc"
    assert rows[str(envs_path / "scripted")]["made_by"] == "unknown"
    # a name in conda's envs dirs resolves as in conda
    info = hpcenv_in(h, "info", "scripted", "--json", CONDA_ENVS_PATH=str(envs_path))
    assert json.loads(info.stdout)["result"]["prefix"] == str(envs_path / "scripted")


def test_usage_doctor_and_clean_see_an_env_listed_only_in_environments_txt(ready_home):
    h = ready_home
    prefix = h["storage"] / "elsewhere" / "c1"
    cache = h["storage"] / ".cache" / "rattler"  # links into hpcenv's own package cache
    rattler_env(prefix, h["url"], ["demo-tool"], cache)
    register(h, prefix)
    usage = json.loads(hpcenv_ok(h, "usage", "--json").stdout)["result"]
    assert str(prefix) in {e["path"] for e in usage["envs"]}
    doctor = json.loads(hpcenv_in(h, "doctor", "--json").stdout)["result"]
    registry = next(c for c in doctor["checks"] if c["name"] == "env-registry")
    assert str(prefix) not in registry["detail"]  # it exists and is registered
    plan = json.loads(hpcenv_ok(h, "clean", "--dry-run", "--json").stdout)["result"]
    assert not [i for i in plan["items"] if "demo-tool" in i["path"] and i["kind"] == "package"]


# ----------------------------------------------------------------- the rule


def test_install_that_would_downgrade_an_unnamed_package_refuses_without_yes(
    ready_home, lib_channel
):
    h = ready_home
    hpcenv_ok(h, "create", "d", "app", "-c", lib_channel)
    assert versions(env_dir(h, "d"))["lib"] == "2.0"
    before = sorted(os.listdir(env_dir(h, "d") / "conda-meta"))
    refused = hpcenv_in(h, "install", "d", "tool")
    assert refused.returncode == 2
    assert "lib 2.0 → 1.0" in refused.stderr and "--yes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(env_dir(h, "d") / "conda-meta")) == before
    dry = hpcenv_ok(h, "install", "d", "tool", "--dry-run")
    real = hpcenv_ok(h, "install", "d", "tool", "--yes")
    summary = "install: d: +tool 1.0, lib 2.0 → 1.0"
    assert summary in dry.stdout and summary in real.stdout
    assert "keeping every other package at its installed version" in dry.stdout
    assert versions(env_dir(h, "d")) == {"app": "1.0", "lib": "1.0", "tool": "1.0"}


def test_dry_run_prints_exactly_what_the_real_run_does(ready_home, lib_channel):
    h = ready_home
    hpcenv_ok(h, "create", "p", "plugin", "extra", "-c", lib_channel)
    dry = hpcenv_ok(h, "remove", "p", "app", "--dry-run")
    assert "remove: p: -app 1.0, -lib 2.0, -plugin 1.0" in dry.stdout
    assert "not named" in dry.stdout  # plugin depends on app: it must go too
    refused = hpcenv_in(h, "remove", "p", "app")
    assert refused.returncode == 2 and "-plugin 1.0" in refused.stderr
    assert names(env_dir(h, "p")) == {"plugin", "app", "lib", "extra"}
    real = hpcenv_ok(h, "remove", "p", "app", "--yes")
    assert "remove: p: -app 1.0, -lib 2.0, -plugin 1.0" in real.stdout
    assert names(env_dir(h, "p")) == {"extra"}


def test_remove_keeps_a_dependency_another_kept_package_needs(ready_home, lib_channel):
    h = ready_home
    hpcenv_ok(h, "create", "k", "app", "tool", "-c", lib_channel)  # lib 1.0 serves both
    r = hpcenv_ok(h, "remove", "k", "tool")
    assert r.stdout.strip().endswith("remove: k: -tool 1.0")
    assert names(env_dir(h, "k")) == {"app", "lib"}


# ----------------------------------------------------------------- conda's formats, written


def _conda_requests(history: str) -> dict[str, str]:
    """conda's History.get_requested_specs_map, on the text."""
    spec_map: dict[str, str] = {}
    for block in history.split("==> ")[1:]:
        if "# cmd:" not in block:
            continue
        for line in block.splitlines():
            m = re.match(r"#\s*(\w+)\s*specs:\s*(.+)?", line)
            if not m:
                continue
            specs = ast.literal_eval(m.group(2))
            for spec in specs:
                key = re.split(r"[ =<>!~\[]", spec)[0]
                if m.group(1) in ("remove", "uninstall"):
                    spec_map.pop(key, None)
                else:
                    spec_map[key] = spec
    return spec_map


def test_every_change_writes_a_conda_history_entry_and_requested_spec(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "w", "python", "demo-tool", "-c", h["url"])
    hpcenv_ok(h, "install", "w", "numtool", "hello")
    hpcenv_ok(h, "remove", "w", "demo-tool")
    prefix = env_dir(h, "w")
    history = (prefix / "conda-meta" / "history").read_text()
    assert "# update specs: ['python', 'demo-tool']" in history
    assert "# update specs: ['numtool', 'hello']" in history
    assert "# remove specs: ['demo-tool']" in history
    subdir = re.escape(native_subdir())
    assert re.search(rf"^\+.*/{subdir}::numtool-1\.0-0$", history, re.M)
    assert re.search(rf"^-.*/{subdir}::demo-tool-1\.0-0$", history, re.M)
    assert _conda_requests(history) == {"python": "python", "numtool": "numtool", "hello": "hello"}
    [record] = (prefix / "conda-meta").glob("numtool-*.json")
    assert json.loads(record.read_text())["requested_spec"] == "numtool"


# ----------------------------------------------------------------- conda's formats, read


def test_info_and_export_lock_name_the_channel_conda_installed_from(ready_home, tmp_path):
    h = ready_home
    prefix = h["storage"] / "cinfo"
    conda_env(prefix, h["url"], ["demo-tool"], h["storage"] / "ccache")
    info = json.loads(hpcenv_ok(h, "info", str(prefix), "--json").stdout)["result"]
    channel_name = h["url"].rstrip("/").rsplit("/", 1)[-1]
    assert {p["channel"] for p in info["packages"]} == {channel_name}
    lock = tmp_path / "c.lock"
    hpcenv_ok(h, "export", str(prefix), "--lock", "-o", str(lock))
    text = lock.read_text()
    assert h["url"] in text and "conda-forge" not in text


def test_a_relative_channel_is_stored_as_an_absolute_url(ready_home, demo_channel, tmp_path):
    h = ready_home
    rel = "./" + os.path.relpath(demo_channel.path, tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "hpcenv", "create", "rel", "demo-tool", "-c", rel],
        env=h["env"], cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    info = json.loads(hpcenv_ok(h, "info", "rel", "--json").stdout)["result"]
    assert info["channels"] == [demo_channel.path.resolve().as_uri()]
    hpcenv_ok(h, "install", "rel", "hello")  # from another directory


def test_export_keeps_the_cuda_choice_so_a_recreated_env_gets_cuda_builds(ready_home, tmp_path):
    h = ready_home
    hpcenv_ok(h, "create", "g", "pytorch", "--gpu", "--cuda", "12.4", "-c", h["url"])
    yml = hpcenv_ok(h, "export", "g").stdout
    f = tmp_path / "g.yml"
    f.write_text(yml.replace("name: g", "name: g2"))
    hpcenv_ok(h, "create", "-f", str(f))
    [record] = (env_dir(h, "g2") / "conda-meta").glob("pytorch-*.json")
    assert json.loads(record.read_text())["build"] == "cuda126_0"


# ----------------------------------------------------------------- conda habits


def test_name_and_prefix_options_work_as_in_conda(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "-n", "nn", "demo-tool", "-c", h["url"])
    hpcenv_ok(h, "install", "-n", "nn", "hello", "python")
    prefix = str(env_dir(h, "nn"))
    hpcenv_ok(h, "remove", "-p", prefix, "hello")
    assert (
        json.loads(hpcenv_ok(h, "info", "-n", "nn", "--json").stdout)["result"]["prefix"] == prefix
    )
    assert "demo-tool" in hpcenv_ok(h, "export", "-p", prefix).stdout
    assert "python" in hpcenv_ok(h, "list", "-n", "nn").stdout
    hpcenv_ok(h, "remove", "-n", "nn", "--yes")
    assert not env_dir(h, "nn").exists()


def test_install_channel_option_adds_the_channel_to_the_env(ready_home, lib_channel):
    h = ready_home
    hpcenv_ok(h, "create", "ch", "demo-tool", "-c", h["url"])
    hpcenv_ok(h, "install", "ch", "extra", "-c", lib_channel)
    info = json.loads(hpcenv_ok(h, "info", "ch", "--json").stdout)["result"]
    assert info["channels"] == [h["url"], lib_channel]
    assert names(env_dir(h, "ch")) == {"demo-tool", "extra"}


def test_install_without_an_env_acts_on_the_active_one_and_says_so(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "act", "demo-tool", "-c", h["url"])
    prefix = str(env_dir(h, "act"))
    r = hpcenv_ok(h, "install", "numtool", CONDA_PREFIX=prefix)
    assert f"using the active environment {prefix}" in r.stderr
    assert "numtool" in names(env_dir(h, "act"))
    none = hpcenv_in(h, "install", "numtool")
    assert none.returncode == 2 and "no environment 'numtool'" in none.stderr


def test_create_with_no_specs_makes_an_empty_registered_env(ready_home):
    h = ready_home
    prefix = h["storage"] / "empty"
    hpcenv_ok(h, "create", "-p", str(prefix), "-c", h["url"])
    assert (prefix / "conda-meta").is_dir() and names(prefix) == set()
    assert str(prefix) in (h["home"] / ".conda" / "environments.txt").read_text()
    hpcenv_ok(h, "install", "-p", str(prefix), "demo-tool")
    assert names(prefix) == {"demo-tool"}


def test_commands_that_use_an_env_take_name_and_prefix_options(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "opt", "demo-tool", "-c", h["url"])
    prefix = str(env_dir(h, "opt"))
    assert hpcenv_ok(h, "run", "-n", "opt", "--", "demo-tool").stdout.startswith("demo-tool 1.0")
    assert hpcenv_ok(h, "run", "-p", prefix, "--", "demo-tool").stdout.startswith("demo-tool")
    script = hpcenv_ok(h, "jobscript", "-n", "opt", "--", "python", "x.py").stdout
    assert f"{prefix}/etc/hpcenv/activate.sh" in script and "python x.py" in script
    assert "--prefix" in hpcenv_ok(h, "jobscript", "--help").stdout  # -p is the partition there
    assert prefix in hpcenv_ok(h, "activate", "-n", "opt", "--shell", "bash").stdout
    assert prefix in hpcenv_ok(h, "modulefile", "-p", prefix).stdout
    both = hpcenv_in(h, "info", "-n", "opt", "-p", prefix)
    assert both.returncode == 2 and "not both" in both.stderr
