"""Shared group environments, and the trust check for environments owned by someone else.

`share(prefix, group)` gives an environment to a Unix group: group ownership, setgid
directories, group read (and write only when asked), never world-writable, and an entry in the
site's shared root (`shared_root` in the site config) so `hpcenv list` of every member shows
it. The entry is a small JSON file owned by the sharer, named `<owner>--<name>.json`.

`check_trusted(prefix)` is called before activating or running an environment: one owned by
another user that others than its owner can write to is refused (exit 2), because anyone
could plant code in it. Group-writable is accepted only where the owner shared it so.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.storage import validate_name

SHARE_FILE = Path("etc") / "hpcenv" / "share.json"


@dataclass(frozen=True)
class ShareReport:
    name: str
    prefix: str
    group: str
    group_writable: bool
    entry: str | None
    changed: int
    opened_for_search: tuple[str, ...] = ()


@dataclass(frozen=True)
class SharedEnv:
    name: str
    prefix: str
    owner: str
    group: str
    group_writable: bool


def _group(name: str) -> grp.struct_group:
    try:
        return grp.getgrnam(name)
    except KeyError:
        raise UsageError(f"no such group: {name}", hint="see your groups with `id -Gn`") from None


def _member(group: grp.struct_group, uid: int | None = None) -> bool:
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return True
    user = pwd.getpwuid(uid)
    return (
        group.gr_gid == user.pw_gid
        or user.pw_name in group.gr_mem
        or group.gr_gid in os.getgroups()
    )


def share(
    prefix: Path,
    name: str,
    group_name: str,
    *,
    group_writable: bool = False,
    shared_root: Path | None = None,
) -> ShareReport:
    """Make `prefix` readable (and writable if asked) by `group_name`; register it."""
    validate_name(name, "environment name")
    group = _group(group_name)
    if not _member(group):
        raise RefusedError(
            f"you are not a member of group {group_name}", hint="`id -Gn` lists yours"
        )
    st = os.lstat(prefix)
    if st.st_uid != os.geteuid():
        raise RefusedError(f"{prefix} is not yours; only its owner can share it")
    changed = _apply_modes(prefix, group.gr_gid, group_writable)
    record = {
        "group": group_name,
        "group_writable": group_writable,
        "owner": _user(st.st_uid),
        "name": name,
    }
    _write_json(prefix / SHARE_FILE, record, 0o664 if group_writable else 0o644, group.gr_gid)
    # the owner must let the group reach the prefix: add group traverse (x) on the parents
    # the owner owns, never read or write
    opened = _open_path_for_group(prefix.parent, group.gr_gid)
    entry = None
    if shared_root is not None:
        if not shared_root.is_dir():
            raise UsageError(
                f"the site's shared root {shared_root} does not exist",
                hint="ask your admins, or set shared_root in the site config",
            )
        entry_path = shared_root / f"{_user(st.st_uid)}--{name}.json"
        _write_json(entry_path, {**record, "prefix": str(prefix)}, 0o644, group.gr_gid)
        entry = str(entry_path)
    return ShareReport(name, str(prefix), group_name, group_writable, entry, changed, tuple(opened))


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _write_json(path: Path, data: dict, mode: int, gid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chown(tmp, -1, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _apply_modes(prefix: Path, gid: int, group_writable: bool) -> int:
    """chgrp -R; the group gets the owner's r-x (and w only if asked); others get nothing;
    directories are setgid so new files stay in the group. Symlinks are never followed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(prefix):
        paths = [dirpath] + [os.path.join(dirpath, n) for n in filenames + dirnames]
        for path in paths:
            if path != dirpath and os.path.isdir(path) and not os.path.islink(path):
                continue  # a real subdirectory: handled when os.walk gets to it
            changed += _fix_mode(path, gid, group_writable)
    return changed


def _fix_mode(path: str, gid: int, group_writable: bool) -> int:
    st = os.lstat(path)
    if st.st_gid != gid:
        os.lchown(path, -1, gid)
    if stat.S_ISLNK(st.st_mode):
        return 0
    mode = stat.S_IMODE(st.st_mode)
    owner = (mode >> 6) & 0o7
    group = owner & (0o7 if group_writable else 0o5)
    new = (mode & 0o4700) | (group << 3)
    if stat.S_ISDIR(st.st_mode):
        new |= stat.S_ISGID
    if new != mode:
        os.chmod(path, new)
        return 1
    return 0


def _open_path_for_group(path: Path, gid: int) -> list[str]:
    """Let members reach the prefix: add search-only permission (g+x and o+x, never read) to
    the parent directories the owner owns that lack it. Both bits: a member whose primary
    group owns the directory is judged by its group bits, not the others bits. The env
    itself stays closed to non-members."""
    opened = []
    me = os.geteuid()
    for p in [path, *path.parents]:
        try:
            st = os.stat(p)
        except OSError:
            break
        if st.st_uid != me:
            break
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o011 != 0o011:
            os.chmod(p, mode | 0o011)
            opened.append(str(p))
    return opened


def shared_envs(shared_root: Path | None) -> list[SharedEnv]:
    """Entries of the shared root that the current user's groups may use."""
    if shared_root is None or not shared_root.is_dir():
        return []
    out = []
    for entry in sorted(shared_root.glob("*--*.json")):
        try:
            data = json.loads(entry.read_text())
            group = grp.getgrnam(data["group"])
        except (OSError, ValueError, KeyError):
            continue
        if not _member(group) and pwd.getpwuid(os.geteuid()).pw_name != data.get("owner"):
            continue
        out.append(
            SharedEnv(
                data["name"],
                data["prefix"],
                data["owner"],
                data["group"],
                bool(data.get("group_writable")),
            )
        )
    return out


def check_trusted(prefix: Path) -> None:
    """Refuse an env owned by someone else that others than its owner can write to."""
    try:
        st = os.stat(prefix)
    except OSError as exc:
        raise UsageError(f"cannot read environment {prefix}: {exc.strerror}") from None
    me = os.geteuid()
    share_info = None
    try:
        share_info = json.loads((prefix / SHARE_FILE).read_text())
    except (OSError, ValueError):
        pass
    for path in _trust_paths(prefix):
        try:
            pst = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(pst.st_mode):
            continue  # a symlink's own mode means nothing; its target is checked if listed
        mode = stat.S_IMODE(pst.st_mode)
        if mode & 0o002 and not (
            stat.S_ISDIR(pst.st_mode) and mode & stat.S_ISVTX and path != prefix
        ):
            _refuse(prefix, path, "world-writable", st.st_uid == me)
        if pst.st_uid != st.st_uid and st.st_uid != me:
            _refuse(prefix, path, f"owned by {_user(pst.st_uid)}, not by the env's owner", False)
        if st.st_uid != me and mode & 0o020:
            allowed = (
                share_info
                and share_info.get("group_writable")
                and pst.st_gid == _gid_of(share_info)
            )
            if not allowed:
                _refuse(prefix, path, "group-writable", False)


def _gid_of(share_info: dict) -> int | None:
    try:
        return grp.getgrnam(share_info["group"]).gr_gid
    except KeyError:
        return None


def _trust_paths(prefix: Path) -> list[Path]:
    """The prefix, its top-level entries, and what activation executes or imports first."""
    paths = [prefix]
    try:
        paths += [prefix / name for name in os.listdir(prefix)]
    except OSError:
        pass
    for sub in ("bin", "etc/hpcenv", "etc/conda/activate.d", "conda-meta"):
        d = prefix / sub
        if d.is_dir() and not d.is_symlink():
            paths.append(d)
            try:
                paths += [d / n for n in os.listdir(d)]
            except OSError:
                pass
    return paths


def _refuse(prefix: Path, path: Path, why: str, mine: bool) -> None:
    if mine:
        raise RefusedError(
            f"{path} is {why}: anyone could plant code in environment {prefix}",
            hint=f"chmod o-w {path!s}",
        )
    raise RefusedError(
        f"refusing to use {prefix}: {path} is {why}, so others than its owner could plant code in it",
        hint="ask the owner to run `hpcenv share NAME --group G` (which fixes the modes)",
    )


def require_shared_root(root: Path | None) -> Path:
    if root is None:
        raise OperationError(
            "no shared root is configured for this site",
            hint="set shared_root in the site config (see docs/admin.md)",
        )
    return root
