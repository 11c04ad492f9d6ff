"""Real Unix users for tests (root only): a lab group with members, and commands run as them.

`as_user` runs a real process as another user: fresh (no forked engine threads), with that
user's uid, gid and groups, so the kernel checks every permission. When this interpreter
lives where others cannot reach (pyenv under a 0700 /root), the process gets a private mount
namespace in which the blocking directory is replaced by a 0755 tmpfs holding just the
interpreter's installation, bound read-only at its own path: nothing changes outside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LAB = "hpcenvlab"
MEMBERS = ("hpcalice", "hpcbob")
OUTSIDER = "hpccarol"
UPG_USER = "hpcdave"  # has a user private group (a group of his own name, only him in it)

_SCRIPT = """set -e
mount --bind -o ro "$1" "$2"
mount -t tmpfs -o mode=0755,size=1m tmpfs "$3"
mkdir -p "$1"
mount --bind "$2" "$1"
shift 3
exec "$@"
"""


def ensure_users() -> None:
    """The lab group, its members, an outsider and a user with a private group (idempotent)."""

    def quiet(cmd: list[str]) -> None:
        subprocess.run(cmd, check=False, capture_output=True)

    quiet(["groupadd", LAB])
    for user in (*MEMBERS, OUTSIDER):
        quiet(["useradd", "-M", "-N", "-s", "/bin/sh", user])
    for user in MEMBERS:
        quiet(["usermod", "-aG", LAB, user])
    quiet(["useradd", "-M", "-U", "-s", "/bin/sh", UPG_USER])


def _blocking_ancestor(path: Path) -> Path | None:
    """The topmost directory on the way to `path` that others cannot pass through."""
    for p in [*reversed(path.parents), path]:
        try:
            if not os.stat(p).st_mode & 0o001:
                return p
        except OSError:
            return None
    return None


def as_user(
    user: str, argv: list[str], *, env: dict[str, str], umask: int = 0o022, **kw
) -> subprocess.CompletedProcess:
    """Run `argv` as `user` (and its groups) with `env`; output captured as text."""
    base = Path(os.path.realpath(sys.base_prefix))
    blocking = _blocking_ancestor(base)
    drop = ["setpriv", f"--reuid={user}", "--regid=" + _primary_group(user), "--init-groups"]
    if blocking is None:
        cmd = [*drop, *argv]
        stash = None
    else:
        stash = tempfile.mkdtemp(prefix="hpcenv-as-user-")
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", _SCRIPT, "_"]
        cmd += [str(base), stash, str(blocking), *drop, *argv]
    try:
        return subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            umask=umask,
            stdin=subprocess.DEVNULL,
            **kw,
        )
    finally:
        if stash is not None:
            os.rmdir(stash)


def hpcenv_as(user: str, *args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    """The real CLI (`python -m hpcenv`) as `user`."""
    return as_user(user, [sys.executable, "-m", "hpcenv", *args], env=env, **kw)


def _primary_group(user: str) -> str:
    import grp
    import pwd

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def chown_tree(root: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for dirpath, _dirnames, filenames in os.walk(root):
        for p in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            os.lchown(p, entry.pw_uid, entry.pw_gid)


def readable_copy(src: Path, dst: Path) -> Path:
    """A copy of a tree that every user can read (a channel built under pytest's 0700 tmp)."""
    shutil.copytree(src, dst)
    for dirpath, _dirnames, filenames in os.walk(dst):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return dst
