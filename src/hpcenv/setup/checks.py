"""What planning looks at: the state of a redirected directory and its aside copies, and the
refusals (overlaps with hpcenv's state, mount points, a read-only home, entries this user
cannot move)."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from hpcenv.errors import RefusedError, UsageError
from hpcenv.journal import Journal
from hpcenv.setup.survey import Survey
from hpcenv.storage import (
    STATE_DIR_NAME,
    Layout,
    is_within,
)

ASIDE_SUFFIXES = (".hpcenv-moving", ".hpcenv-restoring")  # ~/.cache.hpcenv-moving[.N]


def classify(home_path: Path, storage_path: Path) -> str:
    """absent | linked | link-elsewhere | dangling | directory | other"""
    try:
        st = os.lstat(home_path)
    except FileNotFoundError:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        if not os.path.exists(home_path):
            return "dangling"
        if os.path.realpath(home_path) == os.path.realpath(storage_path):
            return "linked"
        return "link-elsewhere"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    return "other"


def real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def our_link(home_path: Path, storage_path: Path) -> bool:
    """A symlink to the storage directory, even while that does not exist."""
    return os.path.islink(home_path) and os.readlink(home_path) == str(storage_path)


def aside_entries(home_path: Path) -> list[Path]:
    """`~/.cache.hpcenv-moving`, `~/.cache.hpcenv-moving.1`, `~/.cache.hpcenv-restoring`..."""
    found = []
    with os.scandir(home_path.parent) as it:
        for entry in it:
            for suffix in ASIDE_SUFFIXES:
                base = home_path.name + suffix
                rest = entry.name[len(base) :]
                if entry.name.startswith(base) and (
                    not rest or rest[1:].isdigit() and rest[0] == "."
                ):
                    found.append(Path(entry.path))
    return sorted(found)


def aside_dirs(home_path: Path) -> list[Path]:
    """The aside directories (a swap put the old directory there)."""
    return [p for p in aside_entries(home_path) if real_dir(p)]


def checked_asides(home_path: Path, storage_path: Path) -> list[Path]:
    for path in aside_entries(home_path):
        if not real_dir(path) and not our_link(path, storage_path):
            raise RefusedError(
                f"{path} is in the way: hpcenv uses that name while moving {home_path}",
                hint=f"move it away (`mv {shlex.quote(str(path))} ...`), then re-run",
            )
    return aside_dirs(home_path)


def condarc_warnings(home: Path) -> list[str]:
    from hpcenv.condarc import entries_in_home

    found = entries_in_home(home)
    warnings = [f"{why}; check it by hand" for why in found.unreadable]
    for e in found.entries:
        warnings.append(
            f"{e.condarc}: {e.key} entry {e.entry!r} points into home; remove it so conda "
            "uses the redirected ~/.conda (hpcenv did not change it)"
        )
    return warnings


def pending_ops(layout: Layout) -> set[str]:
    return set(Journal.pending(layout.journal_dir)) & {"setup", "undo"}


def check_redirect(layout: Layout) -> None:
    """Refuse a redirected directory that is, holds or overlaps hpcenv's own state."""
    for name in layout.redirect:
        if name.startswith(STATE_DIR_NAME) or ".hpcenv-" in name:
            raise UsageError(
                f"the redirected directory {name!r} would overlap hpcenv's own state "
                f"({layout.state_dir}, {layout.home_state_dir})",
                hint="remove it from the `redirect` setting",
            )
        home_path = layout.in_home(name)
        if os.path.lexists(home_path) and not os.path.islink(home_path):
            if is_within(layout.root, home_path):
                raise UsageError(
                    f"the storage area {layout.root} is inside {home_path}, which would move",
                    hint="pass --storage DIR outside it, or remove it from `redirect`",
                )


def check_home_writable(home: Path) -> None:
    if not os.access(home, os.W_OK | os.X_OK):
        raise RefusedError(
            f"your home directory {home} is not writable (read-only filesystem or "
            "permissions), so its directories cannot become links",
            hint="run it where home is writable (a login node); nothing was changed",
        )


def check_storage_dir(layout: Layout, storage_path: Path) -> None:
    if os.path.lexists(storage_path) and not real_dir(storage_path):
        raise RefusedError(
            f"{storage_path} exists but is not a directory",
            hint="move it away, then re-run `hpcenv setup`",
        )
    if real_dir(storage_path) and dev(storage_path) != dev(layout.root):
        raise RefusedError(
            f"{storage_path} is a mount point; hpcenv cannot move it",
            hint="remove it from the `redirect` setting",
        )


def check_home_dir(layout: Layout, home_path: Path) -> None:
    if real_dir(home_path) and dev(home_path) != dev(layout.home):
        raise RefusedError(
            f"{home_path} is a mount point; hpcenv cannot move it",
            hint="remove it from the `redirect` setting",
        )


def dev(path: Path) -> int:
    return os.lstat(path).st_dev


def refuse_problems(problems: list[str], roots: list[Path]) -> None:
    if not problems:
        return
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    shown = "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    n = len(problems)
    roots = [
        r for r in roots if any(p.startswith(f"{r}/") or p.startswith(f"{r} ") for p in problems)
    ]
    fixes = " and ".join(f"`chmod -R u+rwX {shlex.quote(str(r))}`" for r in roots)
    raise RefusedError(
        f"{n} entr{'y' if n == 1 else 'ies'} cannot be moved by {user}: {shown}",
        hint=f"run {fixes} (entries of another user need that user or root), then re-run; "
        "nothing was changed",
    )


def add(total: Survey, part: Survey) -> Survey:
    for name in ("files", "bytes", "space", "inodes"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.conflicts += part.conflicts
    total.problems += part.problems
    return total


def block_size(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_frsize or st.f_bsize or 4096
