"""`hpcenv verify` (issue 21): files deleted, truncated, chmod'ed or overwritten in an env are
named per package, extra files are listed but not counted as damage, and envs hpcenv did
not make are checked against their own records. Real engine, real channel, real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpcenv.verify import check_prefix
from tests.condafmt import conda_env, rattler_env
from tests.fs import hpcenv_in, hpcenv_ok

SPECS = ("python", "demo-tool", "hello", "numtool")


def env_dir(h, name: str) -> Path:
    return h["storage"] / ".conda" / "envs" / name


def site(prefix: Path) -> Path:
    [found] = prefix.glob("lib/python*/site-packages")
    return found


def verify(h, *args: str) -> tuple[int, dict]:
    r = hpcenv_in(h, "verify", *args, "--json")
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)["result"]


def broken(result: dict) -> dict[str, dict]:
    return {p["name"]: p for e in result["envs"] for p in e["problems"] if p["broken"]}


@pytest.fixture
def demo(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "demo", *SPECS, "-c", h["url"])
    return {**h, "prefix": env_dir(h, "demo")}


def test_verify_finds_a_fresh_env_whole_and_exits_0(demo):
    code, result = verify(demo, "demo")
    [env] = result["envs"]
    assert code == 0 and not result["broken"] and not env["broken"]
    assert env["packages"] == 5 and env["files"] >= 15 and env["problems"] == []
    text = hpcenv_ok(demo, "verify", "demo").stdout
    assert "5 packages" in text and ": OK" in text


def test_verify_names_exactly_the_packages_whose_files_were_deleted_truncated_or_chmodded(
    demo,
):
    prefix = demo["prefix"]
    (prefix / "share" / "demo-tool" / "data.txt").unlink()  # demo-tool: deleted
    os.truncate(prefix / "lib" / "libnum.txt", 3)  # libnum: truncated
    (prefix / "bin" / "numtool").chmod(0o644)  # numtool: a program that cannot run
    (site(prefix) / "hello" / "__init__.py").chmod(0o000)  # hello: unreadable
    code, result = verify(demo, "demo")
    bad = broken(result)
    assert code == 1 and set(bad) == {"demo-tool", "libnum", "numtool", "hello"}
    assert bad["demo-tool"]["missing"] == ["share/demo-tool/data.txt"]
    assert bad["libnum"]["changed"] == [
        {"path": "lib/libnum.txt", "detail": "3 bytes, not 11", "in_the_way": False}
    ]
    assert bad["numtool"]["changed"][0]["detail"] == "not executable (mode 0644)"
    assert bad["hello"]["changed"][0]["detail"] == "not readable (mode 0000)"
    assert all(p["counts"][0] + p["counts"][1] == 1 for p in bad.values())
    text = hpcenv_in(demo, "verify", "demo")
    assert text.returncode == 1
    assert "4 broken" in text.stdout and "Next: hpcenv repair demo" in text.stdout


def test_verify_lists_extra_files_in_a_package_dir_but_not_python_caches_and_exits_0(demo):
    prefix = demo["prefix"]
    (prefix / "share" / "demo-tool" / "notes.txt").write_text("mine\n")
    (prefix / "share" / "demo-tool" / "more").mkdir()
    cache = site(prefix) / "hello" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "extra.cpython-311.pyc").write_bytes(b"\0" * 16)
    (prefix / "bin" / "my-script").write_text("#!/bin/sh\n")  # bin/ holds many packages
    code, result = verify(demo, "demo")
    [env] = result["envs"]
    assert code == 0 and not env["broken"]
    [tool] = env["problems"]
    assert tool["name"] == "demo-tool" and not tool["broken"]
    assert tool["extra"] == ["share/demo-tool/more/", "share/demo-tool/notes.txt"]


def test_verify_full_finds_a_same_size_change_that_the_quick_check_cannot_see(demo):
    data = demo["prefix"] / "share" / "demo-tool" / "data.txt"
    text = data.read_bytes()
    os.unlink(data)  # a new inode: the package cache keeps its copy
    data.write_bytes(text.replace(b"data", b"DATA", 1))
    assert verify(demo, "demo")[0] == 0
    code, result = verify(demo, "demo", "--full")
    assert code == 1
    [pkg] = broken(result).values()
    assert pkg["changed"][0]["detail"] == "content differs (sha256)"


def test_verify_all_checks_every_env_the_user_has(demo):
    h = demo
    hpcenv_ok(h, "create", "other", "libnum", "-c", h["url"])
    outside = h["storage"] / "elsewhere"
    hpcenv_ok(h, "create", "-p", str(outside), "demo-tool", "-c", h["url"])
    (outside / "bin" / "demo-tool").unlink()
    code, result = verify(h, "--all")
    by_prefix = {e["prefix"]: e for e in result["envs"]}
    assert code == 1 and len(by_prefix) == 3
    assert [p for e in result["envs"] if e["broken"] for p in [e["prefix"]]] == [str(outside)]


def test_verify_of_envs_made_by_a_rattler_script_and_by_conda(ready_home):
    """conda writes noarch:python paths relative to the package (`site-packages/...`) in
    paths_data and the installed ones in `files`; rattler scripts record no requested spec."""
    h = ready_home
    made = {
        "rattler": h["storage"] / "by-rattler",
        "conda": h["storage"] / "by-conda",
    }
    rattler_env(made["rattler"], h["url"], list(SPECS), h["storage"] / "rcache")
    conda_env(made["conda"], h["url"], list(SPECS), h["storage"] / "ccache")
    for prefix in made.values():
        assert verify(h, "-p", str(prefix))[0] == 0
        os.truncate(site(prefix) / "hello" / "__init__.py", 1)
        code, result = verify(h, "-p", str(prefix))
        assert code == 1 and set(broken(result)) == {"hello"}, prefix


def test_verify_names_an_unreadable_record(demo):
    record = next((demo["prefix"] / "conda-meta").glob("libnum-*.json"))
    record.write_text("{ not json")
    code, result = verify(demo, "demo")
    [env] = result["envs"]
    assert code == 1 and env["broken"]
    assert [(u["name"], u["version"]) for u in env["unreadable"]] == [("libnum", "1.0")]


def test_verify_says_where_a_directory_stands_in_a_files_place(demo):
    tool = demo["prefix"] / "bin" / "demo-tool"
    tool.unlink()
    tool.mkdir()
    code, result = verify(demo, "demo")
    [issue] = broken(result)["demo-tool"]["changed"]
    assert code == 1 and issue == {
        "path": "bin/demo-tool",
        "detail": "a directory, not a file",
        "in_the_way": True,
    }


@pytest.mark.parametrize("mode", ["serial", "threads", "processes"])
def test_every_way_of_running_the_check_finds_the_same_damage(demo, mode):
    prefix = demo["prefix"]
    (prefix / "lib" / "libnum.txt").unlink()
    (prefix / "bin" / "numtool").write_text("#!/bin/sh\n")
    how = {"serial": {"threads": 1}, "threads": {"threads": 4}, "processes": {"processes": 3}}
    check = check_prefix(prefix, **how[mode])
    assert check.complete and check.packages == 5
    assert {p.name: p.counts[:2] for p in check.broken_packages} == {
        "libnum": (1, 0),
        "numtool": (0, 1),
    }


def test_a_check_out_of_time_says_it_stopped_early(demo):
    check = check_prefix(demo["prefix"], deadline=0.0)
    assert not check.complete and check.packages < check.total_packages == 5
