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


def test_packing_an_env_keeps_the_pack_of_an_env_whose_name_extends_its_name(ready_home):
    import json

    h = ready_home
    for name in ("torch-gpu", "torch"):
        assert hpcenv("create", name, "demo-tool", "-c", h["url"], env=h["env"]).returncode == 0
    gpu = json.loads(hpcenv("pack", "torch-gpu", "--json", env=h["env"]).stdout)["result"]
    assert hpcenv("pack", "torch", "--json", env=h["env"]).returncode == 0
    assert Path(gpu["path"]).exists()
    again = json.loads(hpcenv("pack", "torch-gpu", "--json", env=h["env"]).stdout)["result"]
    assert again["reused"] is True


def test_staged_job_quotes_the_env_name_and_unpacks_with_python3(tmp_path):
    """The staging lines of a job script, run by bash with a stand-in srun: an env whose
    directory name is shell syntax lands in a directory of that literal name, and a pack
    without its own python is unpacked with python3 (there is no `python` on the PATH)."""
    import os
    import sys
    import tarfile

    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "etc/hpcenv").mkdir(parents=True)
    (env / "bin/conda-unpack").write_text("#!/usr/bin/env python\nopen('unpacked', 'w')\n")
    (env / "bin/conda-unpack").chmod(0o755)  # as conda-pack writes it
    (env / "etc/hpcenv/activate.sh").write_text('STAGED_AT="$HPCENV_STAGED"; export STAGED_AT\n')
    pack = tmp_path / "env.tar.gz"
    with tarfile.open(pack, "w:gz") as tar:
        tar.add(env, arcname=".")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "srun").write_text(
        '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n'
    )
    (tools / "srun").chmod(0o755)
    (tools / "python3").symlink_to(sys.executable)
    name = 'a$(touch pwned)"b'
    text = jobs.render_jobscript(
        req(env_name=name, job_name="j", stage=True, command=("printenv", "STAGED_AT")),
        jobs.SchedulerSite(),
        log_dir=Path("/l"),
        pack=pack,
    )
    run = subprocess.run(
        ["bash"],
        input=text,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": f"{tools}:/usr/bin:/bin", "SLURM_JOB_ID": "7", "TMPDIR": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    staged = tmp_path / "hpcenv-7" / name
    assert run.stdout.strip() == str(staged)
    assert (tmp_path / "unpacked").exists() and not (tmp_path / "pwned").exists()
    assert not os.path.exists(tmp_path / "hpcenv-7" / "ab")
