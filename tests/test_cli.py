"""The command line itself: one table, one parser, its errors, help, and shell completion."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from hpcenv.cli.parser import parse
from hpcenv.cli.table import COMMANDS
from tests.conftest import need
from tests.fs import hpcenv


def one_line_usage_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcenv: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["no-such-command"], "no such command 'no-such-command'"),
        (["jobscript", "e", "--cpus", "two", "--", "true"], "invalid int value: 'two'"),
        (["share", "e"], "--group"),
        (["completion", "tcsh"], "invalid choice: 'tcsh'"),
        (["--storage"], "expected one argument"),
    ],
)
def test_usage_errors_are_one_line_exit_2_with_the_help_to_read(tmp_path, args, says):
    line = one_line_usage_error(hpcenv(*args, cwd=tmp_path))
    assert says in line
    assert "(hint: see `hpcenv" in line and "--help`)" in line


def test_no_arguments_and_help_print_the_commands_and_exit_0():
    for args in ([], ["--help"], ["-h"]):
        result = hpcenv(*args)
        assert result.returncode == 0, result.stderr
        for command in COMMANDS:
            assert (command.name in result.stdout) is not command.hidden, command.name


@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.hidden], ids=lambda c: c.name)
def test_each_commands_help_has_an_example_and_its_options(command):
    result = hpcenv(command.name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example:" in result.stdout
    for arg in command.args:
        if not arg.positional:
            assert arg.flags[0] in result.stdout, arg.flags


def test_global_options_go_before_or_after_the_command():
    before = parse(["-q", "--storage", "/s", "list", "--json"])[1]
    after = parse(["list", "--json", "--storage", "/s", "-q"])[1]
    for ns in (before, after):
        assert (ns.storage, ns.quiet, ns.json_out) == ("/s", True, True)


def test_run_stops_reading_options_at_the_command():
    _, ns = parse(["run", "-n", "e", "python", "-c", "x", "-n", "3", "--json"])
    assert ns.name == "e" and ns.words == ["python", "-c", "x", "-n", "3", "--json"]
    _, ns = parse(["run", "e", "--", "tool", "--flag"])
    assert ns.words == ["e", "--", "tool", "--flag"]


def test_job_command_after_dashdash_is_never_read_as_options():
    _, ns = parse(["jobscript", "e", "--time", "1", "--", "python", "x.py", "--time", "9", "-p"])
    assert ns.env == "e" and ns.time == "1" and ns.partition is None
    assert ns.tail == ["python", "x.py", "--time", "9", "-p"]


def test_version_is_the_same_before_and_inside_the_parser():
    fast = hpcenv("--version")
    parsed = hpcenv("-q", "--version")
    assert fast.returncode == parsed.returncode == 0
    assert fast.stdout == parsed.stdout and fast.stdout.startswith("hpcenv ")


# ------------------------------------------------------------------ completion


def complete_in_bash(script: str, *words: str) -> list[str]:
    """What bash completes for the command line `words` (the last one being typed)."""
    line = " ".join(words)
    program = (
        f"{script}\n"
        f"COMP_WORDS=(hpcenv {line}); COMP_CWORD={len(words)}; _hpcenv\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
        "complete -p hpcenv\n"
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    *replies, registered = result.stdout.splitlines()
    assert registered.endswith("-F _hpcenv hpcenv"), registered
    return replies


def test_bash_completes_command_names_options_and_choices(fake_home):
    script = hpcenv("completion", "bash").stdout
    assert complete_in_bash(script, "cre") == ["create"]
    assert set(complete_in_bash(script, "")) == {c.name for c in COMMANDS if not c.hidden}
    assert complete_in_bash(script, "create", "--dr") == ["--dry-run"]
    assert "--json" in complete_in_bash(script, "-q", "list", "--")
    assert complete_in_bash(script, "--storage", "/x", "jobscript", "--wr") == ["--wrap"]
    assert complete_in_bash(script, "completion", "z") == ["zsh"]
    envs = fake_home["home"] / ".conda" / "envs"
    (envs / "alpha").mkdir(parents=True)
    (envs / "beta").mkdir()
    assert complete_in_bash(script, "activate", "al") == ["alpha"]


def test_fish_completes_command_names_and_options(tmp_path):
    fish = shutil.which("fish")
    need("fish", fish is not None, "fish completes from the generated script")
    script = tmp_path / "hpcenv.fish"
    script.write_text(hpcenv("completion", "fish").stdout)

    def complete(line: str) -> list[str]:
        program = f"source {script}; complete -C {line!r}"
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        out = subprocess.run([fish, "-c", program], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return [row.split("\t")[0] for row in out.stdout.splitlines()]

    assert complete("hpcenv cre") == ["create"]
    assert "--dry-run" in complete("hpcenv create --dr")
    assert "--wrap" in complete("hpcenv submit --wr")


def test_zsh_completion_is_a_valid_zsh_script():
    zsh = shutil.which("zsh")
    need("zsh", zsh is not None, "zsh checks the generated script's syntax")
    script = hpcenv("completion", "zsh").stdout
    result = subprocess.run([zsh, "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "bashcompinit" in script and "create" in script


def test_the_cli_imports_argparse_not_typer_or_click():
    code = (
        "import sys; from hpcenv.cli.parser import parse; parse(['create', 'x']); "
        "print(sorted(m for m in ('typer', 'click', 'rich', 'rattler') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
