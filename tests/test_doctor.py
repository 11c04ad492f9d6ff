"""`hpcenv doctor`: each check on a real HOME and storage, once triggered and once passing; where
the fix is a command, the test runs it and checks that the problem is gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcenv.doctor import Status, diagnose, find_conda_blocks
from hpcenv.settings import load_settings
from tests.conftest import need
from tests.fs import cli_env
from tests.fs import hpcenv_in as run
from tests.fs import hpcenv_ok as ok

# What `conda init bash` (conda 23+) writes, for a miniforge in /opt.
CONDA_BLOCK = """\
# >>> conda initialize >>>
# !! Contents within this block are managed by 'conda init' !!
__conda_setup="$('/opt/miniforge3/bin/conda' 'shell.bash' 'hook' 2> /dev/null)"
if [ $? -eq 0 ]; then
    eval "$__conda_setup"
else
    if [ -f "/opt/miniforge3/etc/profile.d/conda.sh" ]; then
        . "/opt/miniforge3/etc/profile.d/conda.sh"
    else
        export PATH="/opt/miniforge3/bin:$PATH"
    fi
fi
unset __conda_setup
# <<< conda initialize <<<
"""
USER_BEFORE = "# .bashrc\nexport EDITOR=vim\nalias ll='ls -l'   \n\n"
USER_AFTER = "\nexport PATH=$HOME/bin:$PATH\n# >>> not conda >>>\nmodule load gcc\n"
FAKE_LIBCUDA_C = Path(__file__).with_name("fake_libcuda.c")


def check(h, name: str, **env: str):
    """The named check of a doctor run on h's HOME and storage, in this process."""
    environ = {**h["env"], **env}
    environ = {k: v for k, v in environ.items() if v is not None}
    report = diagnose(load_settings(environ=environ), environ=environ)
    [found] = [c for c in report.checks if c.name == name]
    return found


def sh(command: str, h) -> None:
    """Run a check's fix exactly as printed."""
    result = subprocess.run(["bash", "-c", command], env=h["env"], capture_output=True, text=True)
    assert result.returncode == 0, (command, result.stderr)


@pytest.fixture
def bare_home(fake_home):
    """HOME and storage before `hpcenv setup`."""
    return {**fake_home, "env": cli_env(fake_home["home"], fake_home["storage"])}


@pytest.fixture
def env_home(ready_home):
    """Set up, with one environment e1."""
    h = ready_home
    ok(h, "create", "e1", "demo-tool", "-c", h["url"])
    return h


def envdir(h, name: str = "e1") -> Path:
    return h["home"] / ".conda" / "envs" / name


# ----------------------------------------------------------------------------- whole runs


def test_doctor_on_a_set_up_account_finds_nothing_wrong(env_home):
    h = env_home
    environ = {**h["env"], "MODULESHOME": "/usr/share/modules"}
    environ.pop("SLURM_JOB_ID", None)
    report = diagnose(load_settings(environ=environ), environ=environ)
    names = [c.name for c in report.checks]
    assert len(names) == len(set(names)) >= 17
    bad = [c for c in report.checks if c.status is not Status.OK and c.name != "sbatch"]
    assert bad == []
    assert not report.failed


def test_doctor_exits_1_on_a_failure_and_prints_the_fix(bare_home):
    h = bare_home
    (h["home"] / ".cache").mkdir()  # caches in home: not redirected
    result = run(h, "doctor")
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "hpcenv setup" in result.stdout
    data = json.loads(run(h, "doctor", "--json").stdout)
    assert data["schema_version"] == 1
    [redirect] = [c for c in data["result"]["checks"] if c["name"] == "redirect"]
    assert redirect["status"] == "FAIL" and redirect["fix"] == "hpcenv setup"


def test_doctor_with_only_warnings_exits_0(env_home):
    h = env_home
    (h["home"] / ".condarc").write_text("channels:\n  - defaults\n")
    result = run(h, "doctor", "--json")
    assert result.returncode == 0, result.stdout
    statuses = {c["name"]: c["status"] for c in json.loads(result.stdout)["result"]["checks"]}
    assert statuses["condarc-defaults"] == "WARN" and "FAIL" not in statuses.values()


# ----------------------------------------------------------------------------- storage, home


def test_missing_storage_fails(bare_home):
    h = bare_home
    c = check(h, "storage", HPCENV_STORAGE=None)
    assert c.status is Status.FAIL and c.fix == "hpcenv setup --storage DIR"
    c = check(h, "storage", HPCENV_STORAGE=str(h["root"] / "nowhere"))
    assert c.status is Status.FAIL and "does not exist" in c.detail
    assert check(h, "storage").status is Status.OK


def test_caches_not_redirected_fail_until_setup(bare_home):
    h = bare_home
    assert check(h, "redirect").status is Status.WARN  # nothing there yet
    (h["home"] / ".cache" / "pip").mkdir(parents=True)
    c = check(h, "redirect")
    assert c.status is Status.FAIL and c.fix == "hpcenv setup"
    ok(h, "setup", "--yes")
    assert check(h, "redirect").status is Status.OK


def test_dangling_redirect_link_fails_and_its_fix_restores_it(ready_home):
    h = ready_home
    shutil.rmtree(h["storage"] / ".cache")
    c = check(h, "dangling-links")
    assert c.status is Status.FAIL and ".cache" in c.detail
    sh(c.fix, h)
    assert check(h, "dangling-links").status is Status.OK
    os.symlink(h["root"] / "gone", h["home"] / ".cache" / "huggingface")
    c = check(h, "dangling-links")
    assert c.status is Status.WARN and "huggingface" in c.detail
    sh(c.fix, h)
    assert check(h, "dangling-links").status is Status.OK


def test_cache_variables_and_condarc_dirs_in_home_warn(ready_home):
    h = ready_home
    assert check(h, "caches-in-home").status is Status.OK
    c = check(h, "caches-in-home", PIP_CACHE_DIR=str(h["home"] / "pipcache"))
    assert c.status is Status.WARN and c.fix == "unset PIP_CACHE_DIR"
    # ~/.cache is in storage after setup: pointing there is fine
    assert check(h, "caches-in-home", XDG_CACHE_HOME=str(h["home"] / ".cache")).status is Status.OK
    (h["home"] / ".condarc").write_text(f"pkgs_dirs:\n  - {h['home']}/pkgs\n")
    c = check(h, "caches-in-home")
    assert c.status is Status.WARN and "pkgs_dirs" in c.detail and "--remove pkgs_dirs" in c.fix


def test_env_in_home_warns_unless_allowed(ready_home):
    h = ready_home
    ok(h, "create", "-p", str(h["home"] / "myenv"), "demo-tool", "-c", h["url"], "--allow-home")
    c = check(h, "envs-in-home")
    assert c.status is Status.WARN and "myenv" in c.detail and "hpcenv create" in c.fix
    assert check(h, "envs-in-home", HPCENV_ALLOW_HOME="1").status is Status.OK
    ok(h, "remove", str(h["home"] / "myenv"), "--yes")
    assert check(h, "envs-in-home").status is Status.OK


def test_home_above_80_percent_of_its_quota_warns_and_above_100_fails(ready_home):
    h = ready_home
    (h["home"] / "data.bin").write_bytes(b"x" * (900 * 1024))
    site = h["root"] / "site.toml"
    for quota, status in (("10M", Status.OK), ("1M", Status.WARN), ("512K", Status.FAIL)):
        site.write_text(f'home_quota = "{quota}"\n')
        c = check(h, "home-quota", HPCENV_SITE_CONFIG=str(site))
        assert c.status is status, (quota, c)
    assert c.fix == "hpcenv usage" and "home_quota setting" in c.detail


# ----------------------------------------------------------------------------- conda init


def test_conda_init_block_is_found_and_fix_removes_only_it(ready_home):
    h = ready_home
    bashrc = h["home"] / ".bashrc"
    original = (USER_BEFORE + CONDA_BLOCK + USER_AFTER).encode()
    bashrc.write_bytes(original)
    bashrc.chmod(0o640)
    c = check(h, "conda-init")
    assert c.status is Status.WARN and str(bashrc) in c.detail and c.fix == "hpcenv doctor --fix"
    result = ok(h, "doctor", "--fix")
    assert "removed the conda initialize block" in result.stdout
    assert bashrc.read_bytes() == (USER_BEFORE + USER_AFTER).encode()
    assert bashrc.stat().st_mode & 0o777 == 0o640
    [backup] = h["home"].glob(".bashrc.hpcenv-backup-*")
    assert backup.read_bytes() == original
    assert check(h, "conda-init").status is Status.OK
    ok(h, "doctor", "--fix")  # nothing left to fix: the file stays as it is
    assert bashrc.read_bytes() == (USER_BEFORE + USER_AFTER).encode()
    assert len(list(h["home"].glob(".bashrc.hpcenv-backup-*"))) == 1


def test_conda_init_fix_edits_a_symlinked_zshrc_where_it_points(ready_home):
    h = ready_home
    dotfiles = h["home"] / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "zshrc"
    zsh_block = CONDA_BLOCK.replace("shell.bash", "shell.zsh")
    target.write_text("setopt autocd\n" + zsh_block)
    (h["home"] / ".zshrc").symlink_to(target)
    assert check(h, "conda-init").status is Status.WARN
    ok(h, "doctor", "--fix")
    assert (h["home"] / ".zshrc").is_symlink()
    assert target.read_text() == "setopt autocd\n"
    assert len(list(dotfiles.glob("zshrc.hpcenv-backup-*"))) == 1


def test_conda_init_block_without_end_or_inside_a_function_is_left_for_the_user(ready_home):
    h = ready_home
    bashrc = h["home"] / ".bashrc"
    unterminated = USER_BEFORE + CONDA_BLOCK.split("# <<<")[0]
    bashrc.write_text(unterminated)
    assert find_conda_blocks(bashrc.read_bytes()) == []
    c = check(h, "conda-init")
    assert c.status is Status.WARN and "by hand" in c.fix
    in_function = "lazy_conda() {\n" + CONDA_BLOCK + "}\n" + USER_AFTER
    bashrc.write_text(in_function)
    c = check(h, "conda-init")
    assert c.status is Status.WARN and "by hand" in c.fix
    ok(h, "doctor", "--fix")
    assert bashrc.read_text() == in_function
    assert not list(h["home"].glob(".bashrc.hpcenv-backup-*"))


def test_user_site_packages_warn_and_mention_pythonnousersite(ready_home):
    h = ready_home
    site = h["home"] / ".local" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    assert check(h, "user-site").status is Status.OK  # empty
    (site / "leaky.py").write_text("")
    c = check(h, "user-site")
    assert c.status is Status.WARN and "PYTHONNOUSERSITE=1" in c.detail
    assert c.fix == "export PYTHONNOUSERSITE=1"


# ----------------------------------------------------------------------------- envs


def test_registered_but_missing_env_warns_and_its_fix_unlists_it(env_home):
    h = env_home
    assert check(h, "env-registry").status is Status.OK
    shutil.rmtree(envdir(h))
    c = check(h, "env-registry")
    assert c.status is Status.WARN and "missing" in c.detail
    sh(c.fix, h)
    txt = h["home"] / ".conda" / "environments.txt"
    assert str(envdir(h)) not in txt.read_text().splitlines()


def test_env_in_envs_dir_but_unregistered_warns_and_its_fix_registers_it(env_home):
    h = env_home
    txt = h["home"] / ".conda" / "environments.txt"
    txt.write_text("")
    c = check(h, "env-registry")
    assert c.status is Status.WARN and "not in environments.txt" in c.detail
    sh(c.fix, h)
    assert txt.read_text().splitlines() == [str(envdir(h))]
    assert check(h, "env-registry").status is Status.OK


def test_leftover_of_an_interrupted_create_warns_until_clean(env_home):
    h = env_home
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (h["home"] / ".conda" / "envs" / f".e2.hpcenv-tmp-{dead}" / "conda-meta").mkdir(parents=True)
    c = check(h, "leftovers")
    assert c.status is Status.WARN and c.fix == "hpcenv clean --yes"
    sh(c.fix, h)
    assert check(h, "leftovers").status is Status.OK


def test_interrupted_update_fails_and_reinstall_repairs_it(env_home):
    h = env_home
    pending = envdir(h) / "etc" / "hpcenv" / "pending.json"
    pending.write_text(json.dumps({"specs": ["demo-tool"], "started": 0}))
    c = check(h, "pending-update")
    assert c.status is Status.FAIL and c.fix == "hpcenv install e1"
    sh(c.fix, h)
    assert not pending.exists()
    assert check(h, "pending-update").status is Status.OK


def test_interrupted_setup_fails_and_interrupted_clean_warns(env_home):
    h = env_home
    journal = h["storage"] / ".hpcenv" / "journal"
    assert check(h, "interrupted").status is Status.OK
    (journal / "clean.jsonl").write_text('{"op": "clean", "started": 0, "items": 0}\n')
    c = check(h, "interrupted")
    assert c.status is Status.WARN and c.fix == "hpcenv clean --yes"
    sh(c.fix, h)
    assert check(h, "interrupted").status is Status.OK
    (journal / "setup.jsonl").write_text('{"op": "setup", "started": 0}\n')
    c = check(h, "interrupted")
    assert c.status is Status.FAIL and c.fix == "hpcenv setup"


def test_world_writable_env_or_cache_fails_and_chmod_fixes_it(env_home):
    h = env_home
    (envdir(h) / "bin").chmod(0o777)
    (h["storage"] / ".cache" / "rattler").chmod(0o777)
    c = check(h, "world-writable")
    assert c.status is Status.FAIL
    assert str(envdir(h) / "bin") in c.detail and "rattler" in c.detail
    assert c.fix.startswith("chmod o-w ")
    sh(c.fix, h)
    assert check(h, "world-writable").status is Status.OK


def test_world_writable_file_inside_an_env_or_the_cache_fails_and_the_fix_clears_it(env_home):
    h = env_home
    planted = envdir(h) / "share" / "demo-tool" / "notes.txt"  # its own inode, not the cache's
    planted.write_text("x\n")
    cached = h["storage"] / ".cache" / "rattler" / "pkgs" / "loose.txt"
    cached.write_text("y\n")
    for path in (planted, cached):
        path.chmod(0o666)
    c = check(h, "world-writable")
    assert c.status is Status.FAIL
    assert str(planted) in c.detail and str(cached) in c.detail
    sh(c.fix, h)
    assert check(h, "world-writable").status is Status.OK
    assert planted.stat().st_mode & 0o777 == 0o664


def test_many_world_writable_files_are_fixed_by_one_find_per_tree(env_home):
    h = env_home
    many = envdir(h) / "share" / "many"
    many.mkdir()
    for i in range(12):
        (many / f"f{i}").write_text("x")
        (many / f"f{i}").chmod(0o666)
    c = check(h, "world-writable")
    assert c.status is Status.FAIL and "and 7 more" in c.detail
    assert c.fix.startswith("find ")
    sh(c.fix, h)
    assert check(h, "world-writable").status is Status.OK


# ----------------------------------------------------------------------------- site


def test_defaults_channel_in_condarc_warns_with_the_licence_reason(ready_home):
    h = ready_home
    condarc = h["home"] / ".condarc"
    condarc.write_text("channels:\n  - defaults\n")
    c = check(h, "condarc-defaults")
    assert c.status is Status.WARN and "licence" in c.detail and "conda-forge" in c.detail
    assert "--remove channels defaults" in c.fix and "--add channels conda-forge" in c.fix
    condarc.write_text("channels:\n  - conda-forge\nchannel_priority: strict\n")
    assert check(h, "condarc-defaults").status is Status.OK
    condarc.write_text("# only a comment\n")
    assert check(h, "condarc-defaults").status is Status.OK
    condarc.write_text("channels: [defaults\n")
    c = check(h, "condarc-defaults")
    assert c.status is Status.WARN and "not valid YAML" in c.detail


def test_missing_sbatch_warns(ready_home, tmp_path):
    h = ready_home
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    c = check(h, "sbatch", PATH=str(empty))
    assert c.status is Status.WARN and "sbatch" in c.detail
    # with sbatch there, the check asks SLURM: tests/test_slurm_jobs.py, on the real cluster


def test_missing_environment_modules_warn(ready_home):
    h = ready_home
    c = check(h, "modules", LMOD_CMD=None, MODULESHOME=None)
    assert c.status is Status.WARN
    assert check(h, "modules", MODULESHOME="/usr/share/lmod/lmod").status is Status.OK


def _fake_libcuda(tmp_path: Path, version: int) -> Path:
    gcc = shutil.which("gcc")
    need("gcc", gcc is not None, "gcc is needed to build the fake libcuda.so.1")
    out = tmp_path / f"cuda{version}" / "libcuda.so.1"
    out.parent.mkdir()
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-o", str(out), str(FAKE_LIBCUDA_C), f"-DFAKE_VERSION={version}"],
        check=True,
    )
    return out


def test_gpu_job_with_a_driver_older_than_an_env_needs_fails(ready_home, tmp_path):
    h = ready_home
    ok(h, "create", "gpu", "pytorch", "--gpu", "--cuda", "12.4", "-c", h["url"])

    def gpu_check(**env: str) -> dict:
        result = run(h, "doctor", "--json", **env)
        checks = json.loads(result.stdout)["result"]["checks"]
        [found] = [c for c in checks if c["name"] == "gpu-driver"]
        return {**found, "exit": result.returncode}

    old, new = _fake_libcuda(tmp_path, 11080), _fake_libcuda(tmp_path, 12040)
    outside = gpu_check(HPCENV_LIBCUDA=str(old))
    assert outside["status"] == "OK" and "not inside a SLURM job" in outside["detail"]
    too_old = gpu_check(SLURM_JOB_ID="42", HPCENV_LIBCUDA=str(old))
    assert too_old["status"] == "FAIL" and too_old["exit"] == 1
    assert "gpu needs CUDA >= 12" in too_old["detail"] and "11.8" in too_old["detail"]
    assert too_old["fix"] == "hpcenv install gpu --cuda 11.8"
    fine = gpu_check(SLURM_JOB_ID="42", HPCENV_LIBCUDA=str(new))
    assert fine["status"] == "OK" and "12.4" in fine["detail"]
    no_gpu = gpu_check(SLURM_JOB_ID="42", HPCENV_LIBCUDA="none")
    assert no_gpu["status"] == "OK" and "no CUDA driver" in no_gpu["detail"]
