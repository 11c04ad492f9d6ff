"""Node-local squashfuse mounts of image envs: where, under which lock, and who unmounts.

Every image version is built at, and mounted at, one path that is the same on every node:

    MOUNT_ROOT/hpcenv-img-USER/LABEL.ID     MOUNT_ROOT: the site's `images.mount_root` (/tmp)

`hpcenv-img-USER` (the user's *base*) is a directory of the user's own, mode 0700, directly in
the mount root: no one else can create, rename or mount anything in it. In it, beside the
mount points, small files coordinate every process of the user on that node:

    .lock           the mutex: held while deciding to mount, unmount, build or clean
    .NAME.users     held *shared* by whoever uses mount NAME for as long as it does (a `run`
                    keeps it across exec, so the command holds it; a job's mount holder for
                    the whole job); whoever gets it *exclusively* knows no one uses NAME
    .NAME.job       NAME was mounted by a job, which unmounts it when the last user leaves
                    (a mount that `run` or `activate` made or touched stays until `umount`)
    .NAME.build     held while NAME is being built (a tree, not a mount); free means the
                    builder is gone and its tree is a leftover

Lock order: `.NAME.users` before `.lock`. A `.NAME.users` file is removed only by whoever
holds it exclusively; whoever gets it shared checks that the path still names the file it
locked (else it locks the new one). The job side (`HOLD`, run on every node by `srun`) speaks
the same protocol in bash with flock(1), so a job and an interactive `run` share one mount.

A mount whose squashfuse died (killed, OOM) answers ENOTCONN: `tidy` (every command that
mounts, builds or unmounts, and `doctor`) unmounts it lazily and removes the trees of builds
whose builder is gone.

Tools: squashfuse (or squashfuse_ll, preferred: the low-level API is faster), fusermount3
(or fusermount; setuid root) for a user to mount and unmount, a /dev/fuse the user can open,
and mksquashfs to build. `check_tools` says which is missing and which package has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError
from hpcenv.images.fuse import (  # noqa: F401 - the public names are this module's too
    BASE_PREFIX,
    FUSE_DEVICE,
    Tools,
    _held,
    _marker,
    _open,
    _try_exclusive,
    _unlink,
    _unmount,
    _users_path,
    check_tools,
    ensure_base,
    find_tools,
    is_alive,
    mounts_under,
    mutex,
    take_users_lock,
    user_base,
    user_label,
)

# --------------------------------------------------------------------------- tidy


@dataclass(frozen=True)
class Tidied:
    path: str
    what: str  # stale-mount | dead-build | empty-dir


def tidy(base: Path) -> list[Tidied]:
    """Under the mutex: unmount mounts whose daemon died, remove the trees of builds whose
    builder is gone, empty mount points and the lock files of mounts that are gone."""
    done: list[Tidied] = []
    mounted = mounts_under(base)
    for point in mounted:
        if not is_alive(point) and _unmount(point, lazy=True) is None:
            _unlink(_marker(point, "job"))
            done.append(Tidied(str(point), "stale-mount"))
    mounted = mounts_under(base)
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return done
    names = {e.name for e in entries}
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        if path in mounted or not entry.is_dir(follow_symlinks=False):
            continue
        build = _marker(path, "build")
        if os.path.lexists(build):
            fd = _open(build)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a build in progress
            try:
                remove_tree(path)
                _unlink(build)
            finally:
                os.close(fd)
            done.append(Tidied(str(path), "dead-build"))
        else:
            with contextlib.suppress(OSError):
                os.rmdir(path)  # an empty mount point; anything else is left alone
                done.append(Tidied(str(path), "empty-dir"))
    for name in names:  # lock files of mounts and builds that are gone
        m = re.match(r"^\.(.+)\.(users|job|build)$", name)
        if not m or base / m[1] in mounted or os.path.isdir(base / m[1]):
            continue
        if m[2] == "users":
            fd = _try_exclusive(base / m[1])
            if fd is not None:
                _unlink(base / name)
                os.close(fd)
        elif m[2] == "job":
            _unlink(base / name)
        else:
            fd = _open(base / name)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _unlink(base / name)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    return done


def remove_tree(path: Path) -> None:
    from hpcenv.fsops import remove_tree as remove

    problem = remove(path)
    if problem is not None:
        raise OperationError(f"cannot remove {path}: {problem}")


# --------------------------------------------------------------------------- mount


@dataclass(frozen=True)
class Mounted:
    mount: str
    fresh: bool  # mounted now (else it was mounted already)
    tidied: tuple[Tidied, ...] = ()


def ensure_mounted(image_file: Path, mount: Path, *, hold: bool = True) -> Mounted:
    """Mount `image_file` at `mount` unless it is mounted already (never twice), under the
    base's mutex. With `hold`, this process keeps a shared `.users` lock for the rest of its
    life, inherited across exec (so `hpcenv run`'s command holds it): no unmount happens
    under it. The mount stays after this process: `hpcenv umount` removes it."""
    tools = check_tools(build=False)
    base = ensure_base(mount.parent)
    users = take_users_lock(mount)
    try:
        with mutex(base):
            tidied = tidy(base)
            fresh = mount not in mounts_under(base)
            if fresh:
                _mount(tools, image_file, mount)
            _unlink(_marker(mount, "job"))  # an interactive user: it stays until `umount`
    except BaseException:
        os.close(users)
        raise
    if hold:
        os.set_inheritable(users, True)
        _held.append(users)
    else:
        os.close(users)
    return Mounted(str(mount), fresh, tuple(tidied))


def _mount(tools: Tools, image_file: Path, mount: Path) -> None:
    try:
        os.mkdir(mount, 0o755)
    except FileExistsError:
        st = os.lstat(mount)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise RefusedError(f"{mount} is not a directory of yours") from None
    if not os.access(image_file, os.R_OK):
        raise OperationError(
            f"the image {image_file} is missing or unreadable",
            hint="`hpcenv verify` checks it; re-create the env if it is gone",
        )
    done = subprocess.run(
        [str(tools.squashfuse), "-o", "ro", str(image_file), str(mount)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0 or mount not in mounts_under(mount.parent):
        with contextlib.suppress(OSError):
            os.rmdir(mount)
        said = " ".join(done.stderr.split())[:300] or f"exit {done.returncode}"
        raise OperationError(
            f"squashfuse could not mount {image_file} at {mount}: {said}",
            hint="`hpcenv doctor` checks FUSE on this node",
        )


# --------------------------------------------------------------------------- unmount


@dataclass(frozen=True)
class Unmounted:
    mount: str
    status: str  # unmounted | in-use | stale-cleaned | failed: WHY


def unmount(base: Path, names: set[str] | None = None) -> tuple[list[Unmounted], list[Tidied]]:
    """Unmount this user's mounts in `base` (those named, else all) that no one uses:
    (what happened to each, what `tidy` cleaned on the way)."""
    if not base.is_dir():
        return [], []
    ensure_base(base)
    out = []
    with mutex(base):
        tidied = tidy(base)
        for point in sorted(mounts_under(base)):
            if names is not None and point.name not in names:
                continue
            out.append(Unmounted(str(point), _unmount_unused(point)))
    return out, tidied


def _unmount_unused(point: Path) -> str:
    """Under the mutex: unmount `point` if no `run` or job holds it."""
    fd = _try_exclusive(point)
    if fd is None:
        return "in-use"
    try:
        said = _unmount(point)
        if said is not None:
            return "in-use" if "busy" in said.lower() else f"failed: {said}"
        _unlink(_marker(point, "job"))
        _unlink(_users_path(point))
        with contextlib.suppress(OSError):
            os.rmdir(point)
        return "unmounted"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- build


@contextlib.contextmanager
def build_dir(base: Path, name: str) -> Iterator[Path]:
    """A fresh directory `base/name` to build a tree in, marked as being built (`tidy` leaves
    it alone while this process lives); removed on the way out, whatever happens."""
    ensure_base(base)
    path = base / name
    lock = _open(_marker(path, "build"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with mutex(base):
            tidy(base)
            os.mkdir(path, 0o755)
        try:
            yield path
        finally:
            with mutex(base):
                remove_tree(path)
                _unlink(_marker(path, "build"))
    finally:
        os.close(lock)


# --------------------------------------------------------------------------- jobs

# Run on each node of a job (`srun --overlap`, one task per node; without SLURM, right here)
# as `bash -c HOLD _ IMAGE MOUNT` for the whole job: it joins the users of MOUNT (the same
# protocol as above), mounts IMAGE there unless it is mounted, prints "mounted", and waits;
# on SIGUSR1 (the job script's exit) or SIGTERM (the job's end) it leaves, unmounting what a
# job mounted when it was the last user. squashfuse detaches itself: another job of the user
# on the node may still use the mount when this one ends.
HOLD = r"""set -u
img=$1 mnt=$2 base=${2%/*} name=${2##*/}
fail() { echo "hpcenv: $* (on $(hostname))" >&2; exit 1; }
umask 077
mkdir -p "$base" 2>/dev/null
if [ -L "$base" ] || [ ! -d "$base" ] || [ ! -O "$base" ]; then fail "unsafe mount directory $base"; fi
chmod 700 "$base"
mounted() { awk -v m="$mnt" '$5 == m {f = 1} END {exit !f}' /proc/self/mountinfo; }
unmount() {
  fusermount3 -u "$@" "$mnt" 2>/dev/null || fusermount -u "$@" "$mnt" 2>/dev/null \
    || { [ "$(id -u)" = 0 ] && umount ${1:+-l} "$mnt"; }
}
while :; do
  exec 8>>"$base/.$name.users" && flock -s 8 || fail "cannot lock $base/.$name.users"
  if [ "$(stat -L -c %i /proc/$$/fd/8)" = "$(stat -c %i "$base/.$name.users" 2>/dev/null)" ]; then break; fi
  exec 8>&-
done
exec 9>>"$base/.lock" && flock 9 || fail "cannot lock $base/.lock"
if mounted && ! stat -f "$mnt" >/dev/null 2>&1; then unmount -z; rm -f "$base/.$name.job"; fi
if ! mounted; then
  mkdir -p "$mnt"
  if [ -L "$mnt" ] || [ ! -O "$mnt" ]; then fail "unsafe mount point $mnt"; fi
  fuse=$(command -v squashfuse_ll || command -v squashfuse) \
    || fail "squashfuse is not installed (package squashfuse)"
  "$fuse" -o ro "$img" "$mnt" </dev/null >/dev/null 7>&- 8>&- 9>&- \
    || fail "squashfuse cannot mount $img at $mnt"
  : > "$base/.$name.job"
fi
exec 9>&-
nap=
leave() {
  trap - USR1 TERM INT HUP
  if [ -n "$nap" ]; then kill "$nap" 2>/dev/null; fi
  exec 8>&-
  exec 9>>"$base/.lock"; flock 9
  if [ -e "$base/.$name.job" ] && exec 7>>"$base/.$name.users" && flock -n -x 7; then
    if unmount; then rm -f "$base/.$name.job" "$base/.$name.users"; rmdir "$mnt" 2>/dev/null; fi
  fi
  exit 0
}
trap leave USR1 TERM INT HUP
echo mounted
exec 2>/dev/null  # (bash would report the nap that srun's signal ends in the job's log)
while :; do sleep 3600 </dev/null >/dev/null 2>&1 7>&- 8>&- 9>&- & nap=$!; wait $nap; done
"""


def job_lines(image_file: Path, mount: Path) -> list[str]:
    """Job script lines that mount the image once on every node of the job (a holder per
    node, `HOLD`), wait until each node has it, and release it when the script exits."""
    import shlex

    q = shlex.quote
    hold = f"bash -c {q(HOLD)} _ " + '"$HPCENV_IMAGE" "$HPCENV_MOUNT" >"$_hpcenv_fifo" &'
    return [
        "# Mount the env's image once on every node of the job (unmounted when the job ends)",
        f"HPCENV_IMAGE={q(str(image_file))}",
        f"HPCENV_MOUNT={q(str(mount))}",
        '_hpcenv_fifo="$(mktemp -d)/mounted"',
        'mkfifo "$_hpcenv_fifo"',
        'if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun >/dev/null 2>&1; then',
        '  _hpcenv_nodes="${SLURM_NNODES:-1}"',
        '  srun --overlap --unbuffered --ntasks-per-node=1 --nodes="$_hpcenv_nodes" \\',
        f"    --job-name=hpcenv-mount {hold}",
        "else",
        "  _hpcenv_nodes=1",
        f"  {hold}",
        "fi",
        "_hpcenv_holder=$!",
        "_hpcenv_release() {",
        '  kill -USR1 "$_hpcenv_holder" 2>/dev/null || true',
        '  wait "$_hpcenv_holder" 2>/dev/null || true',
        '  rm -rf "${_hpcenv_fifo%/*}"',
        "}",
        "trap _hpcenv_release EXIT",
        'exec 3<"$_hpcenv_fifo"',
        'for _hpcenv_i in $(seq "$_hpcenv_nodes"); do',
        '  if ! read -r -t 300 _hpcenv_line <&3 || [ "$_hpcenv_line" != mounted ]; then',
        '    echo "hpcenv: $HPCENV_IMAGE could not be mounted on every node" >&2; exit 1',
        "  fi",
        "done",
    ]
