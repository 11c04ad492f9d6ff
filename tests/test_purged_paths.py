"""The site setting `purged_paths` (issue 21): read and validated like every key; `create`
warns when an env would live where the site deletes old files; `doctor` lists such envs
and checks every env's files within a bounded time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpcenv.errors import ConfigError
from hpcenv.purge import PurgedPath
from hpcenv.settings import load_settings
from tests.fs import hpcenv_in, hpcenv_ok


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "HPCENV_SITE_CONFIG": str(tmp_path / "site.toml"), **extra}


def test_purged_paths_are_read_as_strings_or_tables_from_config_and_environment(tmp_path):
    (tmp_path / "site.toml").write_text(
        'purged_paths = ["/scratch:30", {path = "/work/tmp/", days = 7}]\n'
    )
    s = load_settings(environ=_env(tmp_path))
    assert s.purged_paths == (PurgedPath(Path("/scratch"), 30), PurgedPath(Path("/work/tmp"), 7))
    s = load_settings(environ=_env(tmp_path, HPCENV_PURGED_PATHS="/lustre/scratch:14, /w:1"))
    assert [(str(p.path), p.days) for p in s.purged_paths] == [("/lustre/scratch", 14), ("/w", 1)]
    assert s.purged_paths[0].holds(Path("/lustre/scratch/me/envs/x"))
    assert not s.purged_paths[0].holds(Path("/lustre/scratch2/x"))


@pytest.mark.parametrize(
    "value, why",
    [
        ('["scratch:30"]', "absolute paths ('scratch' is relative)"),
        ('["/scratch"]', 'has no ":DAYS"'),
        ('["/scratch:0"]', "days a whole number of at least 1"),
        ('[{path = "/scratch"}]', "tables"),
        ('"/scratch:30"', "tables"),
        ("30", "tables"),
    ],
)
def test_bad_purged_paths_are_refused_naming_the_key_and_the_line(tmp_path, value, why):
    (tmp_path / "site.toml").write_text(f"channels = ['x']\npurged_paths = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(environ=_env(tmp_path))
    assert "line 2: key 'purged_paths' must be a list of" in err.value.message
    assert why in err.value.message


def test_create_where_the_site_purges_warns_and_says_what_to_do(ready_home):
    h = ready_home
    scratch = h["root"] / "scratch"
    r = hpcenv_in(
        h, "create", "-p", str(scratch / "env"), "demo-tool", "-c", h["url"], "--json",
        HPCENV_PURGED_PATHS=f"{scratch}:30",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    [warning] = json.loads(r.stdout)["result"]["warnings"]
    assert f"is under {scratch}, where the site deletes files not used for 30 days" in warning
    r = hpcenv_in(h, "create", "ok", "demo-tool", "-c", h["url"], "--json",
                  HPCENV_PURGED_PATHS=f"{scratch}:30")  # fmt: skip
    assert json.loads(r.stdout)["result"]["warnings"] == []


def test_doctor_lists_envs_under_purged_paths_and_the_envs_that_lost_files(ready_home):
    h = ready_home
    scratch = h["root"] / "scratch"
    purged = {"HPCENV_PURGED_PATHS": f"{scratch}:30"}
    hpcenv_ok(h, "create", "-p", str(scratch / "env"), "demo-tool", "-c", h["url"], **purged)
    hpcenv_ok(h, "create", "demo", "numtool", "-c", h["url"])
    os.unlink(h["storage"] / ".conda" / "envs" / "demo" / "lib" / "libnum.txt")
    r = hpcenv_in(h, "doctor", "--json", **purged)
    checks = {c["name"]: c for c in json.loads(r.stdout)["result"]["checks"]}
    assert r.returncode == 1
    assert checks["purged-paths"]["status"] == "WARN"
    assert f"{scratch / 'env'} ({scratch}: 30 days)" in checks["purged-paths"]["detail"]
    files = checks["env-files"]
    assert files["status"] == "FAIL" and files["detail"] == "demo: libnum lost files"
    assert files["fix"] == "hpcenv repair demo"
    hpcenv_ok(h, "repair", "demo")
    r = hpcenv_in(h, "doctor", "--json", **purged)
    checks = {c["name"]: c for c in json.loads(r.stdout)["result"]["checks"]}
    assert checks["env-files"]["status"] == "OK"


def test_doctors_check_of_the_envs_says_when_its_time_ran_out(ready_home):
    from hpcenv.doctor.files import env_files
    from hpcenv.storage import layout_from

    h = ready_home
    hpcenv_ok(h, "create", "demo", "numtool", "-c", h["url"])
    layout = layout_from(load_settings(environ=h["env"]))
    prefix = h["storage"] / ".conda" / "envs" / "demo"
    check = env_files(layout, {prefix: "demo"}, seconds=0)
    assert check.status.value == "WARN"
    assert check.detail.startswith("stopped after 0 s: 0 of 1 envs checked")
    assert check.fix == "hpcenv verify --all"
