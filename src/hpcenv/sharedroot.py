"""The site's shared root (`shared_root` in the site config): the registry of shared group
envs behind `hpcenv list`.

Entries (`SHARED_ROOT/<owner>--<name>.json`; the root is 1777, so anyone can write one) are
believed only when the entry file, the env prefix and the claimed owner agree and the prefix
is in the claimed group; others are ignored with a warning.
"""

from __future__ import annotations

import grp
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import UsageError
from hpcenv.sharing import is_member, user_name
from hpcenv.storage import validate_name


@dataclass(frozen=True)
class SharedEnv:
    name: str
    prefix: str
    owner: str  # the prefix's real owner (the entry is ignored unless it says the same)
    group: str
    group_writable: bool
    exists: bool = True


@dataclass(frozen=True)
class SharedEnvs:
    envs: tuple[SharedEnv, ...]
    warnings: tuple[str, ...] = ()


def shared_envs(shared_root: Path | None) -> SharedEnvs:
    """Entries of the shared root for the current user's groups, each checked against the
    filesystem: the entry file's owner must be the owner it claims, the prefix must belong to
    that owner and be in the claimed group. Others are left out with a warning; an entry
    whose prefix is gone is listed as missing."""
    if shared_root is None or not shared_root.is_dir():
        return SharedEnvs(())
    me = os.geteuid()
    out: list[SharedEnv] = []
    warnings: list[str] = []
    for entry in sorted(shared_root.glob("*--*.json")):
        try:
            est, data = _read_entry(entry)
            group = grp.getgrnam(data["group"])
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            continue  # not an entry (or for a group this system does not have)
        if not is_member(group) and est.st_uid != me:
            continue  # not for us: say nothing about it
        why = _entry_problem(entry, est, data, group)
        if why is None:
            try:
                pst = os.stat(data["prefix"])
            except (FileNotFoundError, NotADirectoryError):
                pst = None
            except OSError as exc:
                warnings.append(f"cannot reach shared env {data['prefix']}: {exc.strerror}")
                pst = None
            if pst is not None and pst.st_uid != est.st_uid:
                why = f"{data['prefix']} belongs to {user_name(pst.st_uid)}"
            elif pst is not None and pst.st_gid != group.gr_gid:
                why = f"{data['prefix']} is not in group {group.gr_name}"
        if why is not None:
            warnings.append(f"ignored shared-env entry {entry}: {why}")
            continue
        out.append(
            SharedEnv(
                data["name"],
                data["prefix"],
                data["owner"],
                group.gr_name,
                data.get("group_writable") is True,
                exists=pst is not None,
            )
        )
    return SharedEnvs(tuple(out), tuple(warnings))


def _read_entry(entry: Path) -> tuple[os.stat_result, dict]:
    fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a file")
        data = json.loads(os.read(fd, 1 << 16))
    finally:
        os.close(fd)
    for key in ("name", "prefix", "owner", "group"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"no {key}")
    validate_name(data["name"])
    return st, data


def _entry_problem(entry: Path, est: os.stat_result, data: dict, group) -> str | None:
    writer = user_name(est.st_uid)
    if data["owner"] != writer:
        return f"it names {data['owner']} as the owner but {writer} wrote it"
    if not entry.name.startswith(f"{writer}--"):
        return f"its name does not start with its writer {writer}"
    if not os.path.isabs(data["prefix"]):
        return "its prefix is not an absolute path"
    return None
