"""The storage layout: where everything lives, and the checks that keep it out of home.

HOME/.cache  -> STORAGE/.cache          (after `hpcenv setup`; the list is a setting)
HOME/.conda  -> STORAGE/.conda
HOME/.conda/envs/NAME                   named environments (in storage, through the link)
HOME/.conda/environments.txt            conda's registry, kept in step
STORAGE/.cache/rattler                  the package cache (same filesystem as the envs)
STORAGE/.hpcenv/                        hpcenv's own state, mode 0700: lock, journals,
                                        conflicts, staging, env registry, packs
HOME/.hpcenv/                           mode 0700: the lock that serializes `hpcenv setup`
                                        runs on one home (whatever their storage root)
"""

from __future__ import annotations

import os
import re
import stat
from collections import namedtuple
from pathlib import Path

from hpcenv.errors import RefusedError, UsageError
from hpcenv.settings import Settings

STATE_DIR_NAME = ".hpcenv"
CACHE_TRASH = ".hpcenv-trash"


class Layout(namedtuple("Layout", ["home", "root", "redirect"], defaults=[(".cache", ".conda")])):
    """Paths derived from the settings; no I/O: `home`, `root` (the storage area) and
    `redirect` (the directories `setup` moves). A named tuple, as `settings.Settings`."""

    __slots__ = ()

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR_NAME

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "lock"

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "journal"

    @property
    def conflicts_dir(self) -> Path:
        return self.state_dir / "conflicts"

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    @property
    def packs_dir(self) -> Path:
        return self.state_dir / "packs"

    @property
    def home_state_dir(self) -> Path:
        return self.home / STATE_DIR_NAME

    @property
    def home_lock_path(self) -> Path:
        return self.home_state_dir / "lock"

    @property
    def home_staging_dir(self) -> Path:
        """Where `setup --undo` copies storage's directories when home is another filesystem."""
        return self.home / ".hpcenv-staging"

    @property
    def conda_dir(self) -> Path:
        return self.home / ".conda"

    @property
    def envs_dir(self) -> Path:
        return self.conda_dir / "envs"

    @property
    def environments_txt(self) -> Path:
        return self.conda_dir / "environments.txt"

    @property
    def cache_root(self) -> Path:
        return self.root / ".cache"

    @property
    def package_cache(self) -> Path:
        return self.cache_root / "rattler"

    @property
    def pkgs_dir(self) -> Path:
        """Where rattler keeps downloaded and extracted packages."""
        return self.package_cache / "pkgs"

    @property
    def cache_trash(self) -> Path:
        """Cache entries set aside (by `clean`, or found damaged) until they are deleted."""
        return self.package_cache / CACHE_TRASH

    @property
    def uv_cache(self) -> Path:
        return self.cache_root / "uv"

    @property
    def pip_cache(self) -> Path:
        return self.cache_root / "pip"

    @property
    def conda_pkgs(self) -> Path:
        """conda's and mamba's package cache (~/.conda/pkgs)."""
        return self.conda_dir / "pkgs"

    def caches(self) -> dict[str, Path]:
        """The caches hpcenv knows, by name."""
        return {
            "rattler": self.package_cache,
            "pip": self.pip_cache,
            "uv": self.uv_cache,
            "conda-pkgs": self.conda_pkgs,
        }

    @property
    def log_dir(self) -> Path:
        return self.root / "hpcenv-logs"

    def in_home(self, name: str) -> Path:
        """A redirected directory's place in home (`~/.cache`)."""
        return self.home / name

    def in_storage(self, name: str) -> Path:
        """A redirected directory's place in storage (`STORAGE/.cache`)."""
        return self.root / name


def layout_from(settings: Settings) -> Layout:
    """The layout, or a UsageError saying how to name the storage area."""
    if settings.storage is None:
        raise UsageError(
            f"no storage area: ${settings.storage_var} is not set",
            hint="pass --storage DIR, set HPCENV_STORAGE, or set `storage` in "
            "~/.config/hpcenv/config.toml",
        )
    for name in settings.redirect:
        validate_relative_dir(name)
    return Layout(home=settings.home, root=settings.storage, redirect=settings.redirect)


def validate_name(name: str, what: str = "name") -> str:
    """A name that is safe as one path component and in any shell: no /, .., control chars."""
    if not name or name.strip() != name:
        raise UsageError(f"invalid {what} {name!r}: it is empty or has surrounding spaces")
    if name in (".", "..") or "/" in name or "\\" in name or name.startswith("-"):
        raise UsageError(
            f"invalid {what} {name!r}: it must be one path component, not starting with '-'",
            hint="use letters, digits, '.', '_' or '-' (for a path use -p PREFIX)",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UsageError(f"invalid {what} {name!r}: it contains control characters")
    if len(name.encode()) > 200:
        raise UsageError(f"invalid {what}: longer than 200 bytes")
    return name


_ENV_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")


def validate_env_name(name: str) -> str:
    """Environment names are stricter (as conda's): letters, digits and . _ + - only, so a
    name is safe everywhere it appears: paths, modulefiles, job names, shell words."""
    validate_name(name, "environment name")
    if not _ENV_NAME.match(name):
        raise UsageError(
            f"invalid environment name {name!r}",
            hint="use letters, digits, '.', '_', '+' or '-' (for any other path use -p PREFIX)",
        )
    return name


def validate_relative_dir(name: str) -> str:
    """A redirected directory: one component directly under HOME, such as `.cache`."""
    return validate_name(name, "redirected directory")


def is_within(path: Path, parent: Path) -> bool:
    """Whether `path` is `parent` or lies inside it, after resolving symlinks."""
    p = os.path.realpath(path)
    q = os.path.realpath(parent)
    return p == q or p.startswith(q.rstrip("/") + "/")


def check_storage(layout: Layout, *, allow_home: bool = False) -> None:
    """Refuse (exit 2) a storage root that is missing, not a writable dir, or in home."""
    root = layout.root
    fix = "pass --storage DIR with an existing directory on the storage filesystem"
    if not root.exists():
        raise UsageError(f"storage area {root} does not exist", hint=f"create it or {fix}")
    if not root.is_dir():
        raise UsageError(f"storage area {root} is not a directory", hint=fix)
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"storage area {root} is not writable by you", hint=fix)
    check_not_shared(layout)
    if not allow_home and is_within(root, layout.home):
        same = os.path.realpath(root) == os.path.realpath(layout.home)
        where = "is your home directory" if same else "is inside your home directory"
        raise UsageError(f"storage area {root} {where}; home has a small quota", hint=fix)


def check_not_shared(layout: Layout) -> None:
    """Refuse (exit 2) a storage root that is another user's shared area: one whose hpcenv
    state belongs to someone else, or that someone else owns and others may write to (a
    group's project directory). Each user's `.cache`, `.conda` and `.hpcenv` need a directory
    of their own; in a shared one the second user would meet the first one's files."""
    root, state = layout.root, layout.state_dir
    me = os.geteuid()
    own_dir = f"mkdir {root}/$USER and pass --storage {root}/$USER"
    try:
        st_state = os.lstat(state)
    except FileNotFoundError:
        st_state = None
    except OSError:  # cannot even look: not ours
        st_state = os.lstat(root)
    if st_state is not None and st_state.st_uid != me:
        raise RefusedError(
            f"storage area {root} is shared: its hpcenv state {state} belongs to "
            f"{_user_name(st_state.st_uid)}",
            hint=f"use a storage directory of your own: {own_dir}",
        )
    st = os.stat(root)
    if st.st_uid != me and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RefusedError(
            f"storage area {root} belongs to {_user_name(st.st_uid)} and others can write to "
            f"it (mode {stat.S_IMODE(st.st_mode):o}): a shared area, not a storage directory "
            "of yours",
            hint=f"use a directory of your own inside it: {own_dir}",
        )


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def ensure_private_dir(path: Path) -> Path:
    """Create (0700) or check a directory hpcenv owns: a real dir, owned by us, not group/world
    accessible. Never follows a symlink someone else planted there."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RefusedError(
            f"{path} should be hpcenv's private directory but is not a real directory",
            hint="move it away and re-run",
        )
    if st.st_uid != os.geteuid():
        raise RefusedError(
            f"{path} belongs to another user ({_user_name(st.st_uid)}); hpcenv will not use it",
            hint="pass --storage with your own storage directory",
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def ensure_state_dir(layout: Layout) -> Path:
    return ensure_private_dir(layout.state_dir)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
