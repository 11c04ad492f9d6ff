"""`hpcenv kernel`: Jupyter kernels that start inside the activated env, started for real by
jupyter_client from the kernelspec hpcenv wrote, with a real ipykernel (from PyPI, through the
pip section) in an env of the real CPython (tests/realpkgs.py) and packages whose
activate.d scripts are written as gdal's (tests/hooked.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcenv.kernel import spec as kernelspec
from tests.conftest import IS_ROOT, need
from tests.foreign import rattler_prefix
from tests.fs import cli_env, hpcenv
from tests.hooked import hooks_channel  # noqa: F401
from tests.jupyter import IPYKERNEL, client_env, ipykernel_wheels, pip_section, start_kernel

# What the kernel reports about itself: where it runs, and the variables activation sets.
PROBE = """
import json, os, site, sys
keys = ["CONDA_PREFIX", "CONDA_DEFAULT_ENV", "GDAL_DATA", "LATE_HOOK", "PYTHONNOUSERSITE",
        "SITE_MODULE", "GREETING"]
print(json.dumps({"prefix": sys.prefix, "pid": os.getpid(), "user_site": site.ENABLE_USER_SITE,
                  "env": {k: os.environ.get(k) for k in keys}}))
"""


def _yml(path: Path, name: str, channels: list[str], deps: list[str], wheels: Path) -> Path:
    lines = [f"name: {name}", "channels:", *(f"  - {c}" for c in channels), "dependencies:"]
    lines += [f"  - {d}" for d in deps]
    path.write_text("\n".join(lines) + "\n" + pip_section(wheels))
    return path


@pytest.fixture(scope="module")
def nb(request, real_channel, hooks_channel, tmp_path_factory):  # noqa: F811
    """`nb`: the real CPython, two packages with activate.d scripts, ipykernel from its wheels."""
    wheels = ipykernel_wheels(request)
    root = tmp_path_factory.mktemp("kernel")
    home, storage = root / "home", root / "storage"
    home.mkdir()
    storage.mkdir()
    env = cli_env(home, storage)
    for key in ("JUPYTER_DATA_DIR", "XDG_DATA_HOME", "JUPYTER_PLATFORM_DIRS"):
        env.pop(key, None)
    assert hpcenv("setup", "--yes", env=env).returncode == 0
    channels = [real_channel.url, hooks_channel.url]
    yml = _yml(root / "nb.yml", "nb", channels, ["python", "gdal-like", "late-hook"], wheels)
    r = hpcenv("create", "-f", str(yml), env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(hpcenv("info", "nb", "--json", env=env).stdout)["result"]
    return {
        "env": env,
        "root": root,
        "home": home,
        "prefix": Path(info["prefix"]),
        "wheels": wheels,
        "channels": channels,
    }


def run(h, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return hpcenv(*args, env={**h["env"], **extra}, stdin=subprocess.DEVNULL)


def ok(h, *args: str, **extra: str) -> subprocess.CompletedProcess:
    r = run(h, *args, **extra)
    assert r.returncode == 0, (args, r.stderr)
    return r


def refused(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """A Jupyter server's environment: HOME, no `module` function, no env active."""
    env = client_env(HOME=str(home), **extra)
    for key in list(env):
        if key.startswith(("BASH_FUNC_", "LMOD_", "CONDA_", "_HPCENV_")) or key in (
            "MODULESHOME",
            "MODULEPATH",
            "GDAL_DATA",
            "PYTHONNOUSERSITE",
        ):
            if key not in extra:
                del env[key]
    return env


def probe(data_dir: Path, name: str, env: dict[str, str], user: str | None = None) -> dict:
    result = start_kernel(data_dir, name, PROBE, env=env, user=user)
    assert result["status"] == "ok", result
    return {**json.loads(result["stdout"]), "kernel_pid": result["pid"]}


def _lmod_init() -> Path | None:
    for candidate in ("/usr/share/lmod/lmod/init/bash", "/opt/apps/lmod/lmod/init/bash"):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def no_world_writable(root: Path) -> list[str]:
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            st_ = os.lstat(os.path.join(dirpath, name))
            if st_.st_mode & stat.S_IWOTH and not stat.S_ISLNK(st_.st_mode):
                bad.append(os.path.join(dirpath, name))
    return bad


# --------------------------------------------------------------------------- the kernel runs


def test_kernel_starts_inside_the_activated_env_with_the_sites_modules(nb, tmp_path):
    """Through jupyter_client, from the kernelspec in the default data dir: the env's python,
    its activate.d scripts run, the site's Lmod module loaded (with `module` defined from
    $MODULESHOME: the server did not pass the function on), --env set, no user site, and the
    process Jupyter started is the kernel itself (exec: its signals reach python)."""
    init = _lmod_init()
    need("Lmod", init is not None, "no Lmod init script (apt-get install lmod)")
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "sitemod.lua").write_text('setenv("SITE_MODULE", "loaded")\n')
    site = tmp_path / "site.toml"
    lines = [f"module use {shlex.quote(str(modules))}", "module load sitemod"]
    site.write_text(f"[scheduler]\nmodule_lines = {json.dumps(lines)}\n")
    greeting = 'it\'s $HOME "and" `this`'
    r = ok(nb, "kernel", "nb", "--env", f"GREETING={greeting}", HPCENV_SITE_CONFIG=str(site))
    assert "hpcenv-nb" in r.stdout
    data_dir = Path(os.path.realpath(nb["home"])) / ".local" / "share" / "jupyter"
    env = server_env(nb["home"], MODULESHOME=str(init.parents[1]), LMOD_ALLOW_ROOT_USE="yes")
    out = probe(data_dir, "hpcenv-nb", env)
    prefix = str(nb["prefix"])
    assert out["prefix"] == prefix
    assert out["env"] == {
        "CONDA_PREFIX": prefix,
        "CONDA_DEFAULT_ENV": "nb",
        "GDAL_DATA": f"{prefix}/share/gdal",
        "LATE_HOOK": "ran",
        "PYTHONNOUSERSITE": "1",
        "SITE_MODULE": "loaded",
        "GREETING": greeting,
    }
    assert out["user_site"] is False
    assert out["pid"] == out["kernel_pid"]


def test_kernel_of_a_foreign_env_at_a_hostile_path_runs_there(nb, tmp_path):
    """A prefix made by a plain py-rattler script (not hpcenv's), ipykernel added by uv, at a
    path with '$', '`', ';', '*' and spaces, given by path: the kernel's name comes from the
    path, every word of the launcher is quoted, and the kernel runs in that env. (A quote in
    a prefix breaks CPython's own _sysconfigdata, so the quotes are in a value.)"""
    prefix = tmp_path / "a $dir `x`; *" / "env"
    prefix.parent.mkdir()
    rattler_prefix(prefix, nb["channels"], "python", "late-hook")
    uv = subprocess.run(
        ["uv", "pip", "install", "--python", str(prefix / "bin" / "python"), "--no-index",
         "--find-links", str(nb["wheels"]), "-q", f"{IPYKERNEL[0]}=={IPYKERNEL[1]}"],
        capture_output=True, text=True, env=client_env(UV_CACHE_DIR=str(tmp_path / "uv")),
    )  # fmt: skip
    assert uv.returncode == 0, uv.stderr
    data_dir = tmp_path / "jupyter data"
    r = ok(
        nb,
        "kernel",
        "-p",
        str(prefix),
        "--env",
        "GREETING=a\nb'c\"$d",
        JUPYTER_DATA_DIR=str(data_dir),
    )
    name = kernelspec.kernel_name(None, prefix)
    assert name.startswith("hpcenv-env-") and name in r.stdout
    out = probe(data_dir, name, server_env(nb["home"]))
    assert out["prefix"] == str(prefix)
    assert out["env"]["LATE_HOOK"] == "ran" and out["env"]["GREETING"] == "a\nb'c\"$d"
    assert out["env"]["CONDA_PREFIX"] == out["env"]["CONDA_DEFAULT_ENV"] == str(prefix)
    assert not (prefix / "etc" / "hpcenv").exists()  # nothing written into the foreign env


# --------------------------------------------------------------------------- the kernelspec


def test_kernelspec_is_found_by_jupyter_where_it_looks_and_is_stable(nb, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    ok(nb, "kernel", "nb")
    monkeypatch.setenv("HOME", str(nb["home"]))
    for key in ("JUPYTER_DATA_DIR", "XDG_DATA_HOME", "JUPYTER_PLATFORM_DIRS", "JUPYTER_PATH"):
        monkeypatch.delenv(key, raising=False)
    manager = KernelSpecManager()  # Jupyter's own search path, from this environment
    found = manager.find_kernel_specs()
    directory = Path(found["hpcenv-nb"])
    spec = manager.get_kernel_spec("hpcenv-nb")
    assert spec.argv == ["/bin/bash", str(directory / "launch.sh"), "{connection_file}"]
    assert spec.display_name == "Python (hpcenv: nb)" and spec.language == "python"
    assert spec.metadata["hpcenv"]["prefix"] == str(nb["prefix"])
    assert spec.metadata["hpcenv"]["env"] == "nb"
    assert no_world_writable(directory.parent.parent) == []
    launcher = (directory / "launch.sh").read_text()
    assert subprocess.run(["bash", "-n", str(directory / "launch.sh")]).returncode == 0
    assert launcher.rstrip().endswith('-m ipykernel_launcher -f "$1"')
    again = ok(nb, "kernel", "nb", "--display-name", 'My "nb" kernel')
    assert "rewrote" in again.stdout
    assert KernelSpecManager().find_kernel_specs() == found
    assert KernelSpecManager().get_kernel_spec("hpcenv-nb").display_name == 'My "nb" kernel'


@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"XDG_DATA_HOME": "{tmp}/xdg"},
        {"JUPYTER_DATA_DIR": "{tmp}/jd"},
        {"JUPYTER_DATA_DIR": "", "XDG_DATA_HOME": ""},
        {"JUPYTER_PLATFORM_DIRS": "1"},
        {"JUPYTER_PLATFORM_DIRS": "1", "XDG_DATA_HOME": "{tmp}/xdg"},
        {"JUPYTER_PLATFORM_DIRS": "off", "XDG_DATA_HOME": "{tmp}/xdg"},
        {"HOME": "{tmp}/link-to-home"},
    ],
    ids=lambda s: ",".join(s) or "default",
)
def test_data_dir_is_jupyters_own(setting, tmp_path, monkeypatch):
    """The same directory as jupyter_core's `jupyter_data_dir()` (`jupyter --data-dir`)."""
    from jupyter_core.paths import jupyter_data_dir

    (tmp_path / "home").mkdir()
    (tmp_path / "link-to-home").symlink_to(tmp_path / "home")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key in ("JUPYTER_DATA_DIR", "XDG_DATA_HOME", "JUPYTER_PLATFORM_DIRS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in setting.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    assert kernelspec.jupyter_data_dir() == Path(jupyter_data_dir())


@settings(deadline=None)  # the first example imports jupyter_client
@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,60}", fullmatch=True), st.text(max_size=5))
def test_every_env_name_gets_a_kernel_name_jupyter_accepts_and_no_two_collide(name, suffix):
    from jupyter_client.kernelspec import _is_valid_kernel_name

    first = kernelspec.kernel_name(name, "/x")
    assert _is_valid_kernel_name(first) and first.startswith("hpcenv-")
    other = name + (suffix or "X")  # differs from name, maybe only in what Jupyter drops
    assert kernelspec.kernel_name(other, "/x").lower() != first.lower()
    assert kernelspec.kernel_name(name.swapcase(), "/x").lower() != first.lower() or (
        name.swapcase() == name
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["nb", "--env", "NOVALUE"], "is not KEY=VALUE"),
        (["nb", "--env", "1X=a"], "invalid environment variable name"),
        (["nb", "--env", "_HPCENV_PREFIX=/x"], "hpcenv's own"),
        (["nb", "--display-name", "two\nlines"], "invalid display name"),
        (["--list", "nb"], "--list takes no environment"),
        (["nb", "--remove", "--env", "A=b"], "--remove takes no"),
        (["no-such-env"], "no environment 'no-such-env'"),
        (["bad/../name", "--remove"], "no hpcenv kernel"),
    ],
)
def test_bad_kernel_arguments_are_refused_and_nothing_is_written(nb, tmp_path, args, says):
    r = run(nb, "kernel", *args, JUPYTER_DATA_DIR=str(tmp_path / "jd"))
    assert says in refused(r)
    assert not (tmp_path / "jd").exists()


def test_env_without_ipykernel_is_refused_with_the_command_that_adds_it(ready_home):
    env = ready_home["env"]
    assert hpcenv("create", "plain", "python", "-c", ready_home["url"], env=env).returncode == 0
    r = hpcenv("kernel", "plain", env=env, stdin=subprocess.DEVNULL)
    assert "has no ipykernel" in refused(r) and "`hpcenv install plain ipykernel`" in r.stderr
    assert not (ready_home["home"] / ".local").exists()


# --------------------------------------------------------------------------- list, remove, doctor


def test_list_shows_each_kernel_and_its_env_and_remove_takes_only_that_one(nb, tmp_path):
    jd = {"JUPYTER_DATA_DIR": str(tmp_path / "jd")}
    ok(nb, "kernel", "nb", **jd)
    by_path = kernelspec.kernel_name(None, nb["prefix"])
    ok(nb, "kernel", "-p", str(nb["prefix"]), **jd)
    listed = json.loads(ok(nb, "kernel", "--list", "--json", **jd).stdout)["result"]
    rows = {k["name"]: (k["env"], k["prefix"], k["env_exists"]) for k in listed["kernels"]}
    assert rows == {
        "hpcenv-nb": ("nb", str(nb["prefix"]), True),
        by_path: (None, str(nb["prefix"]), True),
    }
    table = ok(nb, "kernel", "--list", **jd).stdout
    assert "hpcenv-nb" in table and by_path in table
    ok(nb, "kernel", "nb", "--remove", **jd)
    assert os.listdir(tmp_path / "jd" / "kernels") == [by_path]
    assert "no hpcenv kernel for nb" in refused(run(nb, "kernel", "nb", "--remove", **jd))
    ok(nb, "kernel", "nb", **jd)
    r = ok(nb, "kernel", str(nb["prefix"]), "--remove", **jd)  # by path: every kernel of it
    assert "hpcenv-nb" in r.stdout and by_path in r.stdout
    assert os.listdir(tmp_path / "jd" / "kernels") == []


def test_removing_an_env_removes_its_kernel_and_doctor_flags_a_kernel_whose_env_is_gone(
    nb, tmp_path
):
    jd = {"JUPYTER_DATA_DIR": str(tmp_path / "jd")}
    yml = _yml(tmp_path / "gone.yml", "gone", nb["channels"][:1], ["python"], nb["wheels"])
    ok(nb, "create", "-f", str(yml))
    ok(nb, "kernel", "gone", **jd)
    r = ok(nb, "remove", "gone", "--yes", **jd)
    assert "removed its Jupyter kernel hpcenv-gone" in r.stdout
    assert not (tmp_path / "jd" / "kernels" / "hpcenv-gone").exists()

    lost = tmp_path / "lost"  # a copy of nb by path, then deleted behind hpcenv's back
    subprocess.run(["cp", "-al", str(os.path.realpath(nb["prefix"])), str(lost)], check=True)
    ok(nb, "kernel", str(lost), **jd)
    name = kernelspec.kernel_name(None, lost)
    launcher = tmp_path / "jd" / "kernels" / name / "launch.sh"
    shutil.rmtree(lost)
    started = subprocess.run(
        ["bash", str(launcher), "/nonexistent"], capture_output=True, text=True
    )
    assert started.returncode == 1
    assert "is gone" in started.stderr and f"hpcenv kernel {lost} --remove" in started.stderr
    listing = run(nb, "kernel", "--list", **jd)
    assert "GONE" in listing.stdout and f"hpcenv kernel {lost} --remove" in listing.stderr
    doctor = json.loads(run(nb, "doctor", "--json", **jd).stdout)["result"]
    [check] = [c for c in doctor["checks"] if c["name"] == "jupyter-kernels"]
    assert check["status"] == "WARN" and name in check["detail"]
    fixed = subprocess.run(
        ["bash", "-c", check["fix"]], env={**nb["env"], **jd}, capture_output=True
    )
    assert fixed.returncode == 0, fixed.stderr
    doctor = json.loads(run(nb, "doctor", "--json", **jd).stdout)["result"]
    [check] = [c for c in doctor["checks"] if c["name"] == "jupyter-kernels"]
    assert check["status"] == "OK" and not (tmp_path / "jd" / "kernels" / name).exists()


# --------------------------------------------------------------------------- refusals, kills


def test_kernels_dir_anyone_may_write_or_a_kernel_hpcenv_did_not_write_is_refused(nb, tmp_path):
    kdir = tmp_path / "jd" / "kernels"
    kdir.mkdir(parents=True)
    jd = {"JUPYTER_DATA_DIR": str(tmp_path / "jd")}
    kdir.chmod(0o777)
    assert "world-writable" in refused(run(nb, "kernel", "nb", **jd))
    assert os.listdir(kdir) == []
    kdir.chmod(0o755)
    mine = kdir / "hpcenv-nb"
    mine.mkdir()
    (mine / "kernel.json").write_text('{"argv": ["python"], "display_name": "mine"}\n')
    assert "did not write" in refused(run(nb, "kernel", "nb", **jd))
    assert (mine / "kernel.json").read_text().startswith('{"argv": ["python"]')
    assert "no hpcenv kernel" in refused(run(nb, "kernel", "nb", "--remove", **jd))
    assert (mine / "kernel.json").exists()


def test_a_kernel_name_taken_by_another_env_that_exists_is_not_taken_over(nb, tmp_path):
    jd = {"JUPYTER_DATA_DIR": str(tmp_path / "jd")}
    ok(nb, "kernel", "nb", **jd)
    spec = tmp_path / "jd" / "kernels" / "hpcenv-nb" / "kernel.json"
    data = json.loads(spec.read_text())
    other = tmp_path / "other-env"
    (other / "conda-meta").mkdir(parents=True)
    data["metadata"]["hpcenv"]["prefix"] = str(other)
    spec.write_text(json.dumps(data))
    assert "belongs to another environment" in refused(run(nb, "kernel", "nb", **jd))
    assert json.loads(spec.read_text())["metadata"]["hpcenv"]["prefix"] == str(other)


def test_kernels_dir_of_another_user_is_refused(nb, tmp_path):
    need("root", IS_ROOT, "chown to another user needs root")
    from tests.users import ensure_users

    ensure_users()
    import pwd

    kdir = tmp_path / "jd" / "kernels"
    kdir.mkdir(parents=True)
    os.chown(kdir, pwd.getpwnam("hpcbob").pw_uid, -1)
    assert "belongs to hpcbob" in refused(
        run(nb, "kernel", "nb", JUPYTER_DATA_DIR=str(kdir.parent))
    )
    assert os.listdir(kdir) == []


def test_kernels_dir_may_be_a_link_of_ones_own_but_the_kernel_dir_never_a_link(nb, tmp_path):
    (tmp_path / "jd").mkdir()
    (tmp_path / "in-storage").mkdir()
    (tmp_path / "jd" / "kernels").symlink_to(tmp_path / "in-storage")
    jd = {"JUPYTER_DATA_DIR": str(tmp_path / "jd")}
    ok(nb, "kernel", "nb", **jd)
    assert (tmp_path / "in-storage" / "hpcenv-nb" / "kernel.json").is_file()
    ok(nb, "kernel", "nb", "--remove", **jd)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "in-storage" / "hpcenv-nb").symlink_to(elsewhere)
    assert "not a real directory" in refused(run(nb, "kernel", "nb", **jd))
    assert os.listdir(elsewhere) == []


def _complete(kdir: Path) -> bool:
    """kdir holds a whole kernel: kernel.json that Jupyter reads, and its launcher."""
    from jupyter_client.kernelspec import KernelSpec

    if not (kdir / "kernel.json").exists():
        return False
    spec = KernelSpec.from_resource_dir(str(kdir))
    launcher = Path(spec.argv[1]).read_text()
    return launcher.rstrip().endswith('ipykernel_launcher -f "$1"')


def test_kernel_write_or_removal_killed_at_any_step_leaves_no_half_kernel_and_a_rerun_finishes(
    nb, tmp_path
):
    jd = str(tmp_path / "jd")
    kdir = tmp_path / "jd" / "kernels" / "hpcenv-nb"
    for action in (["kernel", "nb"], ["kernel", "nb", "--remove"]):
        k = 0
        while True:
            k += 1
            if action[-1] == "--remove" and not _complete(kdir):
                ok(nb, "kernel", "nb", JUPYTER_DATA_DIR=jd)
            elif action[-1] != "--remove" and kdir.exists():
                shutil.rmtree(kdir)
            r = run(nb, *action, JUPYTER_DATA_DIR=jd, _HPCENV_TEST_KILL_AFTER=str(k))
            if r.returncode == 0:
                break
            assert r.returncode == -9, r.stderr
            if action[-1] == "--remove":
                assert not (kdir / "kernel.json").exists()  # Jupyter no longer lists it
            else:
                assert _complete(kdir) or not (kdir / "kernel.json").exists()
            ok(nb, *action, JUPYTER_DATA_DIR=jd)
            assert _complete(kdir) if action[-1] != "--remove" else not kdir.exists()
        assert k > 2  # every step was killed once


# --------------------------------------------------------------------------- a shared group env


def test_group_member_gets_a_kernel_for_a_shared_env_and_an_outsider_is_refused(
    request, real_channel
):
    """alice shares an env with her group; bob (a member, not root) writes a kernel for it by
    path, and jupyter_client running as bob starts it inside alice's env. carol, who is not in
    the group, cannot read the env: refused, nothing written."""
    need("root", IS_ROOT, "real users hpcalice, hpcbob, hpccarol need root")
    from tests.users import LAB, chown_tree, ensure_users, hpcenv_as, readable_copy

    ensure_users()
    wheels = ipykernel_wheels(request)
    base = Path(tempfile.mkdtemp(prefix="hpcenv-kernel-lab-"))
    try:
        base.chmod(0o755)
        channel = readable_copy(real_channel.path, base / "channel")
        wheels = readable_copy(wheels, base / "wheels")
        shared = base / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        site = base / "site.toml"
        site.write_text(f'shared_root = "{shared}"\n')
        yml = _yml(base / "proj.yml", "proj", [channel.as_uri()], ["python"], wheels)
        yml.chmod(0o644)
        env = {}
        for user in ("hpcalice", "hpcbob", "hpccarol"):
            home, storage = base / user / "home", base / user / "storage"
            home.mkdir(parents=True)
            storage.mkdir()
            chown_tree(base / user, user)
            home.chmod(0o700)
            storage.chmod(0o700)
            env[user] = cli_env(home, storage, HPCENV_SITE_CONFIG=str(site))

        def ok_as(user: str, *args: str) -> subprocess.CompletedProcess:
            r = hpcenv_as(user, *args, env=env[user])
            assert r.returncode == 0, (user, args, r.stderr)
            return r

        ok_as("hpcalice", "setup", "--yes")
        ok_as("hpcalice", "create", "-f", str(yml))
        ok_as("hpcalice", "share", "proj", "--group", LAB)
        prefix = base / "hpcalice" / "home" / ".conda" / "envs" / "proj"
        ok_as("hpcbob", "kernel", str(prefix))
        name = kernelspec.kernel_name(None, prefix)
        data_dir = base / "hpcbob" / "home" / ".local" / "share" / "jupyter"
        spec = json.loads((data_dir / "kernels" / name / "kernel.json").read_text())
        assert spec["display_name"] == "Python (hpcenv: proj, shared by hpcalice)"
        assert os.stat(data_dir / "kernels" / name).st_uid == _uid("hpcbob")
        out = probe(data_dir, name, server_env(base / "hpcbob" / "home"), user="hpcbob")
        assert out["prefix"] == str(prefix) and out["env"]["CONDA_PREFIX"] == str(prefix)
        assert out["pid"] == out["kernel_pid"]
        carol = hpcenv_as("hpccarol", "kernel", str(prefix), env=env["hpccarol"])
        assert "permission denied" in refused(carol)
        assert os.listdir(base / "hpccarol" / "home") == []
    finally:
        shutil.rmtree(base)


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid
