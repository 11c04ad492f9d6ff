"""Env operations under kills, races and damaged files (issue 16): a kill at every step of
create, replace and remove leaves the old env or the new one under the name, and the next
command (or the same one again) finishes the job; two creates of one name never delete each
other's env; damaged records and cache entries are named, never skipped; bad
environments.txt files and inputs are refused before anything is built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fs import hpcenv_in, hpcenv_ok, snapshot
from tests.paused import Paused, Started


def env_dir(h, name: str) -> Path:
    return h["home"] / ".conda" / "envs" / name


def leftovers(h) -> list[str]:
    return sorted(
        p.name for p in (h["storage"] / ".conda" / "envs").iterdir() if ".hpcenv-tmp-" in p.name
    )


def registered(h) -> list[str]:
    txt = h["home"] / ".conda" / "environments.txt"
    return txt.read_text().splitlines() if txt.is_file() else []


def holds(prefix: Path, tool: str) -> bool:
    """A complete env with `tool` in it."""
    return (
        (prefix / "conda-meta").is_dir()
        and (prefix / "etc" / "hpcenv" / "env.json").is_file()
        and (prefix / "bin" / tool).is_file()
    )


def ticks_of(h, *args: str, **env: str) -> int:
    """How many steps a full run of the command takes (_HPCENV_TEST_TICKS_FILE)."""
    counter = h["root"] / "ticks"
    hpcenv_ok(h, *args, _HPCENV_TEST_TICKS_FILE=str(counter), **env)
    return int(counter.read_text())


def killed(h, k: int, *args: str, **env: str) -> None:
    r = hpcenv_in(h, *args, _HPCENV_TEST_KILL_AFTER=str(k), **env)
    assert r.returncode == -9, (k, r.returncode, r.stderr)


# ----------------------------------------------------------------- kill windows


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "two-renames"])
def test_replace_killed_at_every_step_keeps_the_old_or_the_new_env(ready_home, exchange):
    h = ready_home
    extra = {} if exchange else {"_HPCENV_TEST_NO_EXCHANGE": "1"}
    hpcenv_ok(h, "create", "probe", "demo-tool", "-c", h["url"])
    n = ticks_of(h, "create", "probe", "numtool", "-c", h["url"], "--force", **extra)
    assert n >= 5
    for k in range(1, n + 1):
        name = f"r{k}"
        prefix = env_dir(h, name)
        hpcenv_ok(h, "create", name, "demo-tool", "-c", h["url"])
        killed(h, k, "create", name, "numtool", "-c", h["url"], "--force", **extra)
        if exchange:  # one atomic swap: the name always holds a whole env
            assert holds(prefix, "demo-tool") or holds(prefix, "numtool"), k
        listed = hpcenv_ok(h, "list")
        assert holds(prefix, "demo-tool") != holds(prefix, "numtool"), (k, listed.stderr)
        assert leftovers(h) == [], (k, listed.stderr)
        assert registered(h).count(str(prefix)) == 1
        assert not list((h["storage"] / ".hpcenv" / "journal").glob("env-*.jsonl"))


def test_create_killed_at_every_step_is_finished_by_running_it_again(ready_home):
    h = ready_home
    n = ticks_of(h, "create", "probe", "demo-tool", "-c", h["url"])
    for k in range(1, n):
        name = f"c{k}"
        prefix = env_dir(h, name)
        killed(h, k, "create", name, "demo-tool", "-c", h["url"])
        assert not os.path.lexists(prefix) or holds(prefix, "demo-tool"), k
        again = hpcenv_in(h, "create", name, "demo-tool", "-c", h["url"])
        assert again.returncode == 0, (k, again.stderr)
        assert holds(prefix, "demo-tool") and registered(h).count(str(prefix)) == 1, k
        assert leftovers(h) == []


def test_remove_killed_at_every_step_is_finished_by_running_it_again(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "probe", "demo-tool", "-c", h["url"])
    n = ticks_of(h, "remove", "probe", "--yes")
    for k in range(1, n):
        name = f"d{k}"
        prefix = env_dir(h, name)
        hpcenv_ok(h, "create", name, "demo-tool", "-c", h["url"])
        killed(h, k, "remove", name, "--yes")
        again = hpcenv_in(h, "remove", name, "--yes")
        assert again.returncode == 0, (k, again.stderr)
        assert not os.path.lexists(prefix) and str(prefix) not in registered(h), k
        assert leftovers(h) == []
        listed = json.loads(hpcenv_ok(h, "list", "--json").stdout)["result"]
        assert all(e["prefix"] != str(prefix) for e in listed)


def test_two_creates_of_one_name_one_wins_and_the_other_exits_2(ready_home):
    h = ready_home
    # the first is held while building, with the lock; the second solves, then waits for it
    first = Paused(["create", "same", "demo-tool", "-c", h["url"]], h["env"], h["root"])
    second = Started(["create", "same", "numtool", "-c", h["url"]], h["env"])
    second.stderr_until("waiting for another hpcenv")
    first.resume()
    done, then = first.finish(), second.finish()
    assert done.returncode == 0, done.stderr
    assert then.returncode == 2 and "already exists" in then.stderr
    assert holds(env_dir(h, "same"), "demo-tool")
    assert not (env_dir(h, "same") / "bin" / "numtool").exists()
    assert leftovers(h) == []


# ----------------------------------------------------------------- symlinks and leftovers


def test_remove_of_a_symlinked_name_removes_the_env_and_the_link(ready_home):
    h = ready_home
    real = h["storage"] / "real" / "lk"
    hpcenv_ok(h, "create", "-p", str(real), "demo-tool", "-c", h["url"])
    env_dir(h, "lk").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(real, env_dir(h, "lk"))
    hpcenv_ok(h, "remove", "lk", "--yes")
    assert not os.path.lexists(env_dir(h, "lk")) and not real.exists()
    assert str(real) not in registered(h)
    assert leftovers(h) == [] and not [p for p in real.parent.iterdir()]
    plan = json.loads(hpcenv_ok(h, "clean", "--dry-run", "--json").stdout)["result"]
    assert not [i for i in plan["items"] if i["kind"] == "leftover"]


def test_a_leftover_link_is_removed_once_and_reported_once(ready_home):
    h = ready_home
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    link = h["storage"] / ".conda" / "envs" / f".x.hpcenv-tmp-rm-{dead}"
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(h["storage"] / "nowhere", link)
    first = json.loads(hpcenv_ok(h, "clean", "--yes", "--json").stdout)["result"]
    assert [i["status"] for i in first["items"] if i["kind"] == "leftover"] == ["removed"]
    assert not os.path.lexists(link)
    second = json.loads(hpcenv_ok(h, "clean", "--dry-run", "--json").stdout)["result"]
    assert not [i for i in second["items"] if i["kind"] == "leftover"]


# ----------------------------------------------------------------- damaged files


def test_a_corrupt_record_is_named_with_its_fix_and_reinstalling_repairs_it(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "rec", "python", "demo-tool", "hello", "-c", h["url"])
    record = env_dir(h, "rec") / "conda-meta" / "demo-tool-1.0-0.json"
    record.write_text('{"name": "demo-tool", ')
    shown = hpcenv_ok(h, "info", "rec")
    assert "demo-tool" in shown.stderr and "reinstall the package" in shown.stderr
    refused = hpcenv_in(h, "install", "rec", "numtool")
    assert refused.returncode == 2 and "demo-tool" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (env_dir(h, "rec") / "bin" / "numtool").exists()
    doctor = json.loads(hpcenv_in(h, "doctor", "--json").stdout)["result"]
    check = next(c for c in doctor["checks"] if c["name"] == "env-records")
    assert check["status"] == "FAIL" and "hpcenv install rec demo-tool" in check["fix"]
    hpcenv_ok(h, "install", "rec", "demo-tool")
    assert json.loads(record.read_text())["name"] == "demo-tool"
    doctor = json.loads(hpcenv_in(h, "doctor", "--json").stdout)["result"]
    assert next(c for c in doctor["checks"] if c["name"] == "env-records")["status"] == "OK"


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_package_in_the_cache_is_extracted_again(ready_home, damage):
    h = ready_home
    hpcenv_ok(h, "create", "first", "demo-tool", "-c", h["url"])
    cached = h["storage"] / ".cache/rattler/pkgs/demo-tool-1.0-0/share/demo-tool/data.txt"
    whole = cached.read_text()
    os.unlink(cached)  # break the hardlink so `first` keeps its copy
    if damage == "truncated":
        cached.write_text("dat")
    doctor = json.loads(hpcenv_in(h, "doctor", "--json").stdout)["result"]
    check = next(c for c in doctor["checks"] if c["name"] == "package-cache")
    assert check["status"] == "WARN" and "demo-tool-1.0-0" in check["detail"]
    r = hpcenv_ok(h, "create", "second", "demo-tool", "-c", h["url"])
    assert "demo-tool-1.0-0 was damaged" in r.stderr
    assert (env_dir(h, "second") / "share/demo-tool/data.txt").read_text() == whole
    assert cached.read_text() == whole


# ----------------------------------------------------------------- checks before building


@pytest.mark.parametrize("variant", ["not-utf8", "nul", "directory"])
def test_a_broken_environments_txt_is_reported_and_refused_before_building(ready_home, variant):
    h = ready_home
    hpcenv_ok(h, "create", "ok1", "demo-tool", "-c", h["url"])
    txt = h["home"] / ".conda" / "environments.txt"
    if variant == "directory":
        txt.unlink()
        txt.mkdir()
    else:
        bad = b"/caf\xe9/env\n" if variant == "not-utf8" else b"/x\0y\n"
        txt.write_bytes(txt.read_bytes() + bad)
    listed = hpcenv_ok(h, "list", "--json")
    assert "environments.txt" in listed.stderr
    assert str(env_dir(h, "ok1")) in {e["prefix"] for e in json.loads(listed.stdout)["result"]}
    refused = hpcenv_in(h, "create", "ok2", "demo-tool", "-c", h["url"])
    assert refused.returncode == 2 and "environments.txt" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not os.path.lexists(env_dir(h, "ok2")) and leftovers(h) == []
    for args in (("doctor", "--json"), ("clean", "--dry-run"), ("usage",)):
        r = subprocess.run(  # a path that is not UTF-8 is printed as its bytes, as ls does
            [sys.executable, "-m", "hpcenv", *args], env=h["env"], capture_output=True,
            text=True, errors="replace", stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert "Traceback" not in r.stderr and r.returncode in (0, 1), (args, r.stderr)
    removed = hpcenv_in(h, "remove", "ok1", "--yes")
    if variant == "directory":  # nothing to unregister: the env goes
        assert removed.returncode == 0 and not env_dir(h, "ok1").exists()
    else:  # it must be unregistered and cannot be: refused, nothing changed
        assert removed.returncode == 2 and env_dir(h, "ok1").is_dir()


def test_a_pip_section_without_python_is_refused_before_anything_is_written(ready_home):
    h = ready_home
    yml = h["root"] / "env.yml"
    yml.write_text(f"name: nopy\nchannels: [{h['url']}]\ndependencies:\n  - demo-tool\n"
                   "  - pip:\n    - requests\n")  # fmt: skip
    before = snapshot(h["home"], h["storage"] / ".conda")
    r = hpcenv_in(h, "create", "-f", str(yml))
    assert r.returncode == 2 and "pip" in r.stderr and "python" in r.stderr
    assert snapshot(h["home"], h["storage"] / ".conda") == before


def test_an_empty_channel_list_is_said_plainly(ready_home):
    h = ready_home
    config = h["home"] / ".config" / "hpcenv"
    config.mkdir(parents=True)
    (config / "config.toml").write_text("channels = []\n")
    r = hpcenv_in(h, "create", "nochan", "demo-tool")
    assert r.returncode == 2 and "no channel configured" in r.stderr
    assert not os.path.lexists(env_dir(h, "nochan"))
