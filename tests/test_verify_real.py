"""verify and repair on real packages (tests/realpkgs.py): this machine's CPython and numpy as
conda packages, and `six` installed from its wheel by uv through a `pip:` section, offline.
Damage to each is named exactly; repair gives back the env byte for byte and it runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fs import cli_env, hpcenv, snapshot
from tests.realpkgs import wheel_for_test


@pytest.fixture
def sci(real_channel, request, tmp_path):
    six = wheel_for_test(request, "six", "1.16.0")
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    env = cli_env(home, storage)
    assert hpcenv("setup", "--yes", env=env).returncode == 0
    yml = tmp_path / "environment.yml"
    yml.write_text(
        f"name: sci\nchannels:\n  - {real_channel.url}\ndependencies:\n  - python\n"
        f"  - numpy\n  - pip:\n    - --no-index\n    - --find-links {six.parent}\n"
        "    - six==1.16.0\n"
    )
    r = hpcenv("create", "-f", str(yml), env=env)
    assert r.returncode == 0, r.stderr
    prefix = storage / ".conda" / "envs" / "sci"
    [sp] = prefix.glob("lib/python*/site-packages")
    return {"env": env, "prefix": prefix, "site": sp, "made": snapshot(prefix)}


def verify(h) -> tuple[int, dict]:
    r = hpcenv("verify", "sci", "--json", env=h["env"])
    assert r.returncode in (0, 1), r.stderr
    [env] = json.loads(r.stdout)["result"]["envs"]
    return r.returncode, {p["name"]: p for p in env["problems"] if p["broken"]}


def test_real_python_numpy_and_a_pypi_package_damaged_are_named_and_repaired(sci):
    prefix, sp = sci["prefix"], sci["site"]
    assert verify(sci) == (0, {})
    lib = sp.parent
    os.truncate(lib / "json" / "decoder.py", 100)  # python's stdlib
    [core] = sp.glob("numpy/_core/_multiarray_umath*.so")
    core.chmod(0o000)  # numpy's compiled core: the cache's inode too
    (sp / "numpy" / "linalg" / "__init__.py").unlink()
    os.truncate(sp / "six.py", 10)  # uv hardlinked it from its own cache
    code, bad = verify(sci)
    assert code == 1 and set(bad) == {"python", "numpy", "six"}
    assert bad["six"]["source"] == "pypi" and bad["six"]["installer"] == "uv"
    assert bad["numpy"]["counts"][:2] == [1, 1] and bad["python"]["counts"][:2] == [0, 1]
    r = hpcenv("repair", "sci", env=sci["env"])
    assert r.returncode == 0, r.stderr
    assert "six 1.16.0 [pypi]: remove it from uv's cache" in r.stdout
    assert snapshot(prefix) == sci["made"]
    assert verify(sci) == (0, {})
    run = hpcenv(
        "run", "sci", "--", "python", "-c",
        "import json, numpy, numpy.linalg, six; print(numpy.linalg.det(numpy.eye(2)), six.PY3)",
        env=sci["env"],
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.split() == ["1.0", "True"], run.stderr


def test_real_env_checked_in_full_is_whole_and_names_a_same_size_change(sci):
    r = hpcenv("verify", "sci", "--full", "--json", env=sci["env"])
    assert r.returncode == 0, r.stdout
    [env] = json.loads(r.stdout)["result"]["envs"]
    # every file is comparable: rattler records the hash of prefix-rewritten files too
    assert env["problems"] == [] and env["files"] > 2000
    decoder = sci["site"].parent / "json" / "decoder.py"
    text = decoder.read_bytes()
    decoder.unlink()
    decoder.write_bytes(
        text.replace(b"import re", b"import  r", 1).replace(b"\n\n", b"\n", 1) + b"\n"
    )
    assert len(decoder.read_bytes()) == len(text)
    assert verify(sci) == (0, {})
    r = hpcenv("verify", "sci", "--full", "--json", env=sci["env"])
    [env] = json.loads(r.stdout)["result"]["envs"]
    [python] = env["problems"]
    assert r.returncode == 1 and python["name"] == "python"
    assert python["changed"][0]["detail"] == "content differs (sha256)"


def rattler_script_env(prefix: Path, url: str, specs: list[str], cache: Path) -> None:
    """What a user's own py-rattler script makes (numpy needs the host's __glibc)."""
    import asyncio

    import rattler

    async def main():
        records = await rattler.solve(
            [url], specs, gateway=rattler.Gateway(cache_dir=cache / "repodata"),
            virtual_packages=[v.into_generic() for v in rattler.VirtualPackage.detect()],
        )  # fmt: skip
        await rattler.install(records, prefix, cache_dir=cache / "pkgs", show_progress=False)

    asyncio.run(main())


def test_verify_of_a_foreign_real_env_made_by_a_plain_rattler_script(real_channel, tmp_path):
    prefix = tmp_path / "raw"
    rattler_script_env(prefix, real_channel.url, ["python", "numpy"], tmp_path / "rcache")
    env = cli_env(tmp_path / "home", tmp_path / "storage")
    (tmp_path / "home").mkdir()
    (tmp_path / "storage").mkdir()
    r = hpcenv("verify", "-p", str(prefix), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    Path(next(prefix.glob("lib/python*/site-packages/numpy/__init__.py"))).unlink()
    r = hpcenv("verify", "-p", str(prefix), "--json", env=env)
    [env_result] = json.loads(r.stdout)["result"]["envs"]
    assert r.returncode == 1
    assert [p["name"] for p in env_result["problems"] if p["broken"]] == ["numpy"]
