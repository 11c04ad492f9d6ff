"""Image envs (one squashfs file in storage, mounted with squashfuse where they run), with the
real squashfs-tools, squashfuse and fuse3, on the demo channel and on real packages."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hpcenv import images
from hpcenv.errors import ConfigError
from hpcenv.images import mounts
from hpcenv.settings import load_settings
from tests.conftest import IS_ROOT, need
from tests.fs import cli_env, hpcenv_in, hpcenv_ok
from tests.images import daemons_for, mounts_below, need_image_tools, release
from tests.slurm import NODE_LOCAL as NODE_LOCAL_ROOT
from tests.slurm import slurm_cluster  # noqa: F401 - a fixture
from tests.users import as_user, chown_tree, ensure_users, readable_copy

SHOW = 'echo "prefix=$CONDA_PREFIX"; grep -c " $CONDA_PREFIX " /proc/self/mountinfo; demo-tool'


def _create(h, name="im", *specs: str, **env: str):
    return hpcenv_ok(h, "create", name, *(specs or ("python", "demo-tool", "hello")), "-c", h["url"],
                     "--image", **env)  # fmt: skip


def _dir(h, name="im") -> Path:
    return h["storage"] / ".conda" / "envs" / name


def _record(h, name="im") -> dict:
    return json.loads((_dir(h, name) / "hpcenv-image.json").read_text())


def _mount(h, name="im") -> Path:
    rec = _record(h, name)
    return Path(next(v["mount"] for v in rec["versions"] if v["id"] == rec["current"]))


def _history(h, name="im") -> str:
    """conda-meta/history of the env's current version, read where its commands see it."""
    cat = 'cat "$CONDA_PREFIX/conda-meta/history"'
    return hpcenv_ok(h, "run", name, "--", "sh", "-c", cat).stdout


def _base(h) -> Path:
    return mounts.user_base(str(h["mount_root"]))


def _environments_txt(h) -> str:
    path = h["home"] / ".conda" / "environments.txt"
    return path.read_text() if path.exists() else ""


def _leftovers(h) -> list[str]:
    """What is in the user's mount dir besides mounts and the lock files."""
    base = _base(h)
    if not base.is_dir():
        return []
    mounted = {p.name for p in mounts_below(base)}
    return sorted(n for n in os.listdir(base) if not n.startswith(".") and n not in mounted)


def _kill_daemon(h, mount: Path) -> None:
    """SIGKILL the squashfuse behind `mount` and wait until the kernel has dropped it."""
    [pid] = daemons_for(h["mount_root"])
    os.kill(pid, signal.SIGKILL)
    for _ in range(600):
        try:
            os.statvfs(mount)  # (stat may answer from the kernel's cache; statfs asks)
        except OSError:
            return
        time.sleep(0.05)


# ----------------------------------------------------------------------------- create and run


def test_image_env_keeps_one_image_in_storage_and_runs_from_its_mount(image_home):
    h = image_home
    out = _create(h).stdout
    assert "created image env im" in out
    assert sorted(os.listdir(_dir(h))) == [f"{_record(h)['current']}.sqfs", "hpcenv-image.json"]
    assert _leftovers(h) == []  # the tree it was built from is gone: only mounts live there
    r = hpcenv_ok(h, "run", "im", "--", "sh", "-c", SHOW)
    mount = _mount(h)
    assert r.stdout.splitlines()[:2] == [f"prefix={mount}", "1"]
    assert "demo-tool 1.0" in r.stdout
    assert mount.parent == mounts.user_base(str(h["mount_root"]))
    [env] = json.loads(hpcenv_ok(h, "list", "--json").stdout)["result"]
    assert env["image"]["version"] == 1 and env["image"]["image_files"] > 20
    assert env["files"] == 2 and env["packages"] == 3 and env["made_by"] == "hpcenv"
    usage = json.loads(hpcenv_ok(h, "usage", "--json").stdout)["result"]
    [row] = [e for e in usage["envs"] if e["name"] == "im"]
    assert row["files"] == 2
    info = json.loads(hpcenv_ok(h, "info", "im", "--json").stdout)["result"]
    assert {p["name"] for p in info["packages"]} == {"python", "demo-tool", "hello"}
    assert info["specs"] == ["python", "demo-tool", "hello"]
    # conda cannot use it: only hpcenv's registry knows it
    assert "envs/im" not in _environments_txt(h)
    assert json.loads(hpcenv_ok(h, "doctor", "--json").stdout)["result"]["checks"]


def test_two_concurrent_runs_share_one_mount_and_umount_waits_for_them(image_home):
    h = image_home
    _create(h)
    flag = h["root"] / "go"
    wait = f'{SHOW}; stat -c %d "$CONDA_PREFIX"; while [ ! -e {flag} ]; do sleep 0.05; done'
    first = subprocess.Popen(
        [sys.executable, "-m", "hpcenv", "run", "im", "--", "sh", "-c", wait],
        env=h["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = [first.stdout.readline() for _ in range(5)]
        second = hpcenv_ok(h, "run", "im", "--", "sh", "-c", f'{SHOW}; stat -c %d "$CONDA_PREFIX"')
        assert second.stdout.splitlines() == [line.rstrip("\n") for line in lines]
        assert mounts_below(h["mount_root"]) == [_mount(h)]  # one mount, shared
        busy = hpcenv_in(h, "umount", "im")
        assert busy.returncode == 1 and "is in use" in busy.stdout
        assert mounts_below(h["mount_root"]) == [_mount(h)]
    finally:
        flag.touch()
        first.wait(timeout=30)
    assert first.returncode == 0
    r = hpcenv_ok(h, "umount", "im")
    assert f"unmounted {_mount(h)}" in r.stdout and mounts_below(h["mount_root"]) == []
    assert hpcenv_ok(h, "umount").stdout.strip() == "nothing mounted"


def test_activate_mounts_the_image_and_the_shell_runs_from_it(image_home):
    h = image_home
    _create(h)
    code = f'eval "$({sys.executable} -m hpcenv activate im)" && {SHOW} && deactivate'
    r = subprocess.run(["bash", "-c", code], env=h["env"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == [f"prefix={_mount(h)}", "1"]
    assert _mount(h) in mounts_below(h["mount_root"])  # it stays for the shell until umount


def test_a_dead_squashfuse_leaves_a_stale_mount_the_next_run_and_doctor_clean(image_home):
    h = image_home
    _create(h)
    hpcenv_ok(h, "run", "im", "--", "true")
    mount = _mount(h)
    _kill_daemon(h, mount)  # as the OOM killer or a job's end would
    with pytest.raises(OSError) as dead:
        os.statvfs(mount)
    assert dead.value.errno == 107  # ENOTCONN: the mount is there, its daemon is not
    r = hpcenv_ok(h, "run", "im", "--", "sh", "-c", SHOW)
    assert r.stdout.splitlines()[:2] == [f"prefix={mount}", "1"]
    assert mounts_below(h["mount_root"]) == [mount] and os.stat(mount)

    _kill_daemon(h, mount)
    checks = json.loads(hpcenv_ok(h, "doctor", "--json").stdout)["result"]["checks"]
    [check] = [c for c in checks if c["name"] == "images"]
    assert (
        check["status"] == "OK" and f"cleaned {mount} (its squashfuse had died)" in check["detail"]
    )
    assert mounts_below(h["mount_root"]) == []


def test_a_run_killed_with_its_command_leaves_a_working_mount_that_umount_removes(image_home):
    h = image_home
    _create(h)
    run = subprocess.Popen(
        [sys.executable, "-m", "hpcenv", "run", "im", "--", "sh", "-c", "echo up; exec sleep 60"],
        env=h["env"], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert run.stdout.readline() == "up\n"
    run.kill()  # SIGKILL: the command is the process (hpcenv run execs it)
    run.wait()
    assert hpcenv_ok(h, "run", "im", "--", "demo-tool").returncode == 0
    assert f"unmounted {_mount(h)}" in hpcenv_ok(h, "umount").stdout  # its lock died with it
    assert mounts_below(h["mount_root"]) == [] and daemons_for(h["mount_root"]) == []


# ----------------------------------------------------------------------------- kills


def test_kill_9_at_every_step_of_an_image_create_leaves_it_whole_or_absent(image_home, tmp_path):
    """After each kill, the next create finishes or rolls back: the env runs, or it does not
    exist; no tree is left at the mount path and no temporary file in storage."""
    h = image_home
    ticks = tmp_path / "ticks"
    _create(h, "probe", _HPCENV_TEST_TICKS_FILE=str(ticks))
    total = int(ticks.read_text())
    assert total >= 5
    for k in range(1, total + 1):
        name = f"k{k}"
        r = hpcenv_in(h, "create", name, "python", "demo-tool", "-c", h["url"], "--image",
                      _HPCENV_TEST_KILL_AFTER=str(k))  # fmt: skip
        assert r.returncode == -signal.SIGKILL, (k, r.stderr)
        again = hpcenv_in(h, "create", name, "python", "demo-tool", "-c", h["url"], "--image")
        done = again.returncode == 2 and "already exists" in again.stderr  # killed at the end
        assert again.returncode == 0 or done, (k, again.stderr)
        assert _leftovers(h) == [], k
        assert sorted(os.listdir(_dir(h, name)))[-1] == "hpcenv-image.json", k
        assert len(os.listdir(_dir(h, name))) == 2, (k, os.listdir(_dir(h, name)))
        assert hpcenv_ok(h, "run", name, "--", "demo-tool").returncode == 0
    envs_dir = h["storage"] / ".conda" / "envs"
    assert [n for n in os.listdir(envs_dir) if n.startswith(".")] == []


def test_install_makes_a_new_version_and_a_switch_killed_midway_is_cleaned(image_home, tmp_path):
    h = image_home
    _create(h)
    old = _record(h)["current"]
    no_slurm = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "SLURM_CONF": "/nonexistent",
    }
    history = _history(h)
    r = hpcenv_ok(h, "install", "im", "numtool", **no_slurm)
    assert "+numtool 1.0" in r.stdout
    # the new version's history goes on from the old one's, as a plain env's would
    assert _history(h).startswith(history) and "# update specs: ['numtool']" in _history(h)
    rec = _record(h)
    assert rec["current"] != old and [v["number"] for v in rec["versions"]] == [1, 2]
    assert "could not ask SLURM" in r.stderr  # so the older version stays, as packs do
    assert (_dir(h) / f"{old}.sqfs").exists()
    out = hpcenv_ok(h, "run", "im", "--", "sh", "-c", "numtool; demo-tool").stdout
    assert f"prefix: {_mount(h)}" in out and "demo-tool 1.0" in out

    # a kill after the new image is written, before the switch: the old version stays current
    ticks = tmp_path / "ticks"
    hpcenv_ok(h, "remove", "im", "numtool", "--dry-run")
    cur = _record(h)["current"]
    r = hpcenv_in(h, "remove", "im", "numtool", _HPCENV_TEST_TICKS_FILE=str(ticks),
                  _HPCENV_TEST_KILL_AFTER="3", **no_slurm)  # fmt: skip
    assert r.returncode == -signal.SIGKILL
    assert _record(h)["current"] == cur and len(list(_dir(h).glob("*.sqfs"))) == 3
    clean = json.loads(hpcenv_ok(h, "clean", "--yes", "--json").stdout)["result"]
    gone = [i for i in clean["items"] if i["kind"] == "image"]
    assert {i["reason"] for i in gone} >= {"a build never switched to"}
    assert _leftovers(h) == []
    r = hpcenv_ok(h, "remove", "im", "numtool", "--yes")
    assert "-numtool 1.0" in r.stdout
    assert hpcenv_in(h, "run", "im", "--", "numtool").returncode != 0
    # with no SLURM to ask, clean may remove every older version
    hpcenv_ok(h, "clean", "--yes", PATH=_bin_without(tmp_path, "squeue"))
    assert [p.name for p in _dir(h).glob("*.sqfs")] == [f"{_record(h)['current']}.sqfs"]
    assert [v["number"] for v in _record(h)["versions"]] == [3]


# ----------------------------------------------------------------------------- convert


def test_image_converts_a_plain_env_and_deletes_its_tree(image_home):
    h = image_home
    hpcenv_ok(h, "create", "plain", "python", "demo-tool", "hello", "-c", h["url"])
    prefix = _dir(h, "plain")
    assert "envs/plain" in _environments_txt(h)
    stray = prefix / "share" / "notes.txt"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("mine\n")
    r = hpcenv_in(h, "image", "plain", "--yes")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "share/notes.txt" in r.stderr and "--force" in r.stderr
    assert (prefix / "conda-meta").is_dir()  # nothing changed
    stray.unlink()
    dry = hpcenv_ok(h, "image", "plain", "--dry-run")
    assert "would replace" in dry.stdout and (prefix / "conda-meta").is_dir()
    history = (prefix / "conda-meta" / "history").read_text()
    r = hpcenv_ok(h, "image", "plain", "--yes")
    assert "is an image env now" in r.stdout
    assert history and _history(h, "plain") == history  # the image keeps what the env said
    assert len(os.listdir(prefix)) == 2 and not (prefix / "conda-meta").exists()
    assert "envs/plain" not in _environments_txt(h)
    out = hpcenv_ok(h, "run", "plain", "--", "python", "-c", "import hello; print(hello.greet())")
    assert "hello from hpcenv" in out.stdout
    info = json.loads(hpcenv_ok(h, "info", "plain", "--json").stdout)["result"]
    assert info["specs"] == ["python", "demo-tool", "hello"] and info["image"]["version"] == 1
    again = hpcenv_in(h, "image", "plain", "--yes")
    assert again.returncode == 2 and "already" in again.stderr


# ----------------------------------------------------------------------------- jobs without SLURM


def test_jobscript_mounts_the_image_runs_and_unmounts_when_the_script_ends(image_home, tmp_path):
    h = image_home
    _create(h)
    script = hpcenv_ok(h, "jobscript", "im", "--", "sh", "-c", SHOW).stdout
    assert "srun --overlap" in script and mounts_below(h["mount_root"]) == []  # not mounted here
    env = {k: v for k, v in h["env"].items() if not k.startswith("SLURM_")}
    job = tmp_path / "job.sh"
    job.write_text(script)
    r = subprocess.run(["bash", str(job)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == [f"prefix={_mount(h)}", "1"]
    assert mounts_below(h["mount_root"]) == [] and daemons_for(h["mount_root"]) == []
    assert os.listdir(_base(h)) == [".lock"]
    stage = hpcenv_in(h, "jobscript", "im", "--stage", "--", "true")
    assert stage.returncode == 2 and "mounted on each node" in stage.stderr


def test_a_job_reuses_an_interactive_mount_and_leaves_it_mounted(image_home, tmp_path):
    h = image_home
    _create(h)
    hpcenv_ok(h, "run", "im", "--", "true")
    job = tmp_path / "job.sh"
    job.write_text(hpcenv_ok(h, "jobscript", "im", "--", "sh", "-c", SHOW).stdout)
    env = {k: v for k, v in h["env"].items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", str(job)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert mounts_below(h["mount_root"]) == [_mount(h)]  # `run` made it: `umount` removes it


# ----------------------------------------------------------------------------- refusals


def _bin_without(tmp_path: Path, missing: str) -> str:
    """A PATH with this interpreter and the image tools, less `missing`."""
    d = tmp_path / f"bin-{missing}"
    d.mkdir()
    for exe in ("mksquashfs", "unsquashfs", "squashfuse", "squashfuse_ll", "fusermount3",
                "fusermount", "umount", "sh", "bash"):  # fmt: skip
        found = shutil.which(exe)
        if found and not exe.startswith(missing):
            os.symlink(found, d / exe)
    return str(d)


@pytest.mark.parametrize(
    ("missing", "package"), [("mksquashfs", "squashfs-tools"), ("squashfuse", "squashfuse")]
)
def test_missing_tool_refuses_create_naming_its_package(image_home, tmp_path, missing, package):
    h = image_home
    r = hpcenv_in(h, "create", "im", "python", "-c", h["url"], "--image",
                  PATH=_bin_without(tmp_path, missing))  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert f"install the package {package}" in r.stderr
    assert not _dir(h).exists() and not _base(h).exists()


def test_site_default_makes_image_envs_and_no_image_opts_out(image_home):
    h = image_home
    site = Path(h["env"]["HPCENV_SITE_CONFIG"])
    site.write_text("[images]\ndefault = true\n")
    hpcenv_ok(h, "create", "a", "python", "-c", h["url"])
    hpcenv_ok(h, "create", "b", "python", "-c", h["url"], "--no-image")
    assert (_dir(h, "a") / "hpcenv-image.json").is_file()
    assert (_dir(h, "b") / "conda-meta").is_dir()


@pytest.mark.parametrize("root", ["relative/dir", "/scratch/$USER", "/local/a b", "/" + "x" * 70])
def test_mount_root_must_be_a_short_plain_absolute_path(tmp_path, root):
    site = tmp_path / "site.toml"
    site.write_text(f'[images]\nmount_root = "{root}"\n')
    with pytest.raises(ConfigError, match="images.mount_root"):
        load_settings(environ={"HOME": str(tmp_path), "HPCENV_SITE_CONFIG": str(site)})


def test_share_and_modulefile_refuse_an_image_env(image_home):
    h = image_home
    _create(h)
    group = __import__("grp").getgrgid(os.getgid()).gr_name
    r = hpcenv_in(h, "share", "im", "--group", group)
    assert r.returncode == 2 and "image env" in r.stderr
    r = hpcenv_in(h, "modulefile", "im")
    assert r.returncode == 2 and "image env" in r.stderr


def test_a_mount_dir_planted_by_another_user_is_refused(image_home):
    need("root", IS_ROOT, "planting a directory owned by another user needs root")
    ensure_users()
    h = image_home
    base = _base(h)
    base.mkdir(mode=0o777)
    os.chown(base, __import__("pwd").getpwnam("hpcbob").pw_uid, -1)
    r = hpcenv_in(h, "create", "im", "python", "-c", h["url"], "--image")
    assert r.returncode == 2 and "not a directory of yours" in r.stderr
    assert not _dir(h).exists()


def test_delete_removes_an_image_env_and_its_unused_mounts(image_home):
    h = image_home
    _create(h)
    hpcenv_ok(h, "run", "im", "--", "true")
    hpcenv_ok(h, "remove", "im", "--yes")
    assert not _dir(h).exists() and mounts_below(h["mount_root"]) == []
    assert "im" not in hpcenv_ok(h, "list").stdout


def _alice_home(base: Path) -> tuple[Path, Path]:
    """A home and a storage dir of hpcalice's under `base` (mode 0755, readable by her)."""
    base.chmod(0o755)
    home, storage = base / "home", base / "storage"
    for d in (home, storage):
        d.mkdir()
        chown_tree(d, "hpcalice")
    return home, storage


def test_a_user_who_cannot_open_dev_fuse_is_refused_naming_the_admin_fix(demo_channel, mount_root):
    """/dev/fuse at 0600 (root only, as here): a user's `create --image` exits 2 naming the
    device and what the site must do, and creates nothing, in storage or at the mount root."""
    need("root", IS_ROOT, "running as another user and setting /dev/fuse's mode need root")
    ensure_users()
    before = os.stat("/dev/fuse").st_mode & 0o7777
    base = Path(tempfile.mkdtemp(prefix="hpcenv-alice-"))
    os.chmod("/dev/fuse", 0o600)
    try:
        channel = readable_copy(demo_channel.path, base / "channel")
        home, storage = _alice_home(base)
        env = cli_env(home, storage, HPCENV_IMAGES_MOUNT_ROOT=str(mount_root))
        hp = f"{sys.executable} -m hpcenv"
        script = (
            f"{hp} setup --yes >/dev/null || exit 9; "
            f"{hp} create im python demo-tool -c {channel.as_uri()} --image"
        )
        r = as_user("hpcalice", ["bash", "-c", script], env=env, timeout=300)
        envs = [p.name for p in (storage / ".conda" / "envs").glob("*")]
    finally:
        os.chmod("/dev/fuse", before)
        shutil.rmtree(base)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "/dev/fuse is not usable by you (mode 0600)" in r.stderr
    assert "chmod 0666 /dev/fuse" in r.stderr
    assert envs == [] and os.listdir(mount_root) == []


# ----------------------------------------------------------------------------- verify


def test_check_image_reads_a_good_image_and_names_a_damaged_one(image_home, tmp_path):
    h = image_home
    _create(h)
    image = _dir(h) / f"{_record(h)['current']}.sqfs"
    [good] = images.verify(_dir(h))
    assert good.ok and good.inodes and good.inodes > 20
    broken = tmp_path / "broken.sqfs"
    broken.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    bad = images.check_image(broken)
    assert not bad.ok and "not a readable squashfs image" in bad.detail
    assert not images.check_image(tmp_path / "none.sqfs").ok


# ----------------------------------------------------------------------------- real packages, non-root

LINALG = """
import json, sys, numpy as np
a = np.array([[3.0, 1.0, 2.0], [1.0, 4.0, 1.0], [2.0, 1.0, 5.0]])
x = np.linalg.solve(a, np.array([1.0, 2.0, 3.0]))
assert np.allclose(a @ x, [1.0, 2.0, 3.0]) and np.allclose(x, [-0.2, 0.4, 0.6]), x
print(json.dumps({"prefix": sys.prefix, "numpy": np.__file__}))
"""


def test_image_env_of_python_and_numpy_does_linear_algebra_as_a_non_root_user(
    real_channel, mount_root, fuse_for_users
):
    """hpcalice (a real user; /dev/fuse 0666 as on clusters) creates an image env of the real
    CPython and numpy and runs numpy's linear algebra from its squashfuse mount."""
    need("root", IS_ROOT, "running as another user needs root")
    ensure_users()
    base = Path(tempfile.mkdtemp(prefix="hpcenv-alice-"))
    try:
        channel = readable_copy(real_channel.path, base / "channel")
        home, storage = _alice_home(base)
        env = cli_env(home, storage, HPCENV_IMAGES_MOUNT_ROOT=str(mount_root))
        hp = f"{sys.executable} -m hpcenv"
        script = (
            f"set -e; {hp} setup --yes >/dev/null; "
            f"{hp} create sci python numpy -c {channel.as_uri()} --image >&2; "
            f'{hp} run sci -- python -c "$1"; '
            f"ls {storage}/.conda/envs/sci | wc -l; {hp} umount >&2"
        )
        r = as_user("hpcalice", ["bash", "-c", script, "_", LINALG], env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        result, files = r.stdout.strip().splitlines()
    finally:
        shutil.rmtree(base)
    out = json.loads(result)
    mount = Path(out["prefix"])
    assert mount.parent == mount_root / "hpcenv-img-hpcalice"
    assert out["numpy"].startswith(f"{mount}/lib/python")
    assert files == "2"  # in storage: the image and its record, whatever the env's size
    assert daemons_for(mount_root) == []  # unmounted by `hpcenv umount`


# ----------------------------------------------------------------------------- real SLURM


@pytest.fixture
def slurm_image_home(ready_home, slurm_cluster):  # noqa: F811
    """ready_home on the three-node SLURM, image envs mounted under NODE_LOCAL: each node has
    its own tmpfs there (the host's stays an empty directory), as cluster nodes have /tmp."""
    need_image_tools()
    h = ready_home
    env = {k: v for k, v in h["env"].items() if k != "TMPDIR"}
    env.update(SLURM_CONF=str(slurm_cluster.conf), HPCENV_IMAGES_MOUNT_ROOT=str(NODE_LOCAL_ROOT))
    h = {**h, "env": env, "mount_root": NODE_LOCAL_ROOT, "logs": h["storage"] / "hpcenv-logs"}
    yield h
    release(NODE_LOCAL_ROOT)
    for entry in os.listdir(NODE_LOCAL_ROOT):
        shutil.rmtree(NODE_LOCAL_ROOT / entry, ignore_errors=True)


def _job_log(h, job: str, name: str = "im") -> str:
    path = h["logs"] / f"hpcenv-{name}-{job}.out"
    return path.read_text() if path.exists() else ""


def _squeue(h, job: str) -> str:
    r = subprocess.run(["squeue", "-h", "-o", "%T", "-j", job], env=h["env"],
                       capture_output=True, text=True)  # fmt: skip
    return r.stdout.strip()


def _wait_for_log(h, job: str, lines: int) -> list[str]:
    for _ in range(1200):
        if len(_job_log(h, job).splitlines()) >= lines or _squeue(h, job) in ("", "FAILED"):
            break
        time.sleep(0.1)
    return _job_log(h, job).splitlines()


def _wait_for_end(h, job: str) -> None:
    for _ in range(1200):
        if not _squeue(h, job):
            return
        time.sleep(0.1)


def test_a_three_node_job_mounts_the_image_once_on_each_node(slurm_image_home):
    """Two tasks on each of three nodes: every node has one mount of the image (its own, in
    its own namespace: three squashfuse daemons in all while the job runs), both tasks of a
    node use it, and the job's end unmounts them all."""
    h = slurm_image_home
    _create(h)
    mount = _mount(h)
    step = (
        'echo "$SLURMD_NODENAME $CONDA_PREFIX $(grep -c " $CONDA_PREFIX " /proc/self/mountinfo)'
        ' $(stat -f -c %t "$CONDA_PREFIX") $(demo-tool | head -1)"'
    )
    flag = h["root"] / "go"
    wait = f"while [ ! -e {flag} ]; do sleep 0.2; done"
    each = f"srun --overlap --ntasks-per-node=1 bash -c {shlex.quote(step)}"  # two tasks a node
    r = hpcenv_ok(h, "submit", "im", "--json", "--nodes", "3", "--", "bash", "-c",
                  f"{each} & {each}; wait; {wait}")  # fmt: skip
    job = json.loads(r.stdout)["result"]["job_id"]
    try:
        lines = _wait_for_log(h, job, 6)
        daemons = daemons_for(mount)  # while the job runs: one per node
    finally:
        flag.touch()
    _wait_for_end(h, job)
    assert len(daemons) == 3, (daemons, lines)
    rows = sorted(line.split(" ", 4) for line in lines)
    assert [row[0] for row in rows] == ["n1", "n1", "n2", "n2", "n3", "n3"], rows
    for _node, prefix, mounted, fstype, tool in rows:
        assert (prefix, mounted, tool) == (str(mount), "1", "demo-tool 1.0")
        assert fstype == "65735546"  # FUSE's magic: the image, not a directory on the disk
    assert daemons_for(NODE_LOCAL_ROOT) == []  # the job's end unmounted it on every node


def test_install_makes_a_new_version_while_a_running_job_keeps_the_old_one(slurm_image_home):
    """A job mounts version 1 and waits; `install` builds version 2 and switches; the job goes
    on from version 1 (its file is kept: `clean` says a running job mounts it); when the job
    has ended, `clean` removes it."""
    h = slurm_image_home
    _create(h)
    old = _record(h)["current"]
    flag = h["root"] / "go"
    wait = (
        'echo "first $CONDA_PREFIX $(demo-tool | head -1)"; '
        f"while [ ! -e {flag} ]; do sleep 0.2; done; "
        'echo "then $CONDA_PREFIX $(demo-tool | head -1) $(command -v numtool || echo none)"'
    )
    r = hpcenv_ok(h, "submit", "im", "--json", "--", "bash", "-c", wait)
    job = json.loads(r.stdout)["result"]["job_id"]
    try:
        for _ in range(1200):  # the job has started and mounted version 1
            if _job_log(h, job).startswith("first"):
                break
            time.sleep(0.1)
        assert _job_log(h, job).startswith("first"), _job_log(h, job)
        r = hpcenv_ok(h, "install", "im", "numtool")
        assert "+numtool 1.0" in r.stdout
        new = _record(h)["current"]
        assert new != old and (_dir(h) / f"{old}.sqfs").exists()
        report = json.loads(hpcenv_ok(h, "clean", "--yes", "--json").stdout)["result"]
        assert (_dir(h) / f"{old}.sqfs").exists()
        assert any("queued or running jobs mount" in w for w in report["warnings"]), report
        assert "numtool" in hpcenv_ok(h, "run", "im", "--", "numtool").stdout  # v2, here
    finally:
        flag.touch()
    _wait_for_end(h, job)
    old_mount = f"{NODE_LOCAL_ROOT}/{mounts.BASE_PREFIX}{mounts.user_label()}/im.{old}"
    assert _job_log(h, job).splitlines() == [
        f"first {old_mount} demo-tool 1.0",
        f"then {old_mount} demo-tool 1.0 none",  # the old version, whole, to the end
    ]
    hpcenv_ok(h, "umount")
    hpcenv_ok(h, "clean", "--yes")  # no job names it any more
    assert [p.name for p in _dir(h).glob("*.sqfs")] == [f"{new}.sqfs"]


# --------------------------------------------------------------------------- Jupyter kernels


def test_kernel_of_an_image_env_mounts_the_current_version_where_it_starts(
    image_home, real_channel, request, tmp_path
):
    """The kernelspec names the env's directory, not a version's mount: with nothing mounted
    (a fresh node), the launcher mounts the current version and the kernel runs from it."""
    from tests.jupyter import client_env, ipykernel_wheels, pip_section, start_kernel

    h = image_home
    yml = tmp_path / "nb.yml"
    yml.write_text(
        f"name: nbim\nchannels:\n  - {real_channel.url}\ndependencies:\n  - python\n"
        + pip_section(ipykernel_wheels(request))
    )
    hpcenv_ok(h, "create", "-f", str(yml), "--image")
    data = tmp_path / "jupyter"
    hpcenv_ok(h, "kernel", "nbim", JUPYTER_DATA_DIR=str(data))
    spec = json.loads((data / "kernels" / "hpcenv-nbim" / "kernel.json").read_text())
    named = Path(spec["metadata"]["hpcenv"]["prefix"])
    assert named.resolve() == _dir(h, "nbim").resolve()  # the env, not a version's mount
    hpcenv_ok(h, "umount", "nbim")
    assert mounts_below(h["mount_root"]) == []
    code = "import json, os, sys; print(json.dumps([sys.prefix, os.environ['CONDA_PREFIX']]))"
    result = start_kernel(data, "hpcenv-nbim", code, env=client_env(HOME=str(h["home"])))
    assert result["status"] == "ok", result
    mount = str(_mount(h, "nbim"))
    assert json.loads(result["stdout"]) == [mount, mount]
    listed = json.loads(
        hpcenv_ok(h, "kernel", "--list", "--json", JUPYTER_DATA_DIR=str(data)).stdout
    )["result"]
    assert [(k["name"], k["env_exists"]) for k in listed["kernels"]] == [("hpcenv-nbim", True)]


@pytest.mark.parametrize(
    "args",
    [("install", "im", "--pip", "six"), ("repair", "im")],
    ids=["install-pip", "repair"],
)
def test_commands_that_write_into_an_env_refuse_an_image_env_and_say_what_to_do(image_home, args):
    h = image_home
    _create(h)
    before = _record(h)
    r = hpcenv_in(h, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is an image env" in lines[0], r.stderr
    assert _record(h) == before
