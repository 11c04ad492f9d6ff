"""Every env the user already has (issue 14), as a real non-root user: a conda-made env
registered only in ~/.conda/environments.txt is listed, install and remove keep every package
nobody named, and an environments.txt the user cannot write is refused before anything."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.condafmt import conda_env
from tests.conftest import IS_ROOT, need
from tests.fs import cli_env
from tests.users import chown_tree, ensure_users, hpcenv_as, readable_copy

USER = "hpcalice"


def names(prefix: Path) -> set[str]:
    return {json.loads(p.read_text())["name"] for p in (prefix / "conda-meta").glob("*.json")}


@pytest.fixture
def alice(demo_channel):
    need("root", IS_ROOT, "running as another user needs root")
    ensure_users()
    base = Path(tempfile.mkdtemp(prefix="hpcenv-foreign-user-"))
    try:
        base.chmod(0o755)
        url = readable_copy(demo_channel.path, base / "channel").as_uri()
        home, storage = base / "home", base / "storage"
        (home / ".conda").mkdir(parents=True)
        storage.mkdir()
        prefix = storage / "mambaenv"  # `mamba create -p $global_storage/mambaenv ...`
        conda_env(prefix, url, ["python", "hello", "demo-tool"], base / "rcache")
        (home / ".conda" / "environments.txt").write_text(f"{prefix}\n")
        chown_tree(home, USER)
        chown_tree(storage, USER)
        env = cli_env(home, storage)
        r = hpcenv_as(USER, "setup", "--yes", env=env)
        assert r.returncode == 0, r.stderr
        yield {"env": env, "home": home, "storage": storage, "prefix": prefix, "url": url}
    finally:
        shutil.rmtree(base)


def test_non_root_user_sees_a_conda_env_and_install_and_remove_keep_unnamed_packages(alice):
    a = alice
    listed = hpcenv_as(USER, "list", "--json", env=a["env"])
    assert listed.returncode == 0, listed.stderr
    assert str(a["prefix"]) in {e["prefix"] for e in json.loads(listed.stdout)["result"]}
    r = hpcenv_as(USER, "install", "-p", str(a["prefix"]), "numtool", "-c", a["url"], env=a["env"])
    assert r.returncode == 0, r.stderr
    assert names(a["prefix"]) == {"python", "hello", "demo-tool", "numtool", "libnum"}
    r = hpcenv_as(USER, "remove", "-p", str(a["prefix"]), "numtool", "--yes", env=a["env"])
    assert r.returncode == 0, r.stderr
    assert names(a["prefix"]) == {"python", "hello", "demo-tool"}
    run = hpcenv_as(USER, "run", "-p", str(a["prefix"]), "--", "demo-tool", env=a["env"])
    assert run.returncode == 0 and "demo-tool 1.0" in run.stdout, run.stderr


def test_create_refuses_an_environments_txt_the_user_cannot_write_and_makes_nothing(alice):
    a = alice
    txt = a["home"] / ".conda" / "environments.txt"
    os.chown(txt, 0, 0)  # left behind by an admin's `sudo conda ...`
    txt.chmod(0o644)
    before = txt.read_bytes()
    r = hpcenv_as(USER, "create", "newenv", "hello", "-c", a["url"], env=a["env"])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(txt) in lines[0] and "not writable" in lines[0], r.stderr
    assert not (a["home"] / ".conda" / "envs" / "newenv").exists()
    assert txt.read_bytes() == before
