"""What must hold before an environment is built or changed: not in home, space enough, its
directories writable by us, and no damaged package record we were not asked to replace.
Each refusal is a RefusedError (exit 2) raised before any step."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.errors import RefusedError
from hpcenv.storage import Layout, free_bytes, is_within

if TYPE_CHECKING:
    from hpcenv.engine import PackageInfo, PrefixState

INSTALL_MARGIN = 4 * 1024 * 1024
EXTRACT_FACTOR = 4  # extracted size ~ archive size x this (conda packages compress 2-4x)


def check_location(layout: Layout, prefix: Path, allow_home: bool) -> None:
    if allow_home:
        return
    parent = prefix.parent
    while not parent.exists():
        parent = parent.parent
    if is_within(parent, layout.home):
        raise RefusedError(
            f"{prefix} would be in your home directory (small quota)",
            hint="run `hpcenv setup` first so ~/.conda points to storage, use -p with a "
            "path in storage, or pass --allow-home",
        )
    if is_within(layout.package_cache.parent, layout.home):
        raise RefusedError(
            f"the package cache {layout.package_cache} would be in home",
            hint="run `hpcenv setup` or pass --storage DIR",
        )


def check_space(
    prefix_parent: Path, packages: Iterable[PackageInfo], site: dict[str, str] | None = None
) -> None:
    """Refuse when the download and the unpacked packages would not fit. A package linked
    from a site package cache (`site`: name -> how, see sitelink.expected_methods) is not
    downloaded, and takes space only where it is copied."""
    site = site or {}
    need = sum(
        p.size * (1 + EXTRACT_FACTOR) if p.name not in site else p.size * EXTRACT_FACTOR
        for p in packages
        if site.get(p.name) not in ("reflink", "hardlink")
    )
    have = free_bytes(prefix_parent)
    if need + INSTALL_MARGIN > have:
        from hpcenv.report import human_bytes

        raise RefusedError(
            f"not enough space on {prefix_parent}: this environment needs about "
            f"{human_bytes(need)} (download and unpacked) plus a margin, "
            f"{human_bytes(have)} is free",
            hint="free space (`hpcenv clean`) or create it elsewhere with -p PREFIX",
        )


def require_writable(prefix: Path, dirs: Sequence[Path]) -> None:
    """Refuse (exit 2, before any step) to change an env whose directories we cannot write:
    another user's env, or one on a read-only mount."""
    import pwd

    for d in dirs:
        if os.access(d, os.W_OK | os.X_OK):
            continue
        try:
            owner = pwd.getpwuid(os.stat(d).st_uid).pw_name
        except (KeyError, OSError):
            owner = "someone else"
        mine = owner == pwd.getpwuid(os.geteuid()).pw_name
        raise RefusedError(
            f"cannot change environment {prefix}: {d} is not writable by you"
            + ("" if mine else f" (it belongs to {owner})"),
            hint="hpcenv does not change files of others: ask the owner to share it "
            "(`hpcenv share`), or work on an environment of your own"
            if not mine
            else f"make it writable (`chmod u+w {d}`) or check the mount",
        )


def refuse_damaged(
    state: PrefixState, name: str | None, prefix: Path, named: set[str] = frozenset()
) -> None:
    """A damaged record of a package the user did not name: refuse, naming it and the fix."""
    bad = [d for d in state.damaged if d.name not in named]
    if bad:
        d = bad[0]
        raise RefusedError(
            f"{d.path} (package {d.name}) is damaged: {d.reason}",
            hint=f"re-create the env, or reinstall the package: "
            f"`hpcenv install {name or prefix} {d.name}`",
        )
