"""Job scripts (rendered, no SLURM needed), and pack caching."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpcenv import jobs
from hpcenv.errors import UsageError
from tests.fs import hpcenv

SITE = jobs.SchedulerSite(
    partition="cpu",
    gpu_partition="gpu-a100",
    gres="--gres=gpu:a100:{n}",
    module_lines=("module purge", "module load miniforge"),
)


def req(**kw) -> jobs.JobRequest:
    base = dict(
        env_name="demo", prefix=Path("/st/envs/my env"), command=("python", "-c", "print('a b')")
    )
    return jobs.JobRequest(**{**base, **kw})


def test_flags_and_site_defaults_become_sbatch_lines():
    text = jobs.render_jobscript(
        req(time="02:00:00", mem="16G", cpus=4, nodes=2, array="0-9%2"),
        SITE,
        log_dir=Path("/st/logs"),
    )
    for line in (
        "#SBATCH --time=02:00:00",
        "#SBATCH --mem=16G",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --nodes=2",
        "#SBATCH --partition=cpu",
        "#SBATCH --array=0-9%2",
        "#SBATCH --output=/st/logs/%x-%A_%a.out",
        "#SBATCH --job-name=hpcenv-demo",
    ):
        assert line in text.splitlines()
    assert "set -euo pipefail" in text


def test_gpus_render_the_sites_gpu_partition_and_gres():
    text = jobs.render_jobscript(req(gpus=2), SITE, log_dir=Path("/st/logs"))
    assert "#SBATCH --partition=gpu-a100" in text and "#SBATCH --gres=gpu:a100:2" in text


def test_module_lines_come_before_activation_and_every_word_is_quoted():
    text = jobs.render_jobscript(
        req(command=("echo", "$(id)", "a b", "it's")), SITE, log_dir=Path("/l")
    )
    lines = text.splitlines()
    assert lines.index("module load miniforge") < lines.index(
        "source '/st/envs/my env/etc/hpcenv/activate.sh'"
    )
    assert lines[-1] == "echo '$(id)' 'a b' 'it'\"'\"'s'"
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


@pytest.mark.parametrize(
    "kw",
    [
        dict(time="2h"),
        dict(mem="lots"),
        dict(array="a-b"),
        dict(partition="x y"),
        dict(output="/a b/x.out"),
        dict(cpus=0),
        dict(command=()),
    ],
)
def test_bad_job_flags_are_usage_errors(kw):
    with pytest.raises(UsageError):
        jobs.render_jobscript(req(**kw), SITE, log_dir=Path("/l"))


def test_submit_without_sbatch_exits_2_pointing_at_jobscript(ready_home):
    h = ready_home
    assert hpcenv("create", "j", "demo-tool", "-c", h["url"], env=h["env"]).returncode == 0
    r = hpcenv("submit", "j", "--", "demo-tool", env={**h["env"], "PATH": "/nonexistent"})
    assert r.returncode == 2 and "hpcenv jobscript" in r.stderr


def test_pack_is_reused_while_the_env_is_unchanged(ready_home):
    h = ready_home
    env = h["env"]
    assert (
        hpcenv("create", "p", "python", "demo-tool", "hello", "-c", h["url"], env=env).returncode
        == 0
    )
    first = hpcenv("pack", "p", "--json", env=env)
    second = hpcenv("pack", "p", "--json", env=env)
    import json

    a, b = json.loads(first.stdout)["result"], json.loads(second.stdout)["result"]
    assert a["reused"] is False and b["reused"] is True and a["path"] == b["path"]
    assert hpcenv("install", "p", "numtool", env=env).returncode == 0
    c = json.loads(hpcenv("pack", "p", "--json", env=env).stdout)["result"]
    assert c["reused"] is False and c["path"] != a["path"] and not Path(a["path"]).exists()


def test_stage_unpacks_a_working_relocated_copy(ready_home, tmp_path):
    h = ready_home
    env = {k: v for k, v in h["env"].items() if not k.startswith("SLURM_")}
    assert hpcenv("create", "s", "python", "demo-tool", "-c", h["url"], env=env).returncode == 0
    target = tmp_path / "node-local" / "s"
    r = hpcenv("stage", "s", "--to", str(target), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(target)
    out = subprocess.run(
        ["sh", "-c", f'. "{target}/etc/hpcenv/activate.sh"; demo-tool'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert f"prefix: {target}" in out
