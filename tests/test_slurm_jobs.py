"""Jobs on a real single-node SLURM (started by the fixture; CI=true fails if it cannot)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fs import hpcenv
from tests.slurm import slurm_cluster  # noqa: F401


@pytest.fixture
def job_home(ready_home, slurm_cluster):  # noqa: F811
    h = ready_home
    env = {k: v for k, v in h["env"].items() if k != "TMPDIR"}
    env["SLURM_CONF"] = str(slurm_cluster.conf)
    r = hpcenv("create", "jobenv", "python", "demo-tool", "hello", "-c", h["url"], env=env)
    assert r.returncode == 0, r.stderr
    return {**h, "env": env, "logs": h["storage"] / "hpcenv-logs"}


def _submit(h, *args: str):
    return hpcenv("submit", "jobenv", "--wait", "--json", *args, env=h["env"])


def _log(h, result) -> str:
    return Path(json.loads(result.stdout)["result"]["output"]).read_text()


def test_job_runs_the_envs_tool_and_python(job_home):
    r = _submit(
        job_home,
        "--time",
        "00:05:00",
        "--",
        "sh",
        "-c",
        "demo-tool && python -c 'import hello, sys; print(hello.greet(), sys.prefix)'",
    )
    assert r.returncode == 0, r.stderr
    log = _log(job_home, r)
    assert "demo-tool 1.0" in log and "hello from hpcenv" in log and "/envs/jobenv" in log


def test_failing_command_returns_its_exit_code_with_wait(job_home):
    r = _submit(job_home, "--", "sh", "-c", "exit 3")
    assert r.returncode == 3


def test_job_array_runs_every_task(job_home):
    r = _submit(job_home, "--array", "0-1", "--", "sh", "-c", 'echo "task $SLURM_ARRAY_TASK_ID"')
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["result"]["job_id"]
    logs = sorted(job_home["logs"].glob(f"hpcenv-jobenv-{job}_*.out"))
    assert [p.read_text().strip() for p in logs] == ["task 0", "task 1"]


def test_commands_with_spaces_and_quotes_arrive_intact(job_home):
    r = _submit(
        job_home, "--", "python", "-c", "import sys; print(sys.argv[1:])", "a b", "it's", "$(id)"
    )
    assert r.returncode == 0, r.stderr
    assert "['a b', \"it's\", '$(id)']" in _log(job_home, r)


def test_staged_job_runs_from_the_node_local_copy(job_home):
    r = _submit(job_home, "--stage", "--", "sh", "-c", 'echo "prefix=$CONDA_PREFIX"; demo-tool')
    assert r.returncode == 0, r.stderr
    log = _log(job_home, r)
    job = json.loads(r.stdout)["result"]["job_id"]
    assert f"prefix=/tmp/hpcenv-{job}/jobenv" in log and "demo-tool 1.0" in log


def test_rejected_job_exits_1_with_slurms_message(job_home):
    r = hpcenv("submit", "jobenv", "--partition", "nope", "--", "true", env=job_home["env"])
    assert r.returncode == 1 and "Invalid partition" in r.stderr


def test_gpu_job_runs_in_the_sites_gpu_partition_with_a_gpu(job_home):
    site = Path(job_home["env"]["HPCENV_SITE_CONFIG"])
    site.write_text('[scheduler]\ngpu_partition = "gpu"\ngres = "--gres=gpu:{n}"\n')
    try:
        cmd = ("sh", "-c", 'echo "partition=$SLURM_JOB_PARTITION gpus=$CUDA_VISIBLE_DEVICES"')
        script = hpcenv("jobscript", "jobenv", "--gpus", "1", "--", *cmd, env=job_home["env"])
        assert "#SBATCH --partition=gpu" in script.stdout
        assert "#SBATCH --gres=gpu:1" in script.stdout
        r = _submit(job_home, "--gpus", "1", "--", *cmd)
    finally:
        os.unlink(site)
    assert r.returncode == 0, r.stderr
    assert "partition=gpu gpus=0" in _log(job_home, r)
