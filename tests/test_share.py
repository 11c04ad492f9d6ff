"""Shared group environments with real Unix users and groups (root only: useradd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from hpcenv import site
from hpcenv.errors import RefusedError
from tests.conftest import IS_ROOT, run_as_user

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="creating users alice, bob, carol needs root")


def _ensure(cmd: list[str]) -> None:
    subprocess.run(cmd, check=False, capture_output=True)


@pytest.fixture(scope="module")
def users():
    _ensure(["groupadd", "hpcenvlab"])
    for user in ("hpcalice", "hpcbob", "hpccarol"):
        _ensure(["useradd", "-M", "-N", "-s", "/bin/sh", user])
    _ensure(["usermod", "-aG", "hpcenvlab", "hpcalice"])
    _ensure(["usermod", "-aG", "hpcenvlab", "hpcbob"])
    return "hpcalice", "hpcbob", "hpccarol"


@pytest.fixture
def world(users):
    """alice's storage with one env; a shared root the site owns (sticky, like /tmp)."""
    import pwd

    base = Path(tempfile.mkdtemp(prefix="hpcenv-share-"))
    base.chmod(0o755)
    alice = pwd.getpwnam("hpcalice")
    storage = base / "alice-storage"
    prefix = storage / ".conda" / "envs" / "proj"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "conda-meta").mkdir()
    (prefix / "etc" / "hpcenv").mkdir(parents=True)
    tool = prefix / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool-ran\n")
    tool.chmod(0o755)
    (prefix / "conda-meta" / "history").write_text("")
    for dirpath, _dirnames, filenames in os.walk(storage):
        for p in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            os.chown(p, alice.pw_uid, alice.pw_gid)
    storage.chmod(0o700)
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    yield {"prefix": prefix, "shared": shared, "storage": storage}
    shutil.rmtree(base)


def _run_tool(prefix: Path) -> str:
    return subprocess.run(
        [str(prefix / "bin" / "tool")], capture_output=True, text=True, check=True
    ).stdout


def _can_write(prefix: Path) -> bool:
    try:
        (prefix / "bin" / "planted").write_text("x")
    except PermissionError:
        return False
    return True


def _can_list(prefix: Path) -> bool:
    try:
        os.listdir(prefix)
    except PermissionError:
        return False
    return True


def test_group_member_runs_a_shared_env_but_cannot_change_it(world):
    prefix = world["prefix"]
    report = run_as_user(
        "hpcalice", site.share, prefix, "proj", "hpcenvlab", shared_root=world["shared"]
    )
    assert report.entry and Path(report.entry).is_file()
    assert run_as_user("hpcbob", _run_tool, prefix) == "tool-ran\n"
    assert run_as_user("hpcbob", _can_write, prefix) is False
    run_as_user("hpcbob", site.check_trusted, prefix)  # trusted: no exception
    st = os.stat(prefix / "bin")
    assert st.st_mode & 0o002 == 0 and st.st_mode & 0o2000  # never world-writable; setgid


def test_non_member_cannot_read_a_shared_env(world):
    prefix = world["prefix"]
    run_as_user("hpcalice", site.share, prefix, "proj", "hpcenvlab", shared_root=world["shared"])
    assert run_as_user("hpccarol", _can_list, prefix) is False


def test_shared_env_is_listed_for_members_only(world):
    run_as_user(
        "hpcalice", site.share, world["prefix"], "proj", "hpcenvlab", shared_root=world["shared"]
    )
    bob_sees = run_as_user("hpcbob", site.shared_envs, world["shared"])
    carol_sees = run_as_user("hpccarol", site.shared_envs, world["shared"])
    assert [(e.name, e.owner, e.group) for e in bob_sees] == [("proj", "hpcalice", "hpcenvlab")]
    assert carol_sees == []


def test_world_writable_env_of_another_user_is_refused(world):
    prefix = world["prefix"]
    run_as_user("hpcalice", site.share, prefix, "proj", "hpcenvlab", shared_root=world["shared"])
    (prefix / "bin").chmod(0o2777)
    with pytest.raises(RefusedError, match="world-writable"):
        run_as_user("hpcbob", site.check_trusted, prefix)


def test_group_writable_env_is_refused_unless_shared_group_writable(world):
    prefix = world["prefix"]
    run_as_user("hpcalice", site.share, prefix, "proj", "hpcenvlab", shared_root=world["shared"])
    (prefix / "bin").chmod(0o2775)
    with pytest.raises(RefusedError, match="group-writable"):
        run_as_user("hpcbob", site.check_trusted, prefix)
    run_as_user(
        "hpcalice",
        site.share,
        prefix,
        "proj",
        "hpcenvlab",
        group_writable=True,
        shared_root=world["shared"],
    )
    run_as_user("hpcbob", site.check_trusted, prefix)
    assert run_as_user("hpcbob", _can_write, prefix) is True


def test_sharing_with_a_group_you_are_not_in_is_refused(world):
    with pytest.raises(RefusedError, match="not a member"):
        run_as_user("hpccarol", site.share, world["prefix"], "proj", "hpcenvlab")


def test_share_command_registers_the_env_for_hpcenv_list(ready_home, users, tmp_path):
    import json

    from tests.fs import hpcenv

    h = ready_home
    shared = tmp_path / "shared"
    shared.mkdir()
    site_conf = Path(h["env"]["HPCENV_SITE_CONFIG"])
    site_conf.write_text(f'shared_root = "{shared}"\n')
    env = h["env"]
    assert hpcenv("create", "labenv", "demo-tool", "-c", h["url"], env=env).returncode == 0
    r = hpcenv("share", "labenv", "--group", "hpcenvlab", "--json", env=env)
    assert r.returncode == 0, r.stderr
    entry = Path(json.loads(r.stdout)["result"]["entry"])
    assert json.loads(entry.read_text())["group"] == "hpcenvlab"
    prefix = h["home"] / ".conda/envs/labenv"
    assert os.stat(prefix / "bin").st_mode & 0o7777 == 0o2750
    bad = hpcenv("share", "labenv", "--group", "no-such-group-xyz", env=env)
    assert bad.returncode == 2 and "no such group" in bad.stderr
