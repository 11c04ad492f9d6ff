"""The storage lock where `flock` does not work (NFS without lockd, Lustre mounted noflock).

The real CLI runs under an LD_PRELOAD shim (tests/noflock.c) that makes every flock on a file
in the storage area fail with ENOLCK, ENOSYS or EOPNOTSUPP, as those filesystems do; hpcenv
must then lock with a lock directory, and rattler's package-cache lock must still work.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import need
from tests.fs import hpcenv_in, hpcenv_ok, snapshot
from tests.paused import Paused, Started

NOFLOCK_C = Path(__file__).with_name("noflock.c")
BUILD_PATH = os.environ.get("PATH", "")  # gcc finds `as` and `ld` on it, whatever tests set


@pytest.fixture(scope="module")
def noflock_so(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    need("gcc", gcc is not None, "gcc builds the LD_PRELOAD shim that makes flock fail")
    out = tmp_path_factory.mktemp("noflock") / "noflock.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-o", str(out), str(NOFLOCK_C), "-ldl"],
        check=True,
        env={**os.environ, "PATH": BUILD_PATH},
    )
    return out


@pytest.fixture
def no_flock(ready_home, noflock_so):
    """ready_home whose storage area cannot flock (ENOLCK), in `env` for every command."""
    storage = os.path.realpath(ready_home["storage"])
    env = {**ready_home["env"], "LD_PRELOAD": str(noflock_so), "NOFLOCK_UNDER": storage}
    return {**ready_home, "env": env, "lock_dir": ready_home["storage"] / ".hpcenv" / "lock.d"}


def _owner(lock_dir: Path, **fields) -> None:
    lock_dir.mkdir()
    (lock_dir / "owner").write_text(json.dumps({"since": time.time(), **fields}))


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_shim_makes_flock_fail_in_storage_only(no_flock, tmp_path):
    """The premise: under the shim, flock in storage fails with ENOLCK, elsewhere it works."""
    probe = (
        "import errno, fcntl, sys\n"
        "for path in sys.argv[1:]:\n"
        "    with open(path, 'w') as f:\n"
        "        try:\n"
        "            fcntl.flock(f, fcntl.LOCK_EX)\n"
        "            print('locked')\n"
        "        except OSError as exc:\n"
        "            print(errno.errorcode[exc.errno])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(no_flock["storage"] / "x"), str(tmp_path / "y")],
        env=no_flock["env"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["ENOLCK", "locked"]


def test_two_creates_on_storage_without_flock_take_turns_through_a_lock_directory(no_flock):
    h, lock_dir = no_flock, no_flock["lock_dir"]
    # the first is held after its first step: it holds the lock (a lock directory here)
    first = Paused(["create", "first", "demo-tool", "-c", h["url"]], h["env"], h["root"])
    owner = json.loads((lock_dir / "owner").read_text())
    assert owner["pid"] == first.proc.pid and owner["host"] == socket.gethostname()
    second = Started(["create", "second", "libnum", "-c", h["url"]], h["env"])
    waiting = f"waiting for another hpcenv (pid {first.proc.pid} on host {socket.gethostname()})"
    second.stderr_until(waiting)
    first.resume()
    done, then = first.finish(), second.finish()
    assert done.returncode == 0, done.stderr
    assert then.returncode == 0, then.stderr
    envs = h["home"] / ".conda" / "envs"
    assert (envs / "first" / "bin" / "demo-tool").exists()
    assert (envs / "second" / "conda-meta" / "libnum-2.0-0.json").exists()
    assert not lock_dir.exists()  # released
    pkgs = h["storage"] / ".cache" / "rattler" / "pkgs"
    assert not (pkgs / ".cache.lock").is_symlink()  # rattler's lock pointed back home


@pytest.mark.parametrize("errno_name", ["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_stale_lock_directory_of_a_dead_process_is_taken_over(no_flock, errno_name):
    h, lock_dir = no_flock, no_flock["lock_dir"]
    hpcenv_ok(h, "create", "gone", "demo-tool", "-c", h["url"])
    _owner(lock_dir, pid=_dead_pid(), host=socket.gethostname(), boot=_boot_id(), start="1")
    result = hpcenv_in(
        h, "remove", "gone", "--yes", NOFLOCK_ERRNO=errno_name, HPCENV_LOCK_TIMEOUT="30"
    )
    assert result.returncode == 0, result.stderr
    assert "waiting" not in result.stderr
    assert not (h["home"] / ".conda" / "envs" / "gone").exists()
    assert not lock_dir.exists()
    assert not list(lock_dir.parent.glob("lock.d*"))  # nothing left beside it


def test_lock_directory_from_before_a_reboot_is_stale(no_flock):
    h, lock_dir = no_flock, no_flock["lock_dir"]
    _owner(lock_dir, pid=os.getpid(), host=socket.gethostname(), boot="an-earlier-boot", start="1")
    result = hpcenv_in(h, "create", "after", "demo-tool", "-c", h["url"], HPCENV_LOCK_TIMEOUT="30")
    assert result.returncode == 0, result.stderr
    assert not lock_dir.exists()


def test_lock_directory_of_a_live_process_is_respected(no_flock):
    """A pid that is alive with the start time it recorded: never taken over."""
    h, lock_dir = no_flock, no_flock["lock_dir"]
    hpcenv_ok(h, "create", "x", "demo-tool", "-c", h["url"])
    start = Path(f"/proc/{os.getpid()}/stat").read_text().rpartition(")")[2].split()[19]
    _owner(lock_dir, pid=os.getpid(), host=socket.gethostname(), boot=_boot_id(), start=start)
    before = snapshot(h["home"], h["storage"])
    result = hpcenv_in(h, "install", "x", "libnum", HPCENV_LOCK_TIMEOUT="0.3")
    assert result.returncode == 2
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in result.stderr
    assert json.loads((lock_dir / "owner").read_text())["pid"] == os.getpid()
    assert snapshot(h["home"], h["storage"]) == before


def test_lock_directory_of_another_host_waits_and_says_whose_it_is(no_flock):
    h, lock_dir = no_flock, no_flock["lock_dir"]
    hpcenv_ok(h, "create", "x", "demo-tool", "-c", h["url"])
    _owner(lock_dir, pid=4242, host="node17.cluster", boot="x", start="1")
    before = snapshot(h["home"], h["storage"])
    result = hpcenv_in(h, "install", "x", "libnum", HPCENV_LOCK_TIMEOUT="0.3")
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert "pid 4242 on host node17.cluster" in last
    assert f"rm -r {lock_dir}" in last
    assert lock_dir.exists()  # another host's lock cannot be judged from here
    assert snapshot(h["home"], h["storage"]) == before


def test_node_that_can_flock_still_waits_for_a_lock_directory(ready_home):
    """Nodes that can lock and nodes that cannot, on one storage: an flock holder defers to a
    live lock directory made by a node without flock."""
    h = ready_home
    lock_dir = h["storage"] / ".hpcenv" / "lock.d"
    _owner(lock_dir, pid=4242, host="node17.cluster", boot="x", start="1")
    result = hpcenv_in(h, "create", "x", "demo-tool", "-c", h["url"], HPCENV_LOCK_TIMEOUT="0.3")
    assert result.returncode == 2
    assert "pid 4242 on host node17.cluster" in result.stderr
