"""conda's own configuration files, read as conda reads them: which condarc files a user
has, the envs dirs they add, and their entries that point into home.

Read leniently: a file that cannot be read or is not YAML is `UnreadableCondarc` for the
caller to report; hpcenv never writes these files (its fixes are `conda config` commands).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcenv.storage import Layout

# The user-level condarc files conda reads (conda's search path, less the system ones),
# relative to HOME; $XDG_CONFIG_HOME/conda/*, $CONDARC and $CONDA_PREFIX/.condarc are added.
CONDARC_FILES = (".condarc", ".conda/.condarc", ".conda/condarc", ".config/conda/.condarc",
                 ".config/conda/condarc")  # fmt: skip
DIR_KEYS = ("pkgs_dirs", "envs_dirs")


class UnreadableCondarc(Exception):
    """A condarc file that cannot be read or is not YAML (the message says which and why)."""


@dataclass(frozen=True)
class HomeEntry:
    """A `pkgs_dirs` / `envs_dirs` entry of a condarc file that lies in home."""

    condarc: Path
    key: str
    entry: str


def condarc_paths(home: Path, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The user-level condarc files that exist, in conda's reading order."""
    env = os.environ if environ is None else environ
    paths = [home / name for name in CONDARC_FILES]
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        paths += [Path(xdg) / "conda" / ".condarc", Path(xdg) / "conda" / "condarc"]
    if env.get("CONDA_PREFIX"):
        paths.append(Path(env["CONDA_PREFIX"]) / ".condarc")
    if env.get("CONDARC"):
        paths.append(Path(os.path.expanduser(env["CONDARC"])))
    out = []
    for p in dict.fromkeys(paths):
        try:
            if p.is_file():
                out.append(p)
        except OSError:
            continue
    return out


def read_condarc(path: Path) -> dict[str, Any]:
    """The file's settings ({} when it is empty or not a mapping)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UnreadableCondarc(f"{path} could not be read ({exc.__class__.__name__})") from None
    return data if isinstance(data, dict) else {}


def _expand(text: str, home: Path, environ: Mapping[str, str]) -> Path:
    if text.startswith("~"):
        text = str(home) + text[1:]
    for key, value in environ.items():
        text = text.replace("${" + key + "}", value).replace("$" + key, value)
    return Path(os.path.abspath(text))


def envs_dirs(layout: Layout, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where named envs live: hpcenv's envs dir first, then conda's `envs_dirs` (condarc
    files, $CONDA_ENVS_PATH / $CONDA_ENVS_DIRS)."""
    env = os.environ if environ is None else environ
    home = layout.home
    dirs = [layout.envs_dir]
    for var in ("CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        for part in (env.get(var) or "").replace(",", os.pathsep).split(os.pathsep):
            if part.strip():
                dirs.append(_expand(part.strip(), home, env))
    for path in condarc_paths(home, env):
        try:
            data = read_condarc(path)
        except UnreadableCondarc:
            continue
        for key in ("envs_dirs", "envs_path"):
            entries = data.get(key)
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, str) and entry.strip():
                    dirs.append(_expand(entry.strip(), home, env))
    return list(dict.fromkeys(dirs))


@dataclass(frozen=True)
class InHome:
    """What `entries_in_home` found: the entries, and the files it could not read."""

    entries: tuple[HomeEntry, ...]
    unreadable: tuple[str, ...]


def entries_in_home(home: Path, environ: Mapping[str, str] | None = None) -> InHome:
    """The `pkgs_dirs` / `envs_dirs` entries of every condarc file that lie in home (conda
    would fill home through them), and the files that could not be read."""
    from hpcenv.storage import is_within

    found: list[HomeEntry] = []
    unreadable: list[str] = []
    for path in condarc_paths(home, environ):
        try:
            data = read_condarc(path)
        except UnreadableCondarc as exc:
            unreadable.append(str(exc))
            continue
        for key in DIR_KEYS:
            entries = data.get(key)
            for entry in entries if isinstance(entries, list) else []:
                if is_within(Path(os.path.expanduser(str(entry))), home):
                    found.append(HomeEntry(path, key, str(entry)))
    return InHome(tuple(found), tuple(unreadable))
