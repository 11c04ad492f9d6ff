"""The FUSE side of image envs: the tools (`check_tools`), where a user's mounts live
(`user_base`), the locks that coordinate a user's processes on a node, and what is mounted
(`mounts_under`, `is_alive`). The protocol is described in `images.mounts`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import RefusedError

BASE_PREFIX = "hpcenv-img-"
FUSE_DEVICE = "/dev/fuse"
_USER = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
_held: list[int] = []  # shared `.users` locks this process keeps until it exits (or execs on)


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tools:
    mksquashfs: str | None
    squashfuse: str | None
    fusermount: str | None  # fusermount3 or fusermount
    fuse_usable: bool
    problem: str | None  # what is missing for mounting, with the fix
    build_problem: str | None  # ... and for building


def find_tools(environ: dict[str, str] | None = None, device: str = FUSE_DEVICE) -> Tools:
    """What this node has for image envs, and what is missing (each with the package or the
    admin setting that provides it)."""
    path = (environ or os.environ).get("PATH")
    mksquashfs = shutil.which("mksquashfs", path=path)
    squashfuse = shutil.which("squashfuse_ll", path=path) or shutil.which("squashfuse", path=path)
    fusermount = shutil.which("fusermount3", path=path) or shutil.which("fusermount", path=path)
    root = os.geteuid() == 0
    usable = os.path.exists(device) and (root or os.access(device, os.R_OK | os.W_OK))
    problem = None
    if squashfuse is None:
        problem = (
            "squashfuse is not installed, so image envs cannot be mounted; "
            "install the package squashfuse (Debian, Ubuntu; RHEL: from EPEL)"
        )
    elif fusermount is None and not root:
        problem = (
            "fusermount3 is not installed, so image envs cannot be mounted by users; "
            "install the package fuse3 (Debian, RHEL)"
        )
    elif not root and not _setuid_root(fusermount):
        problem = (
            f"{fusermount} is not setuid root, so users cannot mount image envs; "
            f"ask your admin to restore it (chmod u+s {fusermount})"
        )
    elif not usable:
        mode = _mode(device)
        problem = (
            f"{device} is not usable by you ({mode}), so image envs cannot be mounted; "
            f"your site must open it to users (chmod 0666 {device}, as most clusters do), "
            "or create envs without --image (site setting images.default = false)"
        )
    build = problem
    if build is None and mksquashfs is None:
        build = (
            "mksquashfs is not installed, so image envs cannot be built; "
            "install the package squashfs-tools (Debian, RHEL)"
        )
    return Tools(mksquashfs, squashfuse, fusermount, usable, problem, build)


def check_tools(*, build: bool) -> Tools:
    """The tools, or RefusedError (exit 2, nothing changed) naming what is missing."""
    tools = find_tools()
    problem = tools.build_problem if build else tools.problem
    if problem is not None:
        what, _, fix = problem.partition("; ")
        raise RefusedError(what, hint=fix)
    return tools


def _setuid_root(path: str | None) -> bool:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return False
    return st is not None and st.st_uid == 0 and bool(st.st_mode & stat.S_ISUID)


def _mode(path: str) -> str:
    try:
        return f"mode {stat.S_IMODE(os.stat(path).st_mode):04o}"
    except OSError:
        return "missing"


# --------------------------------------------------------------------------- where


def user_label(uid: int | None = None) -> str:
    """The user's name when it is a plain word (as in /tmp/hpcenv-img-alice), else the uid."""
    uid = os.geteuid() if uid is None else uid
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
    return name if _USER.match(name) else str(uid)


def user_base(mount_root: str) -> Path:
    return Path(mount_root) / f"{BASE_PREFIX}{user_label()}"


def ensure_base(base: Path) -> Path:
    """The user's base directory: created 0700, or checked (a real directory of this user's,
    in a mount root that only root or this user can rename things in). RefusedError if not."""
    root = base.parent
    try:
        st = os.stat(root)
    except OSError as exc:
        raise RefusedError(
            f"the image mount root {root} is not usable: {exc.strerror}",
            hint="create it on every node, or set images.mount_root in the config",
        ) from None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, os.geteuid()) or (mode & 0o002 and not mode & stat.S_ISVTX):
        raise RefusedError(
            f"the image mount root {root} is writable by others without the sticky bit",
            hint="ask your admin to make it like /tmp (mode 1777, owned by root), or set "
            "images.mount_root to such a directory",
        )
    if base.name != f"{BASE_PREFIX}{user_label()}":
        raise RefusedError(
            f"{base} is not your image mount directory (the image was built by another user)",
            hint="create an image env of your own: `hpcenv create NAME --image ...`",
        )
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RefusedError(
            f"cannot create {base}: {exc.strerror}",
            hint="set images.mount_root to a node-local directory you can write",
        ) from None
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise RefusedError(
            f"{base} is not a directory of yours: someone else created it",
            hint="ask your admin to remove it, or set images.mount_root elsewhere",
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(base, 0o700)
    return base


# --------------------------------------------------------------------------- locks


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def mutex(base: Path) -> Iterator[None]:
    fd = _open(base / ".lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _users_path(mount: Path) -> Path:
    return mount.parent / f".{mount.name}.users"


def _marker(mount: Path, kind: str) -> Path:
    return mount.parent / f".{mount.name}.{kind}"


def take_users_lock(mount: Path) -> int:
    """A shared lock on `.NAME.users` (see the module docstring): the fd that holds it."""
    path = _users_path(mount)
    while True:
        fd = _open(path)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed meanwhile by an unmount: lock the file that is there now


def _try_exclusive(mount: Path) -> int | None:
    """The `.NAME.users` lock taken exclusively (no one uses NAME), or None (someone does)."""
    fd = _open(_users_path(mount))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --------------------------------------------------------------------------- what is mounted


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts_under(base: Path) -> dict[Path, str]:
    """The mount points directly in `base` (as this process's mount namespace sees them) and
    their filesystem types; the last mount of a path wins."""
    found: dict[Path, str] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = Path(_unescape(fields[4]))
        if point.parent == base:
            fstype = line.split(" - ", 1)[1].split()[0]
            found[point] = fstype
    return found


def is_alive(mount: Path) -> bool:
    """Whether the daemon behind a mount answers (a dead one gives ENOTCONN). statfs, not
    stat: the kernel answers stat from its attribute cache (squashfuse caches forever, the
    image being read-only) even when the daemon is gone; statfs always asks the daemon."""
    try:
        os.statvfs(mount)
    except OSError as exc:
        return exc.errno not in (errno.ENOTCONN, errno.EIO, errno.ECONNABORTED)
    return True


def _fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def _unmount(mount: Path, lazy: bool = False) -> str | None:
    """Unmount; None when done, else what the tool said."""
    commands = []
    exe = _fusermount()
    if exe:
        commands.append([exe, "-u", *(["-z"] if lazy else []), str(mount)])
    if os.geteuid() == 0 and shutil.which("umount"):
        commands.append(["umount", *(["-l"] if lazy else []), str(mount)])
    said = "no fusermount3 to unmount with (package fuse3)"
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode == 0 or mount not in mounts_under(mount.parent):
            return None
        said = " ".join(done.stderr.split()) or f"{argv[0]} exited {done.returncode}"
    return said
