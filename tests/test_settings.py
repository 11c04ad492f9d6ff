"""One precedence: flag > HPCENV_* > user config > site config > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcenv.errors import ConfigError, UsageError
from hpcenv.settings import load_settings, parse_size
from hpcenv.storage import validate_name
from tests.fs import cli_env, hpcenv


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "HPCENV_SITE_CONFIG": str(tmp_path / "site.toml"), **extra}


def test_storage_falls_back_to_the_sites_storage_variable(tmp_path):
    s = load_settings(environ=_env(tmp_path, global_storage="/gpfs/me"))
    assert s.storage == Path("/gpfs/me") and s.storage_source == "$global_storage"


def test_storage_precedence_flag_over_env_over_user_over_site(tmp_path):
    env = _env(tmp_path, global_storage="/var-default")
    (tmp_path / "site.toml").write_text('storage = "/from-site"\n')
    assert load_settings(environ=env).storage == Path("/from-site")
    user = tmp_path / "home/.config/hpcenv/config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('storage = "/from-user"\n')
    assert load_settings(environ=env).storage == Path("/from-user")
    env["HPCENV_STORAGE"] = "/from-env"
    s = load_settings(environ=env)
    assert s.storage == Path("/from-env") and s.storage_source == "HPCENV_STORAGE"
    s = load_settings(environ=env, storage=Path("/from-flag"))
    assert s.storage == Path("/from-flag") and s.storage_source == "--storage"


def test_site_storage_variable_name_is_a_setting(tmp_path):
    (tmp_path / "site.toml").write_text('storage_var = "SCRATCH"\n')
    s = load_settings(environ=_env(tmp_path, SCRATCH="/scratch/me"))
    assert s.storage == Path("/scratch/me")


def test_tables_and_env_vars_map_to_settings(tmp_path):
    (tmp_path / "site.toml").write_text(
        '[scheduler]\npartition = "cpu"\ngpu_partition = "gpu"\n'
        'module_lines = ["module load miniforge"]\n[gpu]\ncuda_version = "12.2"\n'
    )
    env = _env(tmp_path, HPCENV_SCHEDULER_PARTITION="short", HPCENV_CHANNELS="a,b")
    s = load_settings(environ=env)
    assert s.partition == "short" and s.gpu_partition == "gpu"
    assert s.module_lines == ("module load miniforge",)
    assert s.gpu_cuda_version == "12.2" and s.channels == ("a", "b")


def test_unknown_key_names_file_line_and_key(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('storage_var = "x"\n\n[scheduler]\npartiton = "cpu"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(environ=_env(tmp_path))
    assert f"{site}, line 4" in err.value.message and "scheduler.partiton" in err.value.message


def test_wrong_type_names_file_line_and_key(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text("allow_home = 1\n")
    with pytest.raises(ConfigError, match=r"line 1: key 'allow_home' must be true or false"):
        load_settings(environ=_env(tmp_path))


def test_broken_config_exits_2_with_one_line(tmp_path):
    home, storage = tmp_path / "home", tmp_path / "st"
    home.mkdir()
    storage.mkdir()
    env = cli_env(home, storage)
    Path(env["HPCENV_SITE_CONFIG"]).write_text("lock_timeout = 'soon'\n")
    result = hpcenv("setup", "--dry-run", env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "lock_timeout" in result.stderr


def test_sizes_parse_in_binary_units():
    assert parse_size("10G") == 10 * 1024**3 and parse_size("512M") == 512 * 1024**2
    assert parse_size("lots") is None


@pytest.mark.parametrize("name", ["", "../x", "a/b", "..", ".", "-rf", "a\nb", " a", "x\x1b"])
def test_hostile_names_are_refused(name):
    with pytest.raises(UsageError):
        validate_name(name)


@pytest.mark.parametrize("name", ["a b", "$(id)", "ünï", "py3.11_env-x"])
def test_awkward_but_safe_names_are_accepted(name):
    assert validate_name(name) == name


def test_version_is_printed_without_loading_typer_rich_or_rattler():
    import subprocess
    import sys

    code = (
        "import sys; from hpcenv.cli import main; main(['--version']); "
        "print(sorted(m for m in ('typer','rich','rattler') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.splitlines() == ["hpcenv 0.1.0", "[]"]


def test_missing_storage_everywhere_is_a_usage_error(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "HPCENV_SITE_CONFIG": str(tmp_path / "none.toml"),
        "PATH": "/usr/bin:/bin",
    }
    import os
    import sys

    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    result = hpcenv("setup", env=env)
    assert result.returncode == 2 and "$global_storage is not set" in result.stderr
