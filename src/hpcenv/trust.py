"""Whether an environment may be run or exposed, decided in one place.

`resolve_for_use(layout, NAME_OR_PREFIX)` is what every command that runs or exposes an env
calls (activate and its fast path, run, jobscript, submit, pack, stage, modulefile; kernel
when it comes): it resolves the env and refuses it (exit 2, one line) when anyone but its
owner could change what activation executes or imports first:

- nothing there is world-writable;
- nothing there belongs to another user (root aside), unless the env is shared
  group-writable and the file is in that group (a member's own file);
- nothing there is group-writable, unless the owner shared the env group-writable on purpose
  (`etc/hpcenv/share.json`, owned by the env's owner) and the entry is in that group, or the
  group is the owner's own private group (one member: the owner);
- a group-writable file of a group-writable share is not hardlinked elsewhere: its inode
  would also be the package cache's and another env's (`hpcenv share` gives each its own
  copy; an inode left shared means the share predates that, or was interrupted).

The rules hold for one's own envs too: a member of a group-writable share must not reach
the owner's private envs through an inode they share.

"What activation executes or imports first" (`trust_paths`): the prefix and its top-level
entries; `bin/`, `conda-meta/`, `etc/hpcenv/`, `etc/conda/(de)activate.d/` and every entry in
them; each `lib/pythonX.Y/site-packages/` with its `.pth` files and `sitecustomize.py`. A
symlinked one of these directories is judged by its target.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from collections import namedtuple
from pathlib import Path

from hpcenv.errors import RefusedError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (activation's hot path)
if TYPE_CHECKING:
    from hpcenv.storage import Layout

SHARE_FILE = Path("etc") / "hpcenv" / "share.json"
_KEY_DIRS = ("bin", "conda-meta", "etc/hpcenv", "etc/conda", "etc/conda/activate.d")
_KEY_DIRS += ("etc/conda/deactivate.d",)
_STARTUP = ("sitecustomize.py", "usercustomize.py")


class ShareInfo(namedtuple("ShareInfo", ["group", "gid", "group_writable"])):
    """What `hpcenv share` recorded in the env (etc/hpcenv/share.json): the group's name, its
    gid (None: the group no longer exists), and whether the group may write. A named tuple,
    as everything `hpcenv activate` reads (see `settings.Settings`)."""

    __slots__ = ()


class UsableEnv(
    namedtuple("UsableEnv", ["name", "prefix", "owner_uid", "share", "image"], defaults=[None])
):
    """An env that passed the trust check: its registered name (None when given as a path),
    prefix (an image env: where its current version is mounted), owner, `ShareInfo` (None when
    not shared) and, for an image env, its `images.ImageRef` (its directory in storage, the
    file)."""

    __slots__ = ()


def resolve_for_use(layout: Layout, name_or_prefix: str, *, mount: bool = True) -> UsableEnv:
    """NAME or PREFIX to an env that is safe to run or expose; RefusedError (exit 2) if not.
    An image env is judged by its directory in storage (the image is read-only) and, with
    `mount`, mounted here (`images.mount_current`)."""
    from hpcenv.registry import resolve

    try:
        name, prefix = resolve(layout, name_or_prefix)
    except PermissionError:
        raise _unreadable(name_or_prefix) from None
    owner, share = _check(prefix, name_or_prefix)
    from hpcenv.registry import is_image

    if is_image(prefix):
        from hpcenv import images

        ref = images.mount_current(prefix) if mount else images.current_ref(prefix)
        return UsableEnv(name, ref.mount, owner, share, ref)
    return UsableEnv(name, prefix, owner, share)


def refuse_image(usable: UsableEnv, given: str, why: str, hint: str) -> None:
    """UsageError (exit 2) for a command that would write into an image env's read-only
    image: `why` says what it cannot do, `hint` what to do instead."""
    if usable.image is not None:
        raise UsageError(f"{usable.name or given} is an image env: {why}", hint=hint)


def _unreadable(given: str) -> RefusedError:
    return RefusedError(
        f"cannot read environment {given}: permission denied",
        hint="its owner can share it with a group of yours (`hpcenv share NAME --group G`)",
    )


def check_trusted(prefix: Path) -> ShareInfo | None:
    """Refuse (RefusedError) an env that others than its owner could plant code in; return
    how it is shared, if it is."""
    return _check(Path(prefix), str(prefix))[1]


def read_share_info(prefix: Path, owner_uid: int | None = None) -> ShareInfo | None:
    """The env's share record, if its owner (or root) wrote it; anyone else's is ignored."""
    try:
        if owner_uid is None:
            owner_uid = os.stat(prefix).st_uid
        fd = os.open(prefix / SHARE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (owner_uid, 0):
            return None
        import json

        data = json.loads(os.read(fd, 1 << 16))
        group = str(data["group"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)
    try:
        gid: int | None = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = None
    return ShareInfo(group, gid, data.get("group_writable") is True)


def _check(prefix: Path, given: str) -> tuple[int, ShareInfo | None]:
    try:
        st = os.stat(prefix)
    except PermissionError:
        raise _unreadable(given) from None
    except OSError as exc:
        raise UsageError(f"cannot read environment {prefix}: {exc.strerror}") from None
    if not os.access(prefix, os.R_OK | os.X_OK):
        raise _unreadable(given)  # what cannot be inspected cannot be trusted
    owner = st.st_uid
    mine = owner == os.geteuid()
    share = read_share_info(prefix, owner)
    shared_writable = share is not None and share.group_writable and share.gid is not None
    for path, follow, key in trust_paths(prefix):
        try:
            pst = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _refuse(given, prefix, path, f"unreadable ({exc.strerror})", mine, None)
        if stat.S_ISLNK(pst.st_mode):
            continue  # a symlink's own mode means nothing; the key dirs are followed
        mode = stat.S_IMODE(pst.st_mode)
        is_dir = stat.S_ISDIR(pst.st_mode)
        in_group = shared_writable and pst.st_gid == share.gid  # type: ignore[union-attr]
        if mode & stat.S_IWOTH and not (is_dir and mode & stat.S_ISVTX and not key):
            _refuse(given, prefix, path, "world-writable", mine, f"chmod o-w {_q(path)}")
        if pst.st_uid not in (owner, 0) and not in_group:
            _refuse(
                given,
                prefix,
                path,
                f"owned by {_user(pst.st_uid)}, not by the env's owner {_user(owner)}",
                mine,
                f"remove {_q(path)} or have it chowned to you",
            )
        if not mode & stat.S_IWGRP:
            continue
        if in_group:
            if not is_dir and pst.st_nlink > 1:
                _refuse(
                    given,
                    prefix,
                    path,
                    "group-writable and hardlinked elsewhere (the package cache or another "
                    "env share that file)",
                    mine,
                    f"re-run `hpcenv share {_q(given)} --group {_q(share.group)} "  # type: ignore[union-attr]
                    "--group-writable`, which gives it its own copy",
                )
        elif not _private_group(pst.st_gid, owner):
            _refuse(
                given,
                prefix,
                path,
                "group-writable",
                mine,
                f"chmod g-w {_q(path)}, or share the env writable on purpose with "
                f"`hpcenv share {_q(given)} --group G --group-writable`",
            )
    return owner, share


def trust_paths(prefix: Path) -> list[tuple[Path, bool, bool]]:
    """(path, follow symlinks, is a key dir) for what activation executes or imports first."""
    paths: list[tuple[Path, bool, bool]] = [(prefix, True, True)]
    try:
        top = os.listdir(prefix)
    except OSError:
        top = []
    paths += [(prefix / name, False, False) for name in top]
    from hpcenv.registry import IMAGE_RECORD

    if IMAGE_RECORD in top:  # an image env: its record and its read-only images are all
        return paths  # (what runs is in the image; no lookups of a tree that is not there)
    dirs = [prefix / sub for sub in _KEY_DIRS]
    try:
        pythons = [n for n in os.listdir(prefix / "lib") if n.startswith("python")]
    except OSError:
        pythons = []
    for name in pythons:
        dirs.append(prefix / "lib" / name)
        site = prefix / "lib" / name / "site-packages"
        paths.append((site, True, True))
        try:
            paths += [
                (site / n, False, False)
                for n in os.listdir(site)
                if n.endswith(".pth") or n in _STARTUP
            ]
        except OSError:
            pass
    for d in dirs:
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        paths.append((d, True, True))
        paths += [(d / n, False, False) for n in entries]
    return paths


def _private_group(gid: int, uid: int) -> bool:
    """The owner's user private group (named after them, their primary group, no one else
    in it): group-writable there means owner-writable, as with umask 002 on such systems."""
    try:
        group = grp.getgrgid(gid)
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return (
        user.pw_gid == gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
    )


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _refuse(given: str, prefix: Path, path: Path, why: str, mine: bool, fix: str | None) -> None:
    if mine:
        raise RefusedError(
            f"refusing to use {prefix}: {path} is {why}, so others than you could plant code in it",
            hint=fix or f"fix the modes of {_q(path)}",
        )
    raise RefusedError(
        f"refusing to use {prefix}: {path} is {why}, so others than its owner could plant code in it",
        hint="ask the owner to run `hpcenv share NAME --group G`, which fixes the modes",
    )
