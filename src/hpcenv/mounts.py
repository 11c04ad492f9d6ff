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

from hpcenv.errors import OperationError, RefusedError

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
    from hpcenv.envjournal import remove_tree as remove

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
