"""Fixtures for image envs: the real squashfs-tools, squashfuse and fuse3, a mount root of the
test's own, and a /dev/fuse opened to users (0666) as clusters ship it, restored afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, need

DEBS = "squashfs-tools squashfuse fuse3"
TOOLS = ("mksquashfs", "unsquashfs", "squashfuse", "squashfuse_ll", "fusermount3")


def need_image_tools() -> None:
    for exe in TOOLS:
        need("squashfs", shutil.which(exe) is not None, f"{exe} is missing (Debian: {DEBS})")
    need("FUSE", os.path.exists("/dev/fuse"), "/dev/fuse is missing (the kernel's fuse module)")


def mounts_below(root: Path) -> list[Path]:
    """Mount points under `root`, as this process's mount namespace sees them."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(str(root).rstrip("/") + "/"):
            out.append(Path(point))
    return out


def daemons_for(root: Path) -> list[int]:
    """PIDs of squashfuse processes whose command line names a path under `root` (the ones
    these tests started, in any mount namespace)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or not argv or not os.path.basename(argv[0]).startswith(b"squashfuse"):
            continue
        if any(os.fsencode(str(root)) in a for a in argv[1:]):
            pids.append(int(entry))
    return pids


def release(root: Path) -> None:
    """Unmount everything under `root` and end the daemons the tests started there."""
    for point in reversed(mounts_below(root)):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
    for pid in daemons_for(root):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture
def mount_root():
    """A mount root of this test's own (mode 1777 like /tmp), emptied afterwards."""
    need_image_tools()
    root = Path(tempfile.mkdtemp(prefix="hpcenv-mr-", dir="/tmp"))  # noqa: S108 - short paths
    root.chmod(0o1777)
    yield root
    release(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def fuse_for_users():
    """/dev/fuse at 0666, as clusters ship it (0600 here); restored when the module is done."""
    need_image_tools()
    need("root", IS_ROOT, "changing /dev/fuse's mode needs root")
    before = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", before)


@pytest.fixture
def image_home(ready_home, mount_root):
    """ready_home whose image envs are built and mounted under the test's mount root."""
    env = {**ready_home["env"], "HPCENV_IMAGES_MOUNT_ROOT": str(mount_root)}
    return {**ready_home, "env": env, "mount_root": mount_root}
