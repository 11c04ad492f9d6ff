"""The CLI's one error boundary, and the checks that keep bad input from reaching it: each
exception becomes one line and the right exit code; environment files, configs, specs and
rattler's own errors are refused or translated before they can become a traceback."""

from __future__ import annotations

import errno
import math
import os
import subprocess
from pathlib import Path

import pytest

from hpcenv import engine, journal
from hpcenv.cli.boundary import describe
from hpcenv.envfile import (
    MAX_BYTES,
    MAX_DEPENDENCIES,
    EnvironmentFile,
    is_lockfile,
    read_environment_file,
)
from hpcenv.errors import ConfigError, RefusedError, UsageError
from hpcenv.settings import load_settings

# ------------------------------------------------------------------ exceptions -> one line


@pytest.fixture
def nothing_done(monkeypatch):
    monkeypatch.setattr(journal, "_ticks", 0)


@pytest.fixture
def one_step_done(monkeypatch):
    monkeypatch.setattr(journal, "_ticks", 1)


def test_permission_error_before_any_step_is_a_refusal_naming_the_owner(nothing_done, tmp_path):
    target = tmp_path / "theirs"
    target.mkdir()
    line, code = describe(PermissionError(errno.EACCES, "Permission denied", str(target)))
    assert code == 2
    assert line.startswith(f"error: permission denied, a refusal: {target} (it belongs to root)")
    assert "nothing was changed" in line and "\n" not in line


def test_permission_error_after_a_step_is_a_failure_not_a_refusal(one_step_done, tmp_path):
    line, code = describe(PermissionError(errno.EPERM, "Operation not permitted", str(tmp_path)))
    assert code == 1
    assert "nothing was changed" not in line and "re-running it finishes" in line


def test_owner_of_a_missing_path_is_read_from_its_nearest_ancestor(nothing_done, tmp_path):
    missing = tmp_path / "a" / "b"
    line, _ = describe(PermissionError(errno.EACCES, "Permission denied", str(missing)))
    assert f"({tmp_path} belongs to root)" in line


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_no_space_points_to_usage_and_clean(nothing_done, code):
    line, exit_code = describe(OSError(code, os.strerror(code), "/storage/envs/x"))
    assert exit_code == 1
    assert f"{os.strerror(code).lower()}: /storage/envs/x; nothing was changed" in line
    assert "`hpcenv usage`" in line and "`hpcenv clean`" in line


def test_read_only_filesystem_is_said_plainly(one_step_done):
    line, code = describe(OSError(errno.EROFS, "Read-only file system", "/gpfs/x"))
    assert line.startswith("error: read-only filesystem: /gpfs/x") and code == 1


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
def test_no_locking_says_what_hpcenv_does_there(nothing_done, code):
    line, exit_code = describe(OSError(code, os.strerror(code), "/nfs/x/.lock"))
    assert exit_code == 1
    assert "does not support file locking" in line and "lock directory" in line


def test_failed_command_is_named_with_its_last_error_line():
    exc = subprocess.CalledProcessError(
        3, ["sbcast", "--force", "a b.tar"], stderr="first\nsbcast: error: no nodes\n"
    )
    line, code = describe(exc)
    assert code == 1
    assert line == (
        "error: command failed (exit status 3): sbcast --force 'a b.tar': sbcast: error: no nodes"
    )


def test_anything_else_is_an_internal_error_line():
    line, code = describe(KeyError("x\ny"))
    assert code == 1
    assert line == "internal error: KeyError: 'x\\ny' (set HPCENV_DEBUG=1 for the traceback)"


def test_hpcenv_errors_keep_their_message_hint_and_code():
    line, code = describe(RefusedError("no", hint="do this"))
    assert (line, code) == ("error: no (hint: do this)", 2)


# ------------------------------------------------------------------ environment files


def _yml(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "environment.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("channels: 5\ndependencies: [a]\n", "'channels' must be a list of channel names, not int"),
        ("name: [a, b]\n", "'name' must be a string, not list"),
        ("dependencies: python\n", "'dependencies' must be a list"),
        ("channels: [conda-forge, 3]\n", "'channels' must be a list"),
        ("dependencies:\n  - pip: requests\n", "'dependencies: pip' must be a list"),
        ("dependencies:\n  - 7\n", "unsupported entry in 'dependencies': 7"),
        ("dependencies:\n  - ''\n", "unsupported entry in 'dependencies': ''"),
        ("- a\n", "not an environment file"),
        ("dependencies: [a\n", "is not valid YAML (line 2)"),
    ],
)
def test_environment_file_of_the_wrong_shape_names_file_and_key(tmp_path, text, fragment):
    path = _yml(tmp_path, text)
    with pytest.raises(UsageError) as err:
        read_environment_file(path)
    assert str(path) in err.value.message and fragment in err.value.one_line()


def test_environment_file_that_is_not_utf8_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        read_environment_file(_yml(tmp_path, b"name: caf\xe9\n"))


def test_directory_as_environment_file_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        read_environment_file(tmp_path)


def test_environment_file_over_the_size_limit_is_refused(tmp_path):
    path = _yml(tmp_path, "dependencies:\n" + "  - a  # padding\n" * (MAX_BYTES // 16 + 1))
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        read_environment_file(path)


def test_environment_file_with_too_many_dependencies_is_refused(tmp_path):
    path = _yml(tmp_path, "dependencies:\n" + "  - a\n" * (MAX_DEPENDENCIES + 1))
    with pytest.raises(UsageError, match="10001 entries"):
        read_environment_file(path)


def test_conda_export_lines_mean_that_exact_version_and_build(tmp_path):
    path = _yml(
        tmp_path,
        "name: x\ndependencies:\n  - numpy=1.26.4=py311h64a7726_0\n  - python=3.11\n"
        "  - conda-forge::zlib=1.3.1=hb9d3cd8_2\n  - pip:\n    - requests==2.32\n",
    )
    doc = read_environment_file(path)
    assert doc == EnvironmentFile(
        name="x",
        channels=(),
        specs=(
            "numpy ==1.26.4 py311h64a7726_0",
            "python=3.11",
            "conda-forge::zlib ==1.3.1 hb9d3cd8_2",
        ),
        pip=("requests==2.32",),
    )


def test_a_lock_file_is_told_from_an_environment_file(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("version: 6\nenvironments:\n  default: {}\npackages: []\n")
    assert is_lockfile(lock)
    assert not is_lockfile(_yml(tmp_path, "dependencies: [a]\n"))
    assert not is_lockfile(tmp_path)


# ------------------------------------------------------------------ configs


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "HPCENV_SITE_CONFIG": str(tmp_path / "site.toml"), **extra}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_lock_timeout_must_be_a_finite_number_in_config(tmp_path, value):
    (tmp_path / "site.toml").write_text(f"lock_timeout = {value}\n")
    with pytest.raises(ConfigError, match="'lock_timeout' must be a finite number"):
        load_settings(environ=_env(tmp_path))


@pytest.mark.parametrize("value", ["nan", "inf", "Infinity"])
def test_lock_timeout_must_be_a_finite_number_in_the_environment(tmp_path, value):
    with pytest.raises(ConfigError, match="HPCENV_LOCK_TIMEOUT"):
        load_settings(environ=_env(tmp_path, HPCENV_LOCK_TIMEOUT=value))
    assert not math.isnan(load_settings(environ=_env(tmp_path)).lock_timeout)


def test_empty_channel_list_is_said_plainly(tmp_path):
    (tmp_path / "site.toml").write_text("channels = []\n")
    with pytest.raises(ConfigError, match="no channel configured"):
        load_settings(environ=_env(tmp_path))
    (tmp_path / "site.toml").unlink()
    with pytest.raises(ConfigError, match="HPCENV_CHANNELS.*no channel configured"):
        load_settings(environ=_env(tmp_path, HPCENV_CHANNELS=" , "))


def test_nul_in_a_config_string_is_refused(tmp_path):
    (tmp_path / "site.toml").write_text('storage = "/gpfs/a\\u0000b"\n')
    with pytest.raises(ConfigError, match="without NUL"):
        load_settings(environ=_env(tmp_path))


# ------------------------------------------------------------------ rattler behind the engine


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ('pytorch[version=">=2"]', "pytorch"),
        ("conda-forge::NumPy>=1.2", "numpy"),
        ("demo-tool=1.0=0", "demo-tool"),
        ("python 3.11.*", "python"),
        ("scikit-learn", "scikit-learn"),
    ],
)
def test_spec_names_are_read_by_rattler(spec, name):
    assert engine.spec_name(spec) == name


@pytest.mark.parametrize("spec", ["numpy[", "*", "../x", ""])
def test_a_spec_without_a_readable_name_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="invalid package spec"):
        engine.spec_name(spec)


def test_writing_a_lock_file_into_a_missing_directory_is_a_usage_error(demo_channel, tmp_path):
    solution = engine.solve([demo_channel.url], ["demo-tool"], cache_dir=tmp_path / "c")
    with pytest.raises(UsageError, match="is not a directory"):
        engine.write_lock(solution.packages, [demo_channel.url], tmp_path / "no" / "x.lock")


def test_rattler_io_error_while_writing_a_lock_file_becomes_an_os_error(demo_channel, tmp_path):
    solution = engine.solve([demo_channel.url], ["demo-tool"], cache_dir=tmp_path / "c")
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError) as err:
        engine.write_lock(solution.packages, [demo_channel.url], tmp_path / "taken")
    assert err.value.errno == errno.EISDIR and err.value.filename == str(tmp_path / "taken")


@pytest.mark.parametrize("content", [None, b"version: 6\nenvironments: [\xff\n", b""])
def test_reading_a_bad_lock_file_is_a_usage_error(tmp_path, content):
    path = tmp_path / "bad.lock"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(UsageError, match="not a readable lock file"):
        engine.read_lock(path)


def test_an_invalid_channel_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="invalid channel in ::::"):
        engine.solve(["::::"], ["demo-tool"], cache_dir=tmp_path)
