"""Activation that follows the env and works for any prefix: hooks found when activating, run
safely under `set -euo pipefail` and in bash; static scripts made for envs hpcenv did not
make; failed activations that stop `set -e` scripts; a venv's `deactivate` kept."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcenv.activate import ensure_static_script, static_script_path, write_static_script
from tests.conftest import IS_ROOT, need, run_as_user
from tests.foreign import rattler_prefix
from tests.fs import hpcenv, hpcenv_in, hpcenv_ok
from tests.hooked import hooks_channel  # noqa: F401
from tests.test_activate import make_prefix, shell_path


@pytest.fixture
def hooked(ready_home, hooks_channel):  # noqa: F811
    """An env whose package has a bash, nounset-unsafe, failing activate script (as gdal's)."""
    h = ready_home
    hpcenv_ok(h, "create", "hooked", "demo-tool", "gdal-like", "-c", h["url"], "-c",
              hooks_channel.url)  # fmt: skip
    return {**h, "prefix": h["home"] / ".conda" / "envs" / "hooked"}


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script],
        env=env or {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
    )


# ------------------------------------------------------------- activation follows the env


def test_static_script_runs_hooks_added_later_and_survives_hooks_removed(tmp_path):
    prefix = make_prefix(tmp_path)
    script = write_static_script(prefix, "myenv")
    hooks = prefix / "etc" / "conda" / "activate.d"
    (hooks / "hook.sh").unlink()  # conda removed the package that shipped it
    (hooks / "added-later.sh").write_text("export ADDED=yes\n")  # mamba installed another
    for sh in ("bash", "dash"):
        need(sh, shutil.which(sh) is not None, f"{sh} is not installed")
        r = subprocess.run(
            [sh, "-c", f'set -eu; . "{script}"; echo "added=$ADDED hook=${{HOOK_RAN-no}}"'],
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and r.stdout == "added=yes hook=no\n", (sh, r.stderr)


def test_job_activation_survives_set_euo_pipefail_with_an_unsafe_hook(hooked):
    script = hooked["prefix"] / "etc" / "hpcenv" / "activate.sh"
    r = bash(
        "set -euo pipefail\n"
        f'source "{script}"\n'
        'echo "gdal=$GDAL_DATA opts=$-"\n'
        "deactivate\n"
        'echo "after=${GDAL_DATA-unset} opts=$-"\n'
    )
    assert r.returncode == 0, r.stderr
    active, after = r.stdout.splitlines()
    assert active.startswith(f"gdal={hooked['prefix']}/share/gdal ")
    # the caller's errexit and nounset are back, after activation and after deactivation
    for line in (active, after):
        opts = line.rsplit("opts=", 1)[1]
        assert "e" in opts and "u" in opts, line
    assert after.startswith("after=unset ")


def test_run_sources_bash_hooks_with_bash(hooked):
    r = hpcenv_in(hooked, "run", "hooked", "--", "sh", "-c", 'echo "gdal=$GDAL_DATA"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"gdal={hooked['prefix']}/share/gdal\n"
    assert "not found" not in r.stderr and r.stderr == ""


# ----------------------------------------------------------- any prefix: rattler, others


def test_a_plain_rattler_prefix_gets_its_static_script_inside_and_runs_its_hooks(
    ready_home, tmp_path
):
    h = ready_home
    prefix = rattler_prefix(h["storage"] / "plain", [h["url"]], "demo-tool", "python")
    r = hpcenv_in(h, "run", str(prefix), "--", "sh", "-c", 'echo "hook=$DEMO_TOOL_ACTIVATED"')
    assert r.returncode == 0 and r.stdout == "hook=1\n", r.stderr
    static = prefix / "etc" / "hpcenv" / "activate.sh"
    assert static.is_file()
    job = hpcenv_ok(h, "jobscript", str(prefix), "--", "demo-tool").stdout
    assert f"source {static}" in job.splitlines()
    ran = bash(job.replace("#!/bin/bash", ""), env={"PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0 and f"prefix: {prefix}" in ran.stdout, ran.stderr


@pytest.fixture(scope="module")
def users():
    need("users", IS_ROOT, "making the users hpcalice and hpcbob needs root")
    for user in ("hpcalice", "hpcbob"):
        subprocess.run(["useradd", "-M", "-N", "-s", "/bin/sh", user], capture_output=True)
    return "hpcalice", "hpcbob"


def _chown_tree(root: Path, user: str) -> None:
    import pwd

    pw = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, pw.pw_uid, pw.pw_gid)


def test_a_prefix_of_another_user_gets_its_static_script_in_the_state_dir(
    ready_home, users, tmp_path
):
    h = ready_home
    prefix = rattler_prefix(tmp_path / "bobs" / "env", [h["url"]], "demo-tool")
    _chown_tree(tmp_path / "bobs", "hpcbob")
    before = sorted(p.name for p in prefix.iterdir())
    job = hpcenv_ok(h, "jobscript", str(prefix), "--", "demo-tool").stdout
    static = static_script_path(prefix, h["storage"] / ".hpcenv")
    assert f"source {static}" in job.splitlines()
    assert static.is_file() and static.stat().st_mode & 0o777 == 0o600
    assert static.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in prefix.iterdir()) == before  # bob's env is untouched
    ran = bash(job.replace("#!/bin/bash", ""), env={"PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0 and f"prefix: {prefix}" in ran.stdout, ran.stderr


def _ensure_as_user(prefix: Path, state_dir: Path) -> str:
    return str(ensure_static_script(prefix, str(prefix), state_dir))


def test_as_a_user_the_own_prefix_holds_the_script_and_anothers_does_not(ready_home, users):
    """hpcalice (not root) activates her own plain prefix and root's read-only one."""
    import tempfile

    h = ready_home
    top = Path(tempfile.mkdtemp(prefix="hpcenv-anyenv-"))  # pytest's basetemp is root's 0700
    try:
        top.chmod(0o755)
        own = rattler_prefix(top / "alice" / "own", [h["url"]], "demo-tool")
        others = rattler_prefix(top / "roots" / "env", [h["url"]], "demo-tool")
        (top / "alice" / "storage").mkdir()
        _chown_tree(top / "alice", "hpcalice")
        state = top / "alice" / "storage" / ".hpcenv"
        inside = run_as_user("hpcalice", _ensure_as_user, own, state)
        assert inside == str(own / "etc" / "hpcenv" / "activate.sh")
        in_state = run_as_user("hpcalice", _ensure_as_user, others, state)
        assert in_state == str(static_script_path(others, state))
        assert not (others / "etc" / "hpcenv").exists()
        assert os.stat(in_state).st_uid == os.stat(inside).st_uid != 0
    finally:
        shutil.rmtree(top)


# ------------------------------------------------------ the terminal hint, failed activation


def test_activate_on_a_terminal_prints_a_one_line_hint_on_stderr(ready_home):
    h = ready_home
    hpcenv_ok(h, "create", "demo", "demo-tool", "-c", h["url"])
    leader, follower = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "hpcenv", "activate", "demo", "--shell", "bash"],
            env=h["env"],
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert r.returncode == 0
    assert r.stderr.count("\n") == 1 and 'eval "$(hpcenv activate demo)"' in r.stderr
    piped = hpcenv("activate", "demo", "--shell", "bash", env=h["env"])
    assert piped.stderr == "" and "CONDA_PREFIX" in piped.stdout


FAILED_EVAL = {
    "bash": ["bash", "-c", 'set -e; eval "$(hpcenv activate typo)"; echo carried-on'],
    "zsh": ["zsh", "-f", "-c", 'set -e; eval "$(hpcenv activate typo --shell zsh)"; echo carried-on'],
    "fish": ["fish", "--no-config", "-c",
             "hpcenv activate typo --shell fish | source; or exit 3; echo carried-on"],
    "tcsh": ["tcsh", "-f", "-e", "-c", 'eval "`hpcenv activate typo --shell tcsh`"; echo carried-on'],
}  # fmt: skip


@pytest.mark.parametrize("shell", FAILED_EVAL)
def test_a_failed_activation_stops_a_set_e_script(ready_home, shell, tmp_path):
    shell_path(shell)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hpcenv").write_text(f'#!/bin/sh\nexec {sys.executable} -m hpcenv "$@"\n')
    (bin_dir / "hpcenv").chmod(0o755)
    env = {**ready_home["env"], "PATH": f"{bin_dir}:/usr/bin:/bin"}
    r = subprocess.run(FAILED_EVAL[shell], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "carried-on" not in r.stdout, (r.stdout, r.stderr)
    assert "no environment 'typo'" in r.stderr


def test_an_untrusted_env_prints_false_for_the_eval(ready_home, tmp_path):
    h = ready_home
    hpcenv_ok(h, "create", "demo", "demo-tool", "-c", h["url"])
    prefix = h["home"] / ".conda" / "envs" / "demo"
    (prefix / "bin").chmod(0o777)  # anyone could plant a `python` there
    try:
        r = hpcenv_in(h, "activate", "demo")
    finally:
        (prefix / "bin").chmod(0o755)
    assert r.returncode == 2 and r.stdout == "false\n" and len(r.stderr.splitlines()) == 1


# ------------------------------------------------------------------- a venv's deactivate

VENV_ROUND_TRIP = {  # activate the venv, then the env; deactivate twice
    "bash": (["bash", "-c"], ". {venv}/bin/activate; . {code}; "),
    "zsh": (["zsh", "-f", "-c"], ". {venv}/bin/activate; . {code}; "),
    "fish": (["fish", "--no-config", "-c"], "source {venv}/bin/activate.fish; source {code}; "),
    # lines, not ';': tcsh expands aliases per line. The venv's activate.csh reads $prompt,
    # which only an interactive tcsh has: unset, its source stops there (and whether the rest
    # of the -c script still runs varied from run to run), so the prompt is set as a user's is
    "tcsh": (
        ["tcsh", "-f", "-c"],
        "set prompt = '> '\nsource {venv}/bin/activate.csh\nsource {code}\n",
    ),
}
REPORT = {
    "fish": 'deactivate; echo "venv=$VIRTUAL_ENV"; deactivate; '
    'set -q VIRTUAL_ENV; and echo after=1; or echo after=0; echo "path=$PATH"',
    "tcsh": 'deactivate\necho "venv=$VIRTUAL_ENV"\ndeactivate\necho "after=$?VIRTUAL_ENV"\n'
    'echo "path=$PATH"',
}


@pytest.mark.parametrize("shell", VENV_ROUND_TRIP)
def test_deactivate_gives_back_the_venvs_deactivate(ready_home, tmp_path, shell):
    shell_path(shell)
    h = ready_home
    hpcenv_ok(h, "create", "demo", "demo-tool", "-c", h["url"])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    code = tmp_path / "act"
    bin_dir = tmp_path / "bin"  # tcsh's deactivate asks hpcenv for its code
    bin_dir.mkdir()
    (bin_dir / "hpcenv").write_text(f'#!/bin/sh\nexec {sys.executable} -m hpcenv "$@"\n')
    (bin_dir / "hpcenv").chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    env = {**h["env"], "PATH": path}
    code.write_text(hpcenv_ok(h, "activate", "demo", "--shell", shell, **env).stdout)
    argv, start = VENV_ROUND_TRIP[shell]
    report = REPORT.get(
        shell,
        'deactivate; echo "venv=$VIRTUAL_ENV"; deactivate; echo "after=${VIRTUAL_ENV:-0}"; '
        'echo "path=$PATH"',
    )
    r = subprocess.run(
        [*argv, start.format(venv=venv, code=code) + report],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"venv={venv}", "after=0", f"path={path}"], r.stderr
    assert "Undefined variable" not in r.stderr
