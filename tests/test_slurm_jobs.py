"""Jobs on a real three-node SLURM (started by the fixture; CI=true fails if it cannot)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hpcenv.jobs import pack_id
from tests.foreign import rattler_prefix
from tests.fs import hpcenv, hpcenv_in, hpcenv_ok
from tests.hooked import hooks_channel  # noqa: F401
from tests.slurm import NODE_LOCAL, slurm_cluster, slurm_down  # noqa: F401


@pytest.fixture
def job_home(ready_home, slurm_cluster):  # noqa: F811
    h = ready_home
    env = {k: v for k, v in h["env"].items() if k != "TMPDIR"}
    env["SLURM_CONF"] = str(slurm_cluster.conf)
    env["HPCENV_SCHEDULER_STAGE_DIR"] = str(NODE_LOCAL)  # each node's own disk
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
    assert f"prefix={NODE_LOCAL}/hpcenv-{job}/jobenv" in log and "demo-tool 1.0" in log


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


# ------------------------------------------------------------ three nodes, node-local disks


def test_staged_job_on_three_nodes_runs_each_node_from_its_own_copy(job_home):
    """`srun` prints on each node the prefix it runs from, the device that prefix is on, and
    what the env's python says; each node has its own disk at NODE_LOCAL."""
    step = (
        'echo "node=$SLURMD_NODENAME prefix=$CONDA_PREFIX dev=$(stat -c %d "$CONDA_PREFIX") '
        "py=$(python -c 'import sys, hello; print(sys.prefix, hello.greet())')\""
    )
    r = _submit(job_home, "--stage", "--nodes", "3", "--", "srun", "--ntasks-per-node=1",
                "bash", "-c", step)  # fmt: skip
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["result"]["job_id"]
    staged = f"{NODE_LOCAL}/hpcenv-{job}/jobenv"
    rows = sorted(line.split(" ", 3) for line in _log(job_home, r).splitlines())
    assert [row[0] for row in rows] == ["node=n1", "node=n2", "node=n3"], rows
    for _node, prefix, _dev, py in rows:
        assert prefix == f"prefix={staged}"
        assert py.startswith(f"py={staged} hello from hpcenv")
    devices = {row[2] for row in rows}
    assert len(devices) == 3  # three copies on three disks
    assert f"dev={os.stat(NODE_LOCAL).st_dev}" not in devices  # none of them the login side's
    # nothing was staged on the login side, and each node's copy is gone with the job
    assert _staged_here(job) == []  # (this job's only: image tests mount under NODE_LOCAL)
    assert not list(Path(tempfile.gettempdir()).glob(f"hpcenv-{job}*"))


def test_hpcenv_stage_in_a_three_node_job_puts_a_working_copy_on_each_node(job_home):
    each = (
        '. "$P/etc/hpcenv/activate.sh" && '
        'echo "$SLURMD_NODENAME $CONDA_PREFIX $(stat -c %d "$CONDA_PREFIX") $(demo-tool | tail -1)"'
    )
    wrap = (
        f"export P=$({sys.executable} -m hpcenv stage jobenv)\n"
        f"srun --ntasks-per-node=1 bash -c {shlex.quote(each)}\n"
        'srun --ntasks-per-node=1 rm -rf "$(dirname "$P")"'
    )
    r = _submit(job_home, "--nodes", "3", "--wrap", wrap)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["result"]["job_id"]
    staged = f"{NODE_LOCAL}/hpcenv-{job}/jobenv"
    rows = sorted(line.split(" ") for line in _log(job_home, r).splitlines())
    assert [(row[0], row[1], row[3:]) for row in rows] == [
        (node, staged, ["prefix:", staged]) for node in ("n1", "n2", "n3")
    ]
    assert len({row[2] for row in rows}) == 3 and _staged_here(job) == []


def test_array_tasks_receive_their_task_id_through_wrap(job_home):
    r = _submit(
        job_home,
        "--array",
        "0-2",
        "--wrap",
        'python -c "import sys; print(\'task\', sys.argv[1])" "$SLURM_ARRAY_TASK_ID"',
    )
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["result"]["job_id"]
    logs = sorted(job_home["logs"].glob(f"hpcenv-jobenv-{job}_*.out"))
    assert [p.read_text() for p in logs] == ["task 0\n", "task 1\n", "task 2\n"]


@pytest.mark.parametrize("stage", [False, True], ids=["shared", "staged"])
def test_a_job_whose_env_has_a_nounset_unsafe_hook_succeeds(job_home, hooks_channel, stage):  # noqa: F811
    h = job_home
    hpcenv_ok(h, "create", "gdal", "gdal-like", "-c", h["url"], "-c", hooks_channel.url)
    flags = ["--stage"] if stage else []
    r = hpcenv_in(h, "submit", "gdal", "--wait", "--json", *flags, "--",
                  "sh", "-c", 'echo "gdal=$GDAL_DATA"')  # fmt: skip
    assert r.returncode == 0, r.stderr
    log = _log(h, r)
    assert "unbound variable" not in log and "not found" not in log
    assert log.startswith("gdal=") and log.rstrip().endswith("/gdal/share/gdal")


def test_a_queued_jobs_pack_survives_a_later_pack_and_clean(job_home):
    h = job_home
    script = hpcenv_ok(h, "jobscript", "jobenv", "--stage", "--", "true").stdout
    [old] = [shlex.split(line.split("=", 1)[1])[0] for line in script.splitlines()
             if line.startswith("HPCENV_PACK=")]  # fmt: skip
    held = subprocess.run(["sbatch", "--parsable", "--hold"], input=script, env=h["env"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    try:
        hpcenv_ok(h, "install", "jobenv", "numtool")  # the env changes: its pack is outdated
        new = json.loads(hpcenv_ok(h, "pack", "jobenv", "--json").stdout)["result"]["path"]
        assert new != old and Path(old).exists()  # a new pack deletes no old one
        report = json.loads(hpcenv_ok(h, "clean", "--yes", "--json").stdout)["result"]
        assert Path(old).exists() and Path(new).exists()
        assert any("queued or running jobs stage" in w for w in report["warnings"])
    finally:
        subprocess.run(["scancel", held], env=h["env"], check=True)
    while subprocess.run(["squeue", "-h", "-j", held], env=h["env"], capture_output=True,
                         text=True).stdout.strip():  # fmt: skip
        time.sleep(0.2)
    hpcenv_ok(h, "clean", "--yes")  # no job names it any more
    assert not Path(old).exists() and Path(new).exists()


def test_jobscript_run_by_plain_sbatch_writes_its_log(job_home):
    h = job_home
    logs = h["root"] / "fresh" / "logs"
    r = hpcenv_ok(h, "jobscript", "jobenv", "--", "demo-tool", HPCENV_SCHEDULER_LOG_DIR=str(logs))
    assert logs.is_dir()  # SLURM opens the log before the script runs
    done = subprocess.run(["sbatch", "--wait", "--parsable"], input=r.stdout, env=h["env"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "demo-tool 1.0" in (logs / f"hpcenv-jobenv-{done.stdout.strip()}.out").read_text()


def test_jobscript_for_a_plain_rattler_prefix_runs_on_slurm(job_home):
    h = job_home
    prefix = rattler_prefix(h["storage"] / "plain", [h["url"]], "demo-tool", "python")
    r = hpcenv_ok(h, "jobscript", str(prefix), "--", "sh", "-c",
                  'demo-tool; echo "hook=$DEMO_TOOL_ACTIVATED"')  # fmt: skip
    [source] = [line for line in r.stdout.splitlines() if line.startswith("source ")]
    assert Path(shlex.split(source)[1]).is_file()  # no script names a file that is not there
    done = subprocess.run(["sbatch", "--wait", "--parsable"], input=r.stdout, env=h["env"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = (h["logs"] / f"hpcenv-plain-{done.stdout.strip()}.out").read_text()
    assert f"prefix: {prefix}" in log and "hook=1" in log


def test_doctor_says_slurm_answers(job_home):
    [check] = _checks(job_home, "sbatch")
    assert check["status"] == "OK" and "SLURM answers" in check["detail"]


def _checks(h, name: str, **env: str) -> list[dict]:
    r = hpcenv_in(h, "doctor", "--json", **env)
    return [c for c in json.loads(r.stdout)["result"]["checks"] if c["name"] == name]


# ------------------------------------------------------------------- slurmctld stopped


def test_with_slurmctld_stopped_submit_doctor_and_clean_say_slurm_does_not_answer(
    job_home,
    slurm_down,  # noqa: F811
):
    h = job_home
    down = {"SLURM_CONF": str(slurm_down.conf)}
    r = hpcenv_in(h, "submit", "jobenv", "--", "true", **down)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert "SLURM does not answer" in r.stderr and "`sinfo`" in r.stderr

    [check] = _checks(h, "sbatch", **down)
    assert check["status"] == "WARN" and "SLURM does not answer" in check["detail"]
    assert "`sinfo`" in check["detail"]

    prefix = h["home"] / ".conda" / "envs" / "jobenv"
    packs = h["storage"] / ".hpcenv" / "packs"
    packs.mkdir(parents=True, exist_ok=True)
    outdated = packs / f"jobenv-{pack_id(prefix)}-{'f' * 16}.tar.gz"
    outdated.write_bytes(b"an older pack of jobenv")
    report = json.loads(hpcenv_ok(h, "clean", "--yes", "--json", **down).stdout)["result"]
    assert outdated.exists()
    assert any("could not ask SLURM about queued jobs" in w for w in report["warnings"])


def _staged_here(job: str) -> list[str]:
    """What job `job` staged into the login side's NODE_LOCAL (nothing should be there)."""
    return [n for n in os.listdir(NODE_LOCAL) if n.startswith(f"hpcenv-{job}")]
