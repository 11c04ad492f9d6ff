"""The flows on real packages (tests/realpkgs.py): this machine's CPython as a conda package,
numpy from its PyPI wheel, tqdm as a noarch: python package with an entry point; created,
run, packed and staged by the real CLI."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hpcenv import jobs
from tests.conftest import IS_ROOT, need, run_as_user
from tests.fs import cli_env, hpcenv
from tests.realpkgs import runpaths, wheel_for_test

# Solves a 3x3 system and checks it; prints the interpreter's prefix and where libpython was
# loaded from (an --enable-shared python finds it through RUNPATH: the env's own, not the
# build's or the system's).
LINALG = """
import json, sys, numpy as np
a = np.array([[3.0, 1.0, 2.0], [1.0, 4.0, 1.0], [2.0, 1.0, 5.0]])
x = np.linalg.solve(a, np.array([1.0, 2.0, 3.0]))
assert np.allclose(a @ x, [1.0, 2.0, 3.0]) and np.allclose(x, [-0.2, 0.4, 0.6]), x
maps = open("/proc/self/maps").read().split()
libpython = sorted({w for w in maps if "/libpython" in w})
print(json.dumps({"prefix": sys.prefix, "numpy": np.__file__, "libpython": libpython}))
"""


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    """For an interpreter started directly: no PYTHONPATH/PYTHONHOME of the test run."""
    return {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def sci(real_channel, tmp_path_factory):
    """One env `sci` = python + numpy + tqdm from the real channel, made once per module."""
    root = tmp_path_factory.mktemp("real")
    home, storage = root / "home", root / "storage"
    home.mkdir()
    storage.mkdir()
    env = cli_env(home, storage)
    assert hpcenv("setup", "--yes", env=env).returncode == 0
    r = hpcenv("create", "sci", "python", "numpy", "tqdm", "-c", real_channel.url, env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(hpcenv("info", "sci", "--json", env=env).stdout)["result"]
    return {"env": env, "prefix": Path(info["prefix"]), "root": root, "channel": real_channel}


def run_in(h, *argv: str) -> subprocess.CompletedProcess:
    r = hpcenv("run", "sci", "--", *argv, env=h["env"], stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r


def test_real_python_env_does_linear_algebra_with_its_own_interpreter(sci):
    out = json.loads(run_in(sci, "python", "-c", LINALG).stdout)
    prefix = sci["prefix"]
    assert out["prefix"] == str(prefix)
    assert out["numpy"] == f"{prefix}/lib/python{_pyver(sci)}/site-packages/numpy/__init__.py"
    real = os.path.realpath(prefix)
    assert out["libpython"] and all(p.startswith(real + "/lib/") for p in out["libpython"])


def _pyver(h) -> str:
    return ".".join(h["channel"].python_version.split(".")[:2])


def test_python_package_binaries_find_their_libraries_relative_to_themselves(sci):
    """The build's RUNPATH (<build prefix>/lib) would load the build's libpython, or none on
    another node; binary placeholders only fit prefixes no longer than the build's."""
    prefix = sci["prefix"]
    (meta,) = (prefix / "conda-meta").glob("python-*.json")
    record = json.loads(meta.read_text())
    entries = record["paths_data"]["paths"]
    assert not [e for e in entries if e.get("file_mode") == "binary"]
    found = {}
    for e in entries:
        path = prefix / e["_path"]
        if e["path_type"] == "hardlink" and path.stat().st_size > 4:
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found[e["_path"]] = runpaths(path.read_bytes())
    assert found[f"bin/python{_pyver(sci)}"] == ["$ORIGIN/../lib"] and len(found) > 20
    assert all(p.startswith("$ORIGIN") for paths in found.values() for p in paths), found


def test_real_python_env_imports_ssl_sqlite3_ctypes_and_makes_venvs(sci):
    code = (
        "import ssl, sqlite3, ctypes, sysconfig, sys; "
        "sqlite3.connect(':memory:').execute('select 1'); "
        "print(sysconfig.get_config_var('prefix'))"
    )
    assert run_in(sci, "python", "-c", code).stdout.strip() == str(sci["prefix"])
    config = run_in(sci, f"python{_pyver(sci)}-config", "--prefix").stdout.strip()
    assert os.path.realpath(config) == os.path.realpath(sci["prefix"])  # it resolves links
    venv = sci["root"] / "venv"
    run_in(sci, "python", "-m", "venv", "--without-pip", str(venv))
    out = subprocess.run(
        [venv / "bin" / "python", "-c", "import sys; print(sys.base_prefix, sys.prefix)"],
        capture_output=True,
        text=True,
        env=_clean_env(os.environ.copy()),
    )
    base, inside = out.stdout.split()
    assert os.path.realpath(base) == os.path.realpath(sci["prefix"]) and inside == str(venv)


def test_console_scripts_of_noarch_and_compiled_packages_run_from_path(sci):
    assert run_in(sci, "tqdm", "--version").stdout.strip() == sci["channel"].tqdm_version
    assert run_in(sci, "f2py", "-v").stdout.strip() == sci["channel"].numpy_version
    shebang = (sci["prefix"] / "bin" / "tqdm").read_text().splitlines()[0]
    assert shebang == f"#!{sci['prefix']}/bin/python{_pyver(sci)}"


def test_noarch_package_is_byte_compiled_and_its_pyc_recorded(sci):
    prefix = sci["prefix"]
    (meta,) = (prefix / "conda-meta").glob("tqdm-*.json")
    pycs = [
        p["_path"]
        for p in json.loads(meta.read_text())["paths_data"]["paths"]
        if p["path_type"] == "pyc_file"
    ]
    assert f"lib/python{_pyver(sci)}/site-packages/tqdm/__pycache__/cli." in "".join(pycs)
    assert all((prefix / p).is_file() for p in pycs)


@pytest.fixture(scope="module")
def staged(sci):
    """`sci` packed and staged to a path outside its prefix, as a job does on a node."""
    target = sci["root"] / "node-local" / "sci"
    env = {k: v for k, v in sci["env"].items() if not k.startswith("SLURM_")}
    r = hpcenv("stage", "sci", "--to", str(target), env=env)
    assert r.returncode == 0, r.stderr
    return target


def test_real_env_staged_elsewhere_runs_from_the_staged_path(sci, staged, tmp_path):
    # conda-unpack rewrote the placeholders: sysconfig's prefix is the staged one too
    script = (
        f'. "{staged}/etc/hpcenv/activate.sh"\n'
        'python -c "$1"\n'
        "python -c 'import sysconfig; print(sysconfig.get_config_var(\"prefix\"))'\n"
        "tqdm --version\n"
    )
    out = subprocess.run(
        ["bash", "-c", script, "_", LINALG],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    first, config_prefix, tqdm_version = out.stdout.splitlines()
    result = json.loads(first)
    assert result["prefix"] == str(staged) and result["numpy"].startswith(f"{staged}/lib/")
    assert config_prefix == str(staged) and tqdm_version == sci["channel"].tqdm_version


def test_staged_env_loads_its_shipped_and_installed_bytecode_without_recompiling(sci, staged):
    """The stdlib's .pyc (shipped in the package) and tqdm's (compiled at install) stay valid
    through pack and stage: mtimes and sizes survive, so no node recompiles on import."""
    out = subprocess.run(
        [staged / "bin" / "python", "-v", "-c", "import json.decoder, tqdm.cli"],
        capture_output=True,
        text=True,
        env=_clean_env(os.environ.copy()),
    )
    assert out.returncode == 0, out.stderr
    site = f"{staged}/lib/python{_pyver(sci)}"
    tag = sys.implementation.cache_tag
    for pyc in (f"{site}/json/__pycache__/decoder", f"{site}/site-packages/tqdm/__pycache__/cli"):
        assert f"# code object from '{pyc}.{tag}.pyc'" in out.stderr


def test_staged_env_runs_without_the_original_env_or_the_build_interpreter(sci, staged):
    """As on another node: the env's storage and the CPython the package was built from are
    hidden (empty tmpfs over both, in a private mount namespace)."""
    need("root", IS_ROOT, "mounting over directories needs root")
    hide = [os.path.realpath(sys.base_prefix), os.path.realpath(sci["prefix"])]
    mounts = "".join(f"mount -t tmpfs tmpfs {_q(d)} && " for d in hide)
    check = f'{mounts}test ! -e {_q(hide[1] + "/bin")} && {_q(str(staged / "bin/python"))} -c "$1"'
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", check, "_", LINALG],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["prefix"] == str(staged)
    assert all(p.startswith(f"{staged}/lib/") for p in result["libpython"])


def _python_json(python: Path, code: str) -> dict:
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=_clean_env(os.environ)
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _stage_here(pack: Path, target: Path) -> Path:
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        del os.environ[name]  # (a forked child) stage right here, not through srun
    from hpcenv.activate import static_script

    return jobs.stage(pack, target, static_script(target, name="sci"))


def test_a_user_who_cannot_reach_the_build_interpreter_stages_and_runs_the_env(sci, tmp_path):
    """A non-root user, for whom the CPython the package was built from (under /root here)
    does not exist, unpacks the pack (conda-unpack by the staged python) and runs numpy."""
    need("root", IS_ROOT, "running as another user needs root")
    subprocess.run(["useradd", "-M", "-N", "-s", "/bin/sh", "hpcalice"], capture_output=True)
    build_python = f"{os.path.realpath(sys.base_prefix)}/bin/python{_pyver(sci)}"
    if run_as_user("hpcalice", os.path.exists, build_python):
        pytest.fail(f"{build_python} is readable by hpcalice: this test proves nothing here")
    r = hpcenv("pack", "sci", "--json", env=sci["env"])
    assert r.returncode == 0, r.stderr
    base = Path(tempfile.mkdtemp(prefix="hpcenv-user-stage-"))
    try:
        base.chmod(0o1777)  # like /tmp on a node
        pack = base / "sci.tar.gz"
        shutil.copyfile(json.loads(r.stdout)["result"]["path"], pack)
        pack.chmod(0o644)
        target = base / "alice" / "sci"
        run_as_user("hpcalice", _stage_here, pack, target)
        result = run_as_user("hpcalice", _python_json, target / "bin" / "python", LINALG)
        assert result["prefix"] == str(target)
        assert all(p.startswith(f"{target}/lib/") for p in result["libpython"])
    finally:
        shutil.rmtree(base)


def _q(word: str) -> str:
    return shlex.quote(word)


def test_jobscript_of_real_env_runs_its_python_in_bash(sci, tmp_path):
    r = hpcenv(
        "jobscript",
        "sci",
        "--",
        "python",
        "-c",
        "import numpy, sys; print(sys.prefix)",
        env=sci["env"],
    )
    assert r.returncode == 0, r.stderr
    script = tmp_path / "job.sh"
    script.write_text(r.stdout)
    out = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sci["prefix"])


# --------------------------------------------------------------------------- the pip section


def world_writable(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & stat.S_IWOTH:
                found.append(os.path.join(dirpath, name))
    return found


@pytest.mark.parametrize("python", ["real", "venv-style"])
def test_pip_section_leaves_no_world_writable_file_and_the_env_usable(python, request, tmp_path):
    """uv locks a venv-style prefix with a 0666 PREFIX/.lock (the demo python has a
    pyvenv.cfg; the real one does not, and uv locks it in /tmp instead)."""
    channel = request.getfixturevalue("real_channel" if python == "real" else "demo_channel")
    six = wheel_for_test(request, "six", "1.16.0")
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    env = cli_env(home, storage)
    assert hpcenv("setup", "--yes", env=env).returncode == 0
    yml = tmp_path / "environment.yml"
    yml.write_text(
        f"name: pipenv\nchannels:\n  - {channel.url}\ndependencies:\n  - python\n  - pip:\n"
        f"    - --no-index\n    - --find-links {six.parent}\n    - six==1.16.0\n"
    )
    r = hpcenv("create", "-f", str(yml), env=env)
    assert r.returncode == 0, r.stderr
    prefix = storage / ".conda" / "envs" / "pipenv"
    assert world_writable(prefix) == []
    r = hpcenv("run", "pipenv", "--", "python", "-c", "import six; print(six.__version__)", env=env)
    assert r.returncode == 0 and r.stdout.strip() == "1.16.0", r.stderr
    assert hpcenv("activate", "pipenv", env=env).returncode == 0
    assert hpcenv("jobscript", "pipenv", "--", "python", env=env).returncode == 0
