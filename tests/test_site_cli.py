"""`hpcenv modulefile` through the CLI, loaded by real Lmod."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import need
from tests.fs import hpcenv

LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")


def test_env_modulefile_loads_the_env_and_unload_restores_path(ready_home, tmp_path):
    need("Lmod", LMOD_INIT.exists(), f"{LMOD_INIT} missing (Debian package lmod)")
    h = ready_home
    assert hpcenv("create", "modenv", "demo-tool", "-c", h["url"], env=h["env"]).returncode == 0
    mods = tmp_path / "modules"
    r = hpcenv("modulefile", "modenv", "--to", str(mods), env=h["env"])
    assert r.returncode == 0, r.stderr
    script = (
        f"source {LMOD_INIT}; before=$PATH; module use {mods}; module load modenv; demo-tool; "
        'module unload modenv; [ "$PATH" = "$before" ] && echo restored'
    )
    env = {**h["env"], "PATH": "/usr/local/bin:/usr/bin:/bin"}  # Lmod drops duplicate entries
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert "demo-tool 1.0" in out.stdout and "restored" in out.stdout, out.stderr


def test_self_modulefile_puts_hpcenv_on_path(ready_home, tmp_path):
    need("Lmod", LMOD_INIT.exists(), f"{LMOD_INIT} missing (Debian package lmod)")
    h = ready_home
    tree = tmp_path / "apps" / "hpcenv"
    assert hpcenv("modulefile", "--self", "--to", str(tree), env=h["env"]).returncode == 0
    env = {**h["env"], "PATH": "/usr/bin:/bin"}
    script = f"source {LMOD_INIT}; module use {tree.parent}; module load hpcenv; hpcenv --version"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert out.stdout.startswith("hpcenv "), out.stderr


def test_modulefile_needs_a_name_or_self(ready_home):
    r = hpcenv("modulefile", env=ready_home["env"])
    assert r.returncode == 2 and "--self" in r.stderr
