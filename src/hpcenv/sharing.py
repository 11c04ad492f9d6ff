"""Shared group environments: `hpcenv share` and the shared registry behind `hpcenv list`.

`share(prefix, name, group)` gives an environment to a Unix group: its directories become
group-owned and setgid (new files stay in the group), the group gets the owner's r-x (and w
only with `group_writable`), never world-writable; the env records it in
`etc/hpcenv/share.json`, and an entry in the site's shared root (`shared_root` in the site
config) lists it for every member.

Env files are hardlinks of the package cache, and the same inodes are linked into every
other env of the owner that uses the package: changing such an inode's mode or group would
change them all (a member allowed to write one env would write the owner's private envs and
the cache). So sharing never changes an inode that has other links: a file whose mode or
group must change and that has other links gets its own copy (a reflink where the
filesystem can) in the shared env, which is then changed. A group-writable share thereby
copies every linked file out of the cache; a read-only share keeps the links of files the
group can already read (a 0644 file needs nothing: the env's setgid 2750 directories decide
who reaches it).

Crash safety: each file is replaced atomically (a temp copy in the same directory, renamed
over it), so a `kill -9` leaves every path either the old link or its finished copy, plus
temp files named `.hpcenv-copy-PID-N`; re-running `share` deletes those and finishes.

The registry of shared envs in the site's shared root is `sharedroot`.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from hpcenv import perms
from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.fsops import atomic_write
from hpcenv.journal import tick
from hpcenv.settings import Settings
from hpcenv.storage import Layout, validate_name
from hpcenv.trust import SHARE_FILE


@dataclass(frozen=True)
class ShareReport:
    name: str
    prefix: str
    group: str
    group_writable: bool
    entry: str | None
    changed: int  # files and directories whose mode or group changed in place
    copied: int = 0  # linked files that got their own copy
    leftovers_removed: int = 0  # temp copies of an interrupted run
    opened_for_search: tuple[str, ...] = ()


def _group(name: str) -> grp.struct_group:
    try:
        return grp.getgrnam(name)
    except KeyError:
        raise UsageError(f"no such group: {name}", hint="see your groups with `id -Gn`") from None


def is_member(group: grp.struct_group, uid: int | None = None) -> bool:
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return True
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    if uid == os.geteuid() and group.gr_gid in os.getgroups():
        return True
    return group.gr_gid == user.pw_gid or user.pw_name in group.gr_mem


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --------------------------------------------------------------------------- share


def share(
    prefix: Path,
    name: str,
    group_name: str,
    *,
    group_writable: bool = False,
    shared_root: Path | None = None,
    lock_path: Path | None = None,
) -> ShareReport:
    """Make `prefix` readable (and writable if asked) by `group_name`; register it.
    Idempotent: re-running it finishes an interrupted run."""
    validate_name(name, "environment name")
    group = _group(group_name)
    if not is_member(group):
        raise RefusedError(
            f"you are not a member of group {group_name}", hint="`id -Gn` lists yours"
        )
    prefix = Path(prefix)
    try:
        st = os.lstat(prefix)
    except OSError as exc:
        raise UsageError(f"cannot read environment {prefix}: {exc.strerror}") from None
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(
            f"{prefix} is a symlink", hint=f"share the env by its real path: {prefix.resolve()}"
        )
    if st.st_uid != me:
        raise RefusedError(f"{prefix} is not yours; only its owner can share it")
    from hpcenv.registry import is_image

    if is_image(prefix):
        raise RefusedError(
            f"{name} is an image env: it is mounted at a path of its owner's, which others "
            "cannot use",
            hint="share a plain env (create it without --image)",
        )
    entry_path = None
    if shared_root is not None:
        if not shared_root.is_dir():
            raise UsageError(
                f"the site's shared root {shared_root} does not exist",
                hint="ask your admins, or set shared_root in the site config",
            )
        entry_path = shared_root / f"{user_name(me)}--{name}.json"
        _check_entry_is_ours(entry_path)
    if lock_path is not None:
        from hpcenv.lock import StorageLock

        lock = StorageLock(lock_path)
    else:
        lock = nullcontext()
    record = {
        "group": group_name,
        "group_writable": group_writable,
        "owner": user_name(me),
        "name": name,
    }
    with lock:
        # the intent first: trust reads it; a half-done run is finished by re-running
        _write_json(prefix / SHARE_FILE, record, 0o644, group.gr_gid)
        tick()
        result = _apply(prefix, group.gr_gid, group_writable)
        # the owner must let the group reach the prefix: add group traverse (x) on the
        # parents the owner owns, never read or write
        opened = _open_path_for_group(prefix.parent)
        if entry_path is not None:
            _write_json(entry_path, {**record, "prefix": str(prefix)}, 0o644, group.gr_gid)
            tick()
    return ShareReport(
        name,
        str(prefix),
        group_name,
        group_writable,
        str(entry_path) if entry_path else None,
        result.changed,
        result.copied,
        result.leftovers,
        tuple(opened),
    )


def _check_entry_is_ours(entry: Path) -> None:
    """Refuse before changing anything when someone else already holds our entry's name
    (the shared root is sticky: we could not replace it anyway)."""
    try:
        st = os.lstat(entry)
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
        raise RefusedError(
            f"{entry} exists and belongs to {user_name(st.st_uid)}, not to you",
            hint="ask your admins to remove it, then re-run",
        )


def _write_json(path: Path, data: dict, mode: int, gid: int) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode, group=gid)


@dataclass(frozen=True)
class _Applied:
    changed: int
    copied: int
    leftovers: int


def _apply(prefix: Path, gid: int, writable: bool) -> _Applied:
    """Pass 1 walks the env: removes temps of dead runs, changes in place what only this
    path links (directories, files with one link), and writes a temp copy, already with its
    new mode and group, of each linked file that must change. The copies are flushed to
    disk in one go; pass 2 renames each over its original."""
    me = os.geteuid()
    share_dir = str(prefix / SHARE_FILE.parent)
    changed = leftovers = 0
    copies: list[tuple[str, tuple[int, int], str, str]] = []  # dir, its (dev, ino), temp, name
    counter = 0
    try:
        for dir_fd, directory, name, st in perms.walk(prefix):
            if st.st_uid == me and perms.is_stale_temp(name):
                os.unlink(name, dir_fd=dir_fd)
                leftovers += 1
                tick()
                continue
            if st.st_uid != me or (directory == share_dir and name == SHARE_FILE.name):
                continue  # not ours to change (a member's file); the record is set apart
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                target = _dir_mode(mode, writable)
                if st.st_gid != gid or mode != target:
                    os.chown(name, -1, gid, dir_fd=dir_fd, follow_symlinks=False)
                    perms.chmod_nofollow(dir_fd, name, target)
                    changed += 1
                    tick()
            elif stat.S_ISREG(st.st_mode) and not _file_ok(st, gid, writable):
                target = _file_mode(mode, writable)
                if st.st_nlink > 1:
                    counter += 1
                    temp = perms.temp_name(counter)
                    perms.copy_to_temp(dir_fd, name, temp, target, gid)
                    dst = os.fstat(dir_fd)
                    copies.append((directory, (dst.st_dev, dst.st_ino), temp, name))
                    tick()
                else:
                    os.chown(name, -1, gid, dir_fd=dir_fd, follow_symlinks=False)
                    perms.chmod_nofollow(dir_fd, name, target)
                    changed += 1
                    tick()
        if copies:
            fd = os.open(prefix, os.O_RDONLY | os.O_DIRECTORY)
            try:
                perms.syncfs(fd)
            finally:
                os.close(fd)
            tick()
    except OSError as exc:
        _discard(copies)
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT
            raise OperationError(
                f"ran out of space giving the files of {prefix} their own copies "
                f"({len(copies)} made, now removed; nothing of the cache or your other envs "
                "was changed)",
                hint="free space (`hpcenv clean`), then re-run `hpcenv share`",
            ) from None
        raise OperationError(
            f"sharing {prefix} failed: {exc}", hint="re-run `hpcenv share`"
        ) from None
    _rename_copies(copies)
    return _Applied(changed, len(copies), leftovers)


def _rename_copies(copies: list[tuple[str, tuple[int, int], str, str]]) -> None:
    """Rename each temp copy over its original, through its directory opened again: it must
    be the one the copy was made in (a directory swapped for a link meanwhile is refused)."""
    current, fd, where = None, -1, ""
    try:
        for directory, key, temp, name in copies:
            where = directory
            if directory != current:
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != key:
                    raise OSError(0, "it was replaced meanwhile")
                current = directory
            os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
            tick()
    except OSError as exc:
        raise OperationError(
            f"sharing stopped at {where}: {exc.strerror}",
            hint="re-run `hpcenv share`, which finishes it",
        ) from None
    finally:
        if fd >= 0:
            os.close(fd)


def _discard(copies) -> None:
    for directory, _key, temp, _name in copies:
        try:
            os.unlink(os.path.join(directory, temp))
        except OSError:
            pass


def _dir_mode(mode: int, writable: bool) -> int:
    """The group gets the owner's r-x (rwx when writable), others nothing, setgid."""
    owner = (mode >> 6) & 0o7
    group = owner & (0o7 if writable else 0o5)
    return (mode & 0o700) | (group << 3) | stat.S_ISGID


def _file_mode(mode: int, writable: bool) -> int:
    """The group gets the owner's r-x (rwx when writable); others keep r-x at most."""
    owner = (mode >> 6) & 0o7
    group = owner & (0o7 if writable else 0o5)
    return (mode & 0o700) | (group << 3) | (mode & 0o005)


def _file_ok(st: os.stat_result, gid: int, writable: bool) -> bool:
    """Nothing to change: a writable share needs the file in the group, with the owner's
    bits, and its own inode; a read-only share only needs members to be able to read (and
    run) it and nobody but the owner to write it, whatever its group."""
    mode = stat.S_IMODE(st.st_mode)
    if writable:
        return st.st_nlink == 1 and st.st_gid == gid and mode == _file_mode(mode, True)
    if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH):
        return False
    need = (mode >> 6) & 0o5
    group_ok = (mode >> 3) & need == need
    others_ok = mode & need == need
    # a member in the file's group is judged by the group bits, anyone else by the others
    # bits: in the share's group the group bits decide, in any other both must do
    return group_ok and (st.st_gid == gid or others_ok)


def _open_path_for_group(path: Path) -> list[str]:
    """Let members reach the prefix: add search-only permission (g+x and o+x, never read) to
    the parent directories the owner owns that lack it, along the path as given and along
    its real path (after `hpcenv setup`, ~/.conda is a link into storage). Both bits: a
    member whose primary group owns the directory is judged by its group bits, not the
    others bits. The env itself stays closed to non-members."""
    opened = []
    me = os.geteuid()
    chains = [[path, *path.parents], [path.resolve(), *path.resolve().parents]]
    for chain in chains:
        for p in chain:
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


def share_env(
    layout: Layout, settings: Settings, env: str, group: str, *, group_writable: bool = False
) -> ShareReport:
    """`hpcenv share`: the user's own env (by name or path) shared with `group`, registered
    in the site's shared root when it has one. Not `trust.resolve_for_use`: sharing is what
    fixes the modes that check refuses."""
    from hpcenv.registry import resolve
    from hpcenv.storage import ensure_state_dir

    name, prefix = resolve(layout, env)
    ensure_state_dir(layout)
    return share(
        prefix,
        name or prefix.name,
        group,
        group_writable=group_writable,
        shared_root=settings.shared_root,
        lock_path=layout.lock_path,
    )
