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
    assert c["reused"] is False and c["path"] != a["path"]
    assert Path(a["path"]).exists()  # a queued job may still stage it: only clean decides


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
    """The staging lines of a single-node job script, run by bash: an env whose directory
    name is shell syntax lands in a directory of that literal name, a pack without its own
    python is unpacked with python3 (there is no `python` on the PATH), the copy is what the
    command runs in, and it is gone when the job ends."""
    import sys
    import tarfile

    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin/conda-unpack").write_text("#!/usr/bin/env python\nopen('unpacked', 'w')\n")
    (env / "bin/conda-unpack").chmod(0o755)  # as conda-pack writes it
    pack = tmp_path / "env.tar.gz"
    with tarfile.open(pack, "w:gz") as tar:
        tar.add(env, arcname=".")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python3").symlink_to(sys.executable)
    name = 'a$(touch pwned)"b'
    text = jobs.render_jobscript(
        req(env_name=name, job_name="j", stage=True, command=("printenv", "CONDA_PREFIX")),
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
    assert run.stdout.strip() == str(tmp_path / "hpcenv-7" / name)
    assert (tmp_path / "unpacked").exists() and not (tmp_path / "pwned").exists()
    assert not (tmp_path / "hpcenv-7").exists()  # removed when the job ended


def test_wrap_goes_in_as_written_and_plain_commands_stay_quoted():
    text = jobs.render_jobscript(
        req(command=(), wrap='python arg.py "$SLURM_ARRAY_TASK_ID"', array="0-3"),
        SITE,
        log_dir=Path("/l"),
    )
    lines = text.splitlines()
    assert lines[-1] == 'python arg.py "$SLURM_ARRAY_TASK_ID"'
    assert "--wrap" in lines[-2] and lines[-2].startswith("#")
    quoted = jobs.render_jobscript(req(command=("echo", "$X")), SITE, log_dir=Path("/l"))
    assert quoted.splitlines()[-1] == "echo '$X'"
    with pytest.raises(UsageError, match="not both"):
        jobs.render_jobscript(req(wrap="echo"), SITE, log_dir=Path("/l"))


def test_stage_dir_may_name_job_variables_but_nothing_else():
    site = jobs.SchedulerSite(stage_dir="${LOCAL_SCRATCH}/$USER")
    text = jobs.render_jobscript(req(stage=True), site, log_dir=Path("/l"), pack=Path("/p.tgz"))
    assert 'HPCENV_STAGE_DIR="${LOCAL_SCRATCH}/$USER/hpcenv-$SLURM_JOB_ID"' in text
    for bad in ("/x/$(id)", "/x/`id`", 'a"b', "relative/dir", "/x y"):
        with pytest.raises(UsageError, match="stage_dir"):
            jobs.render_jobscript(
                req(stage=True),
                jobs.SchedulerSite(stage_dir=bad),
                log_dir=Path("/l"),
                pack=Path("/p.tgz"),
            )


def test_jobscript_makes_the_log_directory_or_refuses(ready_home, tmp_path):
    h = ready_home
    assert hpcenv("create", "j", "demo-tool", "-c", h["url"], env=h["env"]).returncode == 0
    logs = tmp_path / "new" / "logs"
    r = hpcenv("jobscript", "j", "--", "demo-tool", env={**h["env"],
               "HPCENV_SCHEDULER_LOG_DIR": str(logs)})  # fmt: skip
    assert r.returncode == 0 and logs.is_dir(), r.stderr
    out = tmp_path / "other" / "job.out"
    r = hpcenv("jobscript", "j", "--output", str(out), "--", "demo-tool", env=h["env"])
    assert r.returncode == 0 and out.parent.is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = hpcenv("jobscript", "j", "--", "demo-tool", env={**h["env"],
               "HPCENV_SCHEDULER_LOG_DIR": str(blocker / "logs")})  # fmt: skip
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1
    assert "log directory" in r.stderr


def test_two_envs_with_the_same_last_component_keep_their_own_packs(ready_home):
    import json

    h = ready_home
    other = h["storage"] / "other" / "a"
    assert hpcenv("create", "a", "demo-tool", "-c", h["url"], env=h["env"]).returncode == 0
    r = hpcenv("create", "-p", str(other), "demo-tool", "-c", h["url"], env=h["env"])
    assert r.returncode == 0, r.stderr
    first = json.loads(hpcenv("pack", "a", "--json", env=h["env"]).stdout)["result"]
    second = json.loads(hpcenv("pack", str(other), "--json", env=h["env"]).stdout)["result"]
    assert first["path"] != second["path"]
    assert Path(first["path"]).exists() and Path(second["path"]).exists()
    again = json.loads(hpcenv("pack", "a", "--json", env=h["env"]).stdout)["result"]
    assert again["reused"] is True and again["path"] == first["path"]
