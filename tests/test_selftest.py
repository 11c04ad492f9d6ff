"""`hpcenv selftest`: the whole flow passes, and a broken step is named with exit 1."""

from __future__ import annotations

import json
import os

from tests.fs import hpcenv
from tests.slurm import slurm_cluster  # noqa: F401


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCENV_")}
    env.update(extra)
    return env


def test_selftest_runs_every_step_and_submits_on_a_real_slurm(slurm_cluster):  # noqa: F811
    r = hpcenv("selftest", "--json", env=_env(SLURM_CONF=str(slurm_cluster.conf)))
    assert r.returncode == 0, r.stdout + r.stderr
    steps = json.loads(r.stdout)["result"]["steps"]
    names = [s["name"] for s in steps]
    assert names == [
        "channel",
        "setup",
        "create",
        "create-gpu",
        "activate",
        "run",
        "jobscript",
        "usage",
        "clean",
        "doctor",
    ]
    assert all(s["ok"] for s in steps)
    jobscript = next(s for s in steps if s["name"] == "jobscript")
    assert "submit --wait" in jobscript["detail"]
    gpu = next(s for s in steps if s["name"] == "create-gpu")
    assert "cuda" in gpu["detail"]


def test_a_broken_step_is_named_and_the_exit_code_is_1():
    r = hpcenv("selftest", env=_env(_HPCENV_TEST_SELFTEST_BREAK="run"))
    assert r.returncode == 1
    assert "FAILED: run" in r.stdout
    assert "✓ channel" in r.stderr and "✗ run" in r.stderr


def test_keep_leaves_the_sandbox_for_inspection():
    r = hpcenv("selftest", "--keep", "--json", env=_env())
    assert r.returncode == 0, r.stderr
    sandbox = json.loads(r.stdout)["result"]["sandbox"]
    assert os.path.isdir(os.path.join(sandbox, "home", ".conda", "envs", "demo"))
    import shutil

    shutil.rmtree(sandbox)
