"""`hpcenv repair` (issue 21): the packages that lost files are installed again, same builds,
and the env is byte for byte what `create` made, also after a kill -9 at any step; a damaged
cached copy is extracted again, a lost one downloaded again, and a package nobody has any
more stops the repair with nothing changed. Real engine, real channel, real CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hpcenv.channel import build_channel, demo_packages
from tests.fs import hpcenv_in, hpcenv_ok, snapshot

SPECS = ("python", "demo-tool", "hello", "numtool")


def env_dir(h, name: str) -> Path:
    return h["storage"] / ".conda" / "envs" / name


def cache_entry(h, stem: str) -> Path:
    return h["storage"] / ".cache" / "rattler" / "pkgs" / stem


def site(prefix: Path) -> Path:
    [found] = prefix.glob("lib/python*/site-packages")
    return found


def damage(prefix: Path) -> None:
    """Four packages, four kinds of loss."""
    (prefix / "share" / "demo-tool" / "data.txt").unlink()
    os.truncate(prefix / "lib" / "libnum.txt", 3)  # the cache's inode: its copy too
    (prefix / "bin" / "numtool").chmod(0o644)  # the cache's inode as well
    (site(prefix) / "hello" / "__init__.py").unlink()


def is_whole(h, name: str) -> bool:
    r = hpcenv_in(h, "verify", name, "--json")
    return r.returncode == 0 and not json.loads(r.stdout)["result"]["broken"]


@pytest.fixture
def demo(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "demo", *SPECS, "-c", h["url"])
    prefix = env_dir(h, "demo")
    return {**h, "prefix": prefix, "made": snapshot(prefix)}


def test_repair_restores_the_env_byte_for_byte(demo):
    h, prefix = demo, demo["prefix"]
    damage(prefix)
    r = hpcenv_ok(h, "repair", "demo")
    assert "repaired 4 package(s)" in r.stdout
    assert snapshot(prefix) == demo["made"]
    assert is_whole(h, "demo")
    assert hpcenv_ok(h, "run", "demo", "--", "numtool").returncode == 0
    assert "nothing to repair" in hpcenv_ok(h, "repair", "demo").stdout


def test_repair_dry_run_prints_what_the_real_run_does_and_changes_nothing(demo):
    h, prefix = demo, demo["prefix"]
    damage(prefix)
    before = snapshot(prefix, h["storage"] / ".cache")
    dry = hpcenv_ok(h, "repair", "demo", "--dry-run").stdout.splitlines()
    assert snapshot(prefix, h["storage"] / ".cache") == before
    real = hpcenv_ok(h, "repair", "demo").stdout.splitlines()
    assert dry[0] == "would repair 4 package(s) in demo:" and real[0].startswith("repaired 4")
    assert dry[1:5] == real[1:5]
    assert any("numtool 1.0 (0) [conda]: extract again from file://" in x for x in dry)
    assert any("demo-tool 1.0 (0) [conda]: link again from the package cache" in x for x in dry)


def ticks_of(h, *args: str) -> int:
    counter = h["root"] / "ticks"
    counter.unlink(missing_ok=True)
    hpcenv_ok(h, *args, _HPCENV_TEST_TICKS_FILE=str(counter))
    return int(counter.read_text())


def test_repair_killed_at_every_step_is_finished_by_running_it_again(demo):
    h, prefix = demo, demo["prefix"]
    damage(prefix)
    n = ticks_of(h, "repair", "demo")
    assert n >= 6 and snapshot(prefix) == demo["made"]
    for k in range(1, n + 1):
        damage(prefix)
        r = hpcenv_in(h, "repair", "demo", _HPCENV_TEST_KILL_AFTER=str(k))
        assert r.returncode == -9, (k, r.stderr)
        if k < n:  # the journal says what is left to do; verify says so too
            assert "an interrupted repair" in hpcenv_in(h, "verify", "demo").stdout, k
        hpcenv_ok(h, "repair", "demo")
        assert snapshot(prefix) == demo["made"], k
        assert not list((h["storage"] / ".hpcenv" / "journal").glob("repair-*.jsonl"))
        assert not (h["storage"] / ".hpcenv" / "repair").exists() or not any(
            (h["storage"] / ".hpcenv" / "repair").iterdir()
        )


def test_repair_finishes_when_killed_while_rattler_had_unlinked_a_package(demo):
    """Between rattler's unlink of a package and its link again the record is gone: the
    saved copy of the record says what to link."""
    h, prefix = demo, demo["prefix"]
    damage(prefix)
    counter = h["root"] / "ticks"
    r = hpcenv_in(
        h, "repair", "demo", _HPCENV_TEST_KILL_AFTER="2", _HPCENV_TEST_TICKS_FILE=str(counter)
    )
    assert r.returncode == -9
    journal = next((h["storage"] / ".hpcenv" / "journal").glob("repair-*.jsonl"))
    assert [json.loads(x).get("step") for x in journal.read_text().splitlines()][1:] == [
        "saved",
        "cache",
    ]
    # what rattler leaves when killed in the middle of unlinking demo-tool
    next((prefix / "conda-meta").glob("demo-tool-*.json")).unlink()
    (prefix / "bin" / "demo-tool").unlink()
    hpcenv_ok(h, "repair", "demo")
    assert snapshot(prefix) == demo["made"]


def test_repair_extracts_a_damaged_cached_copy_again(demo):
    h, prefix = demo, demo["prefix"]
    entry = cache_entry(h, "libnum-1.0-0")
    os.truncate(entry / "lib" / "libnum.txt", 0)  # the env's file is the same inode
    r = hpcenv_ok(h, "repair", "demo", "--dry-run")
    assert "the cached copy is damaged: lib/libnum.txt has 0 bytes, not 11" in r.stdout
    hpcenv_ok(h, "repair", "demo")
    assert (entry / "lib" / "libnum.txt").read_text() == "libnum 1.0\n"
    assert snapshot(prefix) == demo["made"]
    trash = list((h["storage"] / ".cache" / "rattler" / ".hpcenv-trash").iterdir())
    assert [t.name.split("-damaged-")[0] for t in trash] == ["libnum-1.0-0"]


def test_repair_downloads_again_what_the_cache_lost(demo):
    h, prefix = demo, demo["prefix"]
    shutil.rmtree(cache_entry(h, "demo-tool-1.0-0"))
    (prefix / "bin" / "demo-tool").unlink()
    r = hpcenv_ok(h, "repair", "demo")
    assert "download again from file://" in r.stdout and "(not in the package cache)" in r.stdout
    assert snapshot(prefix) == demo["made"]
    assert cache_entry(h, "demo-tool-1.0-0").is_dir()


def test_repair_of_a_package_gone_from_cache_and_channel_says_which_and_changes_nothing(
    ready_home, tmp_path
):
    h = ready_home
    url = build_channel(tmp_path / "chan", demo_packages())
    hpcenv_ok(h, "create", "demo", *SPECS, "-c", url)
    prefix = env_dir(h, "demo")
    shutil.rmtree(cache_entry(h, "numtool-1.0-0"))
    (tmp_path / "chan" / "linux-64" / "numtool-1.0-0.tar.bz2").unlink()
    (prefix / "bin" / "numtool").unlink()
    (prefix / "lib" / "libnum.txt").unlink()
    before = snapshot(prefix, h["storage"] / ".cache")
    r = hpcenv_in(h, "repair", "demo")
    assert r.returncode == 1 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert "numtool 1.0 (0) is gone from the package cache and from its channel" in line
    assert "nothing in the env was changed" in line and "hpcenv export demo --lock" in line
    assert snapshot(prefix, h["storage"] / ".cache") == before


def test_repair_of_an_env_made_from_a_lock_names_that_lock(ready_home, tmp_path):
    h = ready_home
    url = build_channel(tmp_path / "chan", demo_packages())
    hpcenv_ok(h, "create", "src", "numtool", "-c", url)
    lock = tmp_path / "src.lock"
    hpcenv_ok(h, "export", "src", "--lock", "-o", str(lock))
    hpcenv_ok(h, "create", "fromlock", "-f", str(lock))
    shutil.rmtree(cache_entry(h, "numtool-1.0-0"))
    (tmp_path / "chan" / "linux-64" / "numtool-1.0-0.tar.bz2").unlink()
    (env_dir(h, "fromlock") / "bin" / "numtool").unlink()
    r = hpcenv_in(h, "repair", "fromlock")
    assert r.returncode == 1 and f"the lock it was made from, {lock}" in r.stderr


def test_repair_moves_a_directory_that_stands_in_a_files_place_aside(demo):
    h, prefix = demo, demo["prefix"]
    tool = prefix / "bin" / "demo-tool"
    tool.unlink()
    tool.mkdir()
    (tool / "mine.txt").write_text("keep me\n")
    r = hpcenv_ok(h, "repair", "demo")
    assert "move bin/demo-tool aside" in r.stdout
    [kept] = (prefix / "etc" / "hpcenv" / "repair-aside").glob("*/bin/demo-tool/mine.txt")
    assert kept.read_text() == "keep me\n"
    shutil.rmtree(prefix / "etc" / "hpcenv" / "repair-aside")
    assert snapshot(prefix) == demo["made"]


def test_repair_installs_again_a_package_whose_record_is_unreadable(demo):
    h, prefix = demo, demo["prefix"]
    record = next((prefix / "conda-meta").glob("libnum-*.json"))
    record.write_text("{ damaged")
    (prefix / "lib" / "libnum.txt").unlink()
    r = hpcenv_ok(h, "repair", "demo")
    assert "libnum 1.0 (0) [conda]: install again from file://" in r.stdout
    assert (prefix / "lib" / "libnum.txt").read_text() == "libnum 1.0\n"
    assert json.loads(record.read_text())["name"] == "libnum"
    assert is_whole(h, "demo")


def test_installed_files_get_a_recent_access_time_and_keep_their_mtime(ready_home):
    """Extracted files keep the archive's times: a purge by access time would delete an
    env made today. An env made from an old cache gets the install's access time."""
    from hpcenv.channel import MTIME

    h = ready_home
    hpcenv_ok(h, "create", "first", "demo-tool", "-c", h["url"])
    old = 1_500_000_000 * 10**9
    cache = h["storage"] / ".cache" / "rattler" / "pkgs" / "demo-tool-1.0-0"
    for dirpath, _dirs, files in os.walk(cache):
        for name in files:
            path = os.path.join(dirpath, name)
            os.utime(path, ns=(old, os.stat(path).st_mtime_ns))
    hpcenv_ok(h, "create", "second", "demo-tool", "-c", h["url"])
    import time

    prefix = env_dir(h, "second")
    for rel in ("bin/demo-tool", "share/demo-tool/data.txt"):
        st = os.stat(prefix / rel)
        assert st.st_mtime == MTIME, rel
        assert time.time() - st.st_atime < 600, rel
    st = os.lstat(prefix / "bin")
    assert time.time() - st.st_atime < 600


@pytest.fixture
def alice(demo_channel):
    """hpcalice with her own 0700 home and storage (set up), the demo channel readable."""
    import tempfile

    from tests.conftest import IS_ROOT, need
    from tests.fs import cli_env
    from tests.users import chown_tree, ensure_users, hpcenv_as, readable_copy

    need("root", IS_ROOT, "running as another user needs root")
    ensure_users()
    base = Path(tempfile.mkdtemp(prefix="hpcenv-repair-"))
    base.chmod(0o755)
    channel = readable_copy(demo_channel.path, base / "channel")
    home, storage = base / "alice" / "home", base / "alice" / "storage"
    home.mkdir(parents=True)
    storage.mkdir()
    chown_tree(base / "alice", "hpcalice")
    env = cli_env(home, storage, HPCENV_SITE_CONFIG=str(base / "none.toml"))

    def run(*args: str):
        return hpcenv_as("hpcalice", *args, env=env)

    assert run("setup", "--yes").returncode == 0
    yield {"run": run, "url": channel.as_uri(), "storage": storage, "env": env}
    shutil.rmtree(base)


def test_a_non_root_user_verifies_and_repairs_her_env_even_a_directory_she_locked(alice):
    from tests.users import as_user

    r = alice["run"]("create", "demo", *SPECS, "-c", alice["url"])
    assert r.returncode == 0, r.stderr
    prefix = alice["storage"] / ".conda" / "envs" / "demo"
    made = snapshot(prefix)
    shell = (
        f"rm {prefix}/bin/numtool && chmod 000 {prefix}/share/demo-tool && "
        f"truncate -s 1 {prefix}/lib/libnum.txt"
    )
    assert as_user("hpcalice", ["sh", "-c", shell], env=alice["env"]).returncode == 0
    r = alice["run"]("verify", "demo", "--json")
    [env] = json.loads(r.stdout)["result"]["envs"]
    bad = {p["name"]: p for p in env["problems"] if p["broken"]}
    assert r.returncode == 1 and set(bad) == {"numtool", "demo-tool", "libnum"}
    assert bad["demo-tool"]["changed"][0]["detail"] == "cannot be checked: Permission denied"
    r = alice["run"]("repair", "demo")
    assert r.returncode == 0, r.stderr
    assert "give share/demo-tool its owner's permissions back" in r.stdout
    assert snapshot(prefix) == made
    assert alice["run"]("verify", "demo").returncode == 0


def test_repair_whose_download_fails_changes_nothing_in_the_env_and_leaves_no_journal(
    ready_home, tmp_path
):
    h = ready_home
    url = build_channel(tmp_path / "chan", demo_packages())
    hpcenv_ok(h, "create", "demo", *SPECS, "-c", url)
    prefix = env_dir(h, "demo")
    shutil.rmtree(cache_entry(h, "numtool-1.0-0"))
    archive = tmp_path / "chan" / "linux-64" / "numtool-1.0-0.tar.bz2"
    archive.write_bytes(archive.read_bytes()[:100])  # there, but not a package any more
    (prefix / "bin" / "numtool").unlink()
    before = snapshot(prefix)
    r = hpcenv_in(h, "repair", "demo")
    assert r.returncode == 1
    [line] = r.stderr.splitlines()
    assert "numtool 1.0 (0) is not in the package cache and cannot be downloaded again" in line
    assert snapshot(prefix) == before
    assert not list((h["storage"] / ".hpcenv" / "journal").glob("repair-*.jsonl"))
    assert "an interrupted repair" not in hpcenv_in(h, "verify", "demo").stdout


def test_repair_says_when_a_package_ships_a_program_without_its_execute_bit(ready_home, tmp_path):
    """verify cannot tell `chmod -x` from an archive that packs a script 0644; repair can:
    what it installed again from a fresh extraction still differs, and it says so."""
    from hpcenv.channel import PackageRecipe

    h = ready_home
    odd = PackageRecipe("oddtool", "1.0", files={"bin/oddtool": "#!/bin/sh\necho odd\n"})
    url = build_channel(tmp_path / "chan", [odd])
    hpcenv_ok(h, "create", "odd", "oddtool", "-c", url)
    assert hpcenv_in(h, "verify", "odd").returncode == 1
    r = hpcenv_ok(h, "repair", "odd")
    assert "oddtool 1.0 (0) still differs from its record after it was installed again" in r.stderr
    assert "bin/oddtool: not executable (mode 0644)" in r.stderr
