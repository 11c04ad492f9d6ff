"""Activation run by real shells: bash, zsh, fish, tcsh, sh; `hpcenv run` exit codes and signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcenv.activate import activation_script, static_script, write_static_script
from tests.conftest import need

SHELLS = ("bash", "zsh", "fish", "tcsh")


def shell_path(name: str) -> str:
    path = shutil.which(name)
    need(name, path is not None, f"{name} is not installed (Debian package {name})")
    return path


def make_prefix(root: Path, name: str = "env") -> Path:
    """A hand-made env: a tool printing CONDA_PREFIX, activate.d/deactivate.d in three dialects."""
    prefix = root / name
    (prefix / "bin").mkdir(parents=True)
    (prefix / "conda-meta").mkdir()
    tool = prefix / "bin" / "tool"
    tool.write_text('#!/bin/sh\nprintf "tool:%s\\n" "$CONDA_PREFIX"\n')
    tool.chmod(0o755)
    for kind, sh_line, fish_line, csh_line in (
        ("activate", "export HOOK_RAN=yes", "set -gx HOOK_RAN yes", "setenv HOOK_RAN yes"),
        ("deactivate", "unset HOOK_RAN", "set -e HOOK_RAN", "unsetenv HOOK_RAN"),
    ):
        d = prefix / "etc" / "conda" / f"{kind}.d"
        d.mkdir(parents=True)
        (d / "hook.sh").write_text(sh_line + "\n")
        (d / "hook.fish").write_text(fish_line + "\n")
        (d / "hook.csh").write_text(csh_line + "\n")
    return prefix


BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/nonexistent-home",
    "LANG": "C.UTF-8",
    "CONDA_SHLVL": "",  # set but empty: must come back empty, not unset
    "PYTHONNOUSERSITE": "keep-me",
}


def run_shell(shell: str, script: str, env: dict | None = None) -> str:
    args = {"fish": ["--no-config", "-c"], "tcsh": ["-f", "-c"], "zsh": ["-f", "-c"]}.get(
        shell, ["-c"]
    )
    result = subprocess.run(
        [shell_path(shell), *args, script],
        env=env or BASE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (shell, result.stderr, script)
    return result.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_activation_sets_path_and_variables_runs_hooks_and_the_tool(tmp_path, shell):
    prefix = make_prefix(tmp_path)
    code = tmp_path / "act"
    code.write_text(activation_script(prefix, name="myenv", shell=shell, environ=BASE_ENV))
    out = run_shell(
        shell,
        f"source {code}; tool; echo prefix=$CONDA_PREFIX; echo name=$CONDA_DEFAULT_ENV; "
        f"echo hook=$HOOK_RAN; echo nus=$PYTHONNOUSERSITE; echo lvl=$CONDA_SHLVL",
    )
    assert f"tool:{prefix}" in out
    assert f"prefix={prefix}" in out and "name=myenv" in out
    assert "hook=yes" in out and "nus=1" in out and "lvl=1" in out


def _env_dump(shell: str) -> str:
    """env -0 shows exactly what a child process gets, every byte (od -c); order aside."""
    return "env -0 | sort -z | od -c"


@pytest.mark.parametrize("shell", SHELLS)
def test_deactivate_restores_path_and_variables_byte_for_byte(tmp_path, shell):
    prefix = make_prefix(tmp_path)
    code = tmp_path / "act"
    env = dict(BASE_ENV)
    if shell == "tcsh":  # tcsh's deactivate asks hpcenv for the restoring code
        env["PATH"] = f"{os.path.dirname(shutil.which('hpcenv') or sys.executable)}:{env['PATH']}"
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
    code.write_text(activation_script(prefix, name="myenv", shell=shell, environ=env))
    sep = "\necho SEPARATOR\n"  # lines, not ";": tcsh expands aliases per line
    out = run_shell(
        shell, f"{_env_dump(shell)}{sep}source {code}{sep}deactivate{sep}{_env_dump(shell)}", env
    )
    parts = [part.strip() for part in out.split("SEPARATOR")]
    assert parts[0] == parts[-1]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_activating_a_second_env_deactivates_the_first(tmp_path, shell):
    a, b = make_prefix(tmp_path, "a"), make_prefix(tmp_path, "b")
    fa, fb = tmp_path / "a.sh", tmp_path / "b.sh"
    fa.write_text(activation_script(a, name="a", shell=shell))
    fb.write_text(activation_script(b, name="b", shell=shell))
    out = run_shell(shell, f'source {fa}; source {fb}; echo "$PATH"; deactivate; echo "$PATH"')
    active, restored = out.strip().splitlines()
    assert active.startswith(f"{b}/bin:") and f"{a}/bin" not in active
    assert restored == BASE_ENV["PATH"]


@pytest.mark.parametrize("sh", ["bash", "dash", "sh"])
def test_static_script_activates_without_python(tmp_path, sh):
    need(sh, sh != "dash" or shutil.which("dash") is not None, "dash is not installed")
    prefix = make_prefix(tmp_path)
    script = write_static_script(prefix, "myenv")
    assert script == prefix / "etc/hpcenv/activate.sh" and script.stat().st_mode & 0o777 == 0o644
    env = {**BASE_ENV, "PATH": "/usr/bin:/bin"}  # no python on PATH is needed
    out = subprocess.run(
        [sh, "-c", f'. "{script}"; tool; echo "hook=$HOOK_RAN"; deactivate; echo "path=$PATH"'],
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert f"tool:{prefix}" in out and "hook=yes" in out and "path=/usr/bin:/bin" in out


# -------------------------------------------------------------- hostile prefixes (hypothesis)

HOSTILE = st.text(
    alphabet=st.sampled_from(list("ab Z09_-.'\"$`!*?\\;&|(){}[]<>~#é漢ü")),
    min_size=1,
    max_size=16,
).filter(lambda s: s.strip() and s not in (".", ".."))


def _check_hostile(tmp_path: Path, shell: str, name: str) -> None:
    root = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), os.urandom(4).hex().encode())))
    root.mkdir()
    try:
        prefix = make_prefix(root, name)
        code = root / "code"
        code.write_text(activation_script(prefix, name="hostile", shell=shell, environ=BASE_ENV))
        out = run_shell(shell, f"source '{code}'; tool")
        assert out == f"tool:{prefix}\n"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=HOSTILE)
def test_hostile_prefixes_activate_exactly_in_every_shell(tmp_path, shell, name):
    _check_hostile(tmp_path, shell, name)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=HOSTILE.filter(lambda s: "!" not in s))
def test_hostile_prefixes_activate_exactly_in_tcsh(tmp_path, name):
    _check_hostile(tmp_path, "tcsh", name)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=HOSTILE)
def test_hostile_prefixes_work_in_the_static_script(tmp_path, name):
    root = tmp_path / os.urandom(4).hex()
    root.mkdir()
    prefix = make_prefix(root, name)
    script = write_static_script(prefix, "x")
    out = subprocess.run(
        ["sh", "-c", '. "$1"; tool', "sh", str(script)],
        env=BASE_ENV,
        capture_output=True,
        text=True,
    ).stdout
    assert out == f"tool:{prefix}\n"
    shutil.rmtree(root)


def test_newline_in_a_prefix_is_refused(tmp_path):
    from hpcenv.errors import UsageError

    with pytest.raises(UsageError):
        static_script(tmp_path / "a\nb", name="x")


# -------------------------------------------------------------- hpcenv activate / run (CLI)


@pytest.fixture
def demo_env(ready_home):
    from tests.fs import hpcenv

    r = hpcenv(
        "create", "demo", "python", "demo-tool", "-c", ready_home["url"], env=ready_home["env"]
    )
    assert r.returncode == 0, r.stderr
    return ready_home


def test_eval_of_hpcenv_activate_works_in_bash_and_deactivate_restores(demo_env):
    env = {**demo_env["env"], "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    script = (
        f'before="$PATH"; eval "$({sys.executable} -m hpcenv activate demo)"; demo-tool; '
        'echo "hook=$DEMO_TOOL_ACTIVATED"; deactivate; [ "$PATH" = "$before" ] && echo restored'
    )
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert "demo-tool 1.0" in out.stdout and "hook=1" in out.stdout and "restored" in out.stdout, (
        out.stderr
    )


def test_activate_imports_neither_rattler_nor_rich_nor_typer(demo_env):
    code = (
        "import sys; from hpcenv.cli import main\n"
        "try:\n    main(['activate', 'demo'])\nexcept SystemExit:\n    pass\n"
        "mods = ('rattler', 'rich', 'typer')\n"
        "print('LOADED', sorted(m for m in mods if m in sys.modules), file=sys.stderr)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=demo_env["env"], capture_output=True, text=True
    )
    assert "LOADED []" in r.stderr, r.stderr


def test_fast_path_prints_what_the_full_cli_prints(demo_env):
    from tests.fs import hpcenv

    env = demo_env["env"]
    fast = hpcenv("activate", "demo", "--shell", "fish", env=env)
    full = hpcenv(
        "--storage", env["HPCENV_STORAGE"], "activate", "demo", "--shell", "fish", env=env
    )
    assert fast.returncode == full.returncode == 0
    assert fast.stdout == full.stdout and "set -gx CONDA_PREFIX" in fast.stdout
    missing = hpcenv("activate", "nope", env=env)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_run_passes_the_exit_code_through(demo_env):
    from tests.fs import hpcenv

    r = hpcenv("run", "demo", "--", "sh", "-c", "exit 7", env=demo_env["env"])
    assert r.returncode == 7
    r = hpcenv(
        "run", "demo", "--", "python", "-c", "import sys; print(sys.prefix)", env=demo_env["env"]
    )
    assert r.stdout.strip().endswith("/envs/demo")


def test_run_passes_stdin_through(demo_env):
    from tests.fs import hpcenv

    r = hpcenv("run", "demo", "--", "cat", env=demo_env["env"], input="piped data\n")
    assert r.stdout == "piped data\n"


def test_run_forwards_sigterm_to_the_command(demo_env, tmp_path):
    marker = tmp_path / "got-term"
    script = f"trap 'echo term > {marker}; exit 0' TERM; echo ready; while :; do sleep 0.05; done"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcenv", "run", "demo", "--", "sh", "-c", script],
        env=demo_env["env"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "term\n"


def test_run_unknown_command_exits_2(demo_env):
    from tests.fs import hpcenv

    r = hpcenv("run", "demo", "--", "no-such-command-xyz", env=demo_env["env"])
    assert r.returncode == 2 and "command not found" in r.stderr


def test_nothing_edits_startup_files(demo_env):
    home = demo_env["home"]
    assert not any((home / f).exists() for f in (".bashrc", ".bash_profile", ".zshrc", ".profile"))
