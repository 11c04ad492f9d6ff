"""A real env (this machine's CPython + numpy from its wheel, tests/realpkgs.py) staged by a
three-node job on the real SLURM of tests/slurm.py: each node runs numpy from its own copy."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from tests.fs import hpcenv
from tests.slurm import NODE_LOCAL, slurm_cluster  # noqa: F401

# Real linear algebra, then where the interpreter and numpy were loaded from.
LINALG = (
    "import sys, numpy as np; "
    "a = np.array([[3.0, 1.0, 2.0], [1.0, 4.0, 1.0], [2.0, 1.0, 5.0]]); "
    "x = np.linalg.solve(a, np.array([1.0, 2.0, 3.0])); "
    "assert np.allclose(x, [-0.2, 0.4, 0.6]), x; "
    "print(sys.prefix, np.__file__)"
)


@pytest.fixture
def real_job_home(ready_home, slurm_cluster, real_channel):  # noqa: F811
    h = ready_home
    env = {k: v for k, v in h["env"].items() if k != "TMPDIR"}
    env["SLURM_CONF"] = str(slurm_cluster.conf)
    env["HPCENV_SCHEDULER_STAGE_DIR"] = str(NODE_LOCAL)  # each node's own disk
    r = hpcenv("create", "sci", "python", "numpy", "-c", real_channel.url, env=env)
    assert r.returncode == 0, r.stderr
    return {**h, "env": env}


def test_real_env_staged_on_three_nodes_runs_numpy_from_each_nodes_copy(real_job_home):
    h = real_job_home
    step = (
        f'echo "$SLURMD_NODENAME $(stat -c %d "$CONDA_PREFIX") $(python -c {shlex.quote(LINALG)})"'
    )
    r = hpcenv("submit", "sci", "--wait", "--json", "--stage", "--nodes", "3", "--",
               "srun", "--ntasks-per-node=1", "bash", "-c", step, env=h["env"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)["result"]
    staged = f"{NODE_LOCAL}/hpcenv-{result['job_id']}/sci"
    with open(result["output"]) as f:
        rows = sorted(line.split(" ") for line in f.read().splitlines())
    assert [row[0] for row in rows] == ["n1", "n2", "n3"], rows
    for _node, _dev, prefix, numpy_file in rows:
        assert prefix == staged  # conda-unpack rewrote the real python's placeholders
        assert numpy_file.startswith(f"{staged}/lib/python")
    assert len({row[1] for row in rows}) == 3  # three copies on three node-local disks
    # each node's copy is gone with the job (this job's only: image tests mount under NODE_LOCAL)
    assert [n for n in os.listdir(NODE_LOCAL) if n.startswith(f"hpcenv-{result['job_id']}")] == []
