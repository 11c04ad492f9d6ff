"""Where the site purges old files (site setting `purged_paths`): scratch file systems that
delete what was not accessed or modified for N days. An env there loses files (`verify` finds
the loss, `repair` puts it back); create, doctor and the access times of `perms` look here.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcenv.settings import Settings


class PurgedPath(namedtuple("PurgedPath", ["path", "days"])):
    """A directory the site purges: files not accessed or modified for `days` days go.
    (A named tuple, as the other values of the settings `hpcenv activate` reads.)"""

    __slots__ = ()

    def holds(self, prefix: Path) -> bool:
        """Whether `prefix` lies under this path (as given, or with links resolved)."""
        here = os.path.abspath(prefix)
        real = os.path.realpath(prefix)
        for base in {str(self.path), os.path.realpath(self.path)}:
            base = base.rstrip("/") or "/"
            for p in (here, real):
                if p == base or p.startswith(base + "/") or base == "/":
                    return True
        return False


def parse_purged_paths(value: Any, bad: Callable[[str], Exception]) -> tuple[PurgedPath, ...]:
    """`["/scratch:30", {path = "/work/tmp", days = 7}]` ("PATH:DAYS" entries separated by
    commas in HPCENV_PURGED_PATHS); paths absolute, days a whole number >= 1. `bad(expected)`
    makes the settings' error for a wrong value."""
    what = 'a list of "PATH:DAYS" strings or {path = "...", days = N} tables'
    if not isinstance(value, (list, tuple)):
        raise bad(what)
    out = []
    for item in value:
        if isinstance(item, str):
            path, sep, days = item.rpartition(":")
            if not sep or not days.strip().isdigit():
                raise bad(what + f' ({item!r} has no ":DAYS")')
            days_value: Any = int(days)
        elif isinstance(item, dict) and set(item) == {"path", "days"}:
            path, days_value = item["path"], item["days"]
        else:
            raise bad(what)
        if not isinstance(path, str) or not isinstance(days_value, int) or days_value < 1:
            raise bad(what + " with days a whole number of at least 1")
        if isinstance(days_value, bool):
            raise bad(what)
        expanded = os.path.expandvars(os.path.expanduser(path.strip()))
        if not os.path.isabs(expanded):
            raise bad(what + f" with absolute paths ({path!r} is relative)")
        out.append(PurgedPath(Path(os.path.normpath(expanded)), days_value))
    return tuple(out)


def purge_of(settings: Settings, prefix: Path) -> PurgedPath | None:
    """The purged path (site setting `purged_paths`) `prefix` lies under, if any."""
    return next((p for p in settings.purged_paths if p.holds(prefix)), None)


def env_warnings(settings: Settings, prefix: Path) -> list[str]:
    """A warning when the env `prefix` lies where the site purges old files."""
    purge = purge_of(settings, prefix)
    if purge is None:
        return []
    return [
        f"{prefix} is under {purge.path}, where the site deletes files not used for "
        f"{purge.days} days: the env will lose files (`hpcenv verify` finds them, `hpcenv "
        "repair` puts them back); an env in storage (the default, or -p DIR) keeps them"
    ]
