"""Every environment the user has, wherever it came from; and the two registries hpcenv keeps.

`discover` is the one place that knows them all; `list`, `info`, `usage`, `doctor`, `clean`
and `modulefile` use it. An environment is found in:

    hpcenv's envs dir        ~/.conda/envs/NAME (in storage after `hpcenv setup`)
    hpcenv's registry        STORAGE/.hpcenv/registry.json (envs created by path)
    conda's envs dirs        `envs_dirs` of the condarc files conda reads, $CONDA_ENVS_PATH
    environments.txt         ~/.conda/environments.txt (how conda and mamba register envs)
    shared group envs        the site's shared root (`hpcenv share`)

`environments.txt` is read leniently: a file that is not UTF-8, holds a NUL byte or is a
directory is reported (`Discovery.warnings`), never fatal. It is written only when it is a
text file hpcenv can rewrite exactly; otherwise `check_environments_txt` refuses (exit 2)
before anything is built.

Who made an env (`env_maker`): `hpcenv` (PREFIX/etc/hpcenv/env.json), `lock` (env.json of an
env created from a lock file, or a pixi env), `conda` or `mamba` (the `# cmd:` lines of
conda-meta/history, or conda's fields in the package records), else `unknown` (a prefix made
by a plain rattler script, for example).
"""

from __future__ import annotations

import os
import stat
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path

from hpcenv.errors import RefusedError, UsageError
from hpcenv.fsops import atomic_write
from hpcenv.storage import Layout, ensure_state_dir, validate_env_name
from hpcenv.strenum import StrEnum

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: activation's hot path
if TYPE_CHECKING:
    from typing import Any

META_DIR = Path("etc") / "hpcenv"
TMP_MARK = ".hpcenv-tmp-"
IMAGE_RECORD = "hpcenv-image.json"  # in an image env's directory (`images`)
ENVIRONMENTS_TXT_LIMIT = 16 * 1024 * 1024


def is_env(prefix: Path) -> bool | None:
    """Whether `prefix` holds an environment (a conda-meta dir, or the record of an image env:
    `images`); None when it cannot be read."""
    try:
        st = os.stat(Path(prefix) / "conda-meta")
    except (FileNotFoundError, NotADirectoryError):
        return is_image(prefix)
    except OSError:  # EACCES, ELOOP, EIO: it may well be there
        return None
    return stat.S_ISDIR(st.st_mode)


def is_image(prefix: Path) -> bool:
    """Whether `prefix` is an image env's directory in storage (it holds the record
    `IMAGE_RECORD`; see `images`)."""
    try:
        return os.path.isfile(Path(prefix) / IMAGE_RECORD)
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- environments.txt


class EnvironmentsTxt(
    namedtuple("EnvironmentsTxt", ["path", "prefixes", "problem", "exists"], defaults=[None, False])
):
    """conda's ~/.conda/environments.txt as read: its path, its prefixes, why it cannot be
    rewritten exactly (None when it can, or when it does not exist yet), whether it exists.
    (This module's values are named tuples: activation reads it; see `settings.Settings`.)"""

    __slots__ = ()


def read_environments_txt(layout: Layout) -> EnvironmentsTxt:
    """Read leniently: what can be read is returned, what is wrong is in `problem`."""
    path = layout.environments_txt
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return EnvironmentsTxt(path, ())
    except OSError as exc:
        return EnvironmentsTxt(path, (), f"cannot be read ({exc.strerror})", True)
    if stat.S_ISDIR(st.st_mode):
        return EnvironmentsTxt(path, (), "is a directory, not a file", True)
    if not stat.S_ISREG(st.st_mode):
        return EnvironmentsTxt(path, (), "is not a regular file", True)
    try:
        with open(path, "rb") as f:
            raw = f.read(ENVIRONMENTS_TXT_LIMIT + 1)
    except OSError as exc:
        return EnvironmentsTxt(path, (), f"cannot be read ({exc.strerror})", True)
    problem = None
    if len(raw) > ENVIRONMENTS_TXT_LIMIT:
        problem = f"is larger than {ENVIRONMENTS_TXT_LIMIT // (1024 * 1024)} MiB"
        raw = raw[:ENVIRONMENTS_TXT_LIMIT]
    if b"\0" in raw:
        problem = problem or "holds a NUL byte"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = problem or f"is not UTF-8 (byte {exc.start})"
    prefixes = []
    for line in raw.split(b"\n"):
        line = line.strip()
        if not line or b"\0" in line or not line.startswith(b"/"):
            continue
        prefixes.append(Path(os.fsdecode(line)))
    return EnvironmentsTxt(path, tuple(dict.fromkeys(prefixes)), problem, True)


def check_environments_txt(layout: Layout) -> None:
    """Refuse (exit 2, nothing changed) when environments.txt could not be updated."""
    txt = read_environments_txt(layout)
    fix = f"repair or move {txt.path} away (conda re-creates it), then re-run"
    if txt.problem:
        raise RefusedError(f"{txt.path} {txt.problem}, so hpcenv cannot update it", hint=fix)
    target = txt.path if txt.exists else _existing_ancestor(txt.path.parent)
    if not os.access(target, os.W_OK):
        raise RefusedError(f"{target} is not writable, so hpcenv cannot register envs", hint=fix)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _update_environments_txt(layout: Layout, add: list[Path], drop: list[Path]) -> None:
    txt = read_environments_txt(layout)
    have = [str(p) for p in txt.prefixes]
    lines = [line for line in have if line not in {str(p) for p in drop}]
    lines += [str(p) for p in add if str(p) not in lines]
    if lines == have:
        return
    check_environments_txt(layout)
    raw = txt.path.read_bytes() if txt.exists else b""
    keep = [
        line
        for line in raw.decode("utf-8").splitlines()
        if line.strip() not in {str(p) for p in drop}
    ]
    keep += [str(p) for p in add if str(p) not in have]
    atomic_write(txt.path, "".join(f"{line}\n" for line in keep))


# --------------------------------------------------------------------------- hpcenv's registry


def _registry_path(layout: Layout) -> Path:
    return layout.state_dir / "registry.json"


def read_registry(layout: Layout) -> dict[str, dict[str, Any]]:
    """hpcenv's own record of the envs it made: {prefix: {"name": name or None}}."""
    try:
        import json

        data = json.loads(_registry_path(layout).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def set_registered(
    layout: Layout, name: str | None, prefix: Path, present: bool, *, also: tuple[Path, ...] = ()
) -> None:
    """Register (or unregister) `prefix` in hpcenv's registry and conda's environments.txt.
    Idempotent; `also` are other spellings of the same env (a symlinked name)."""
    ensure_state_dir(layout)
    registry = read_registry(layout)
    before = dict(registry)
    for p in (prefix, *also):
        registry.pop(str(p), None)
    if present:
        registry[str(prefix)] = {"name": name}
    if registry != before:
        import json

        atomic_write(_registry_path(layout), json.dumps(registry, indent=2) + "\n", 0o600)
    if present and is_image(prefix):  # conda cannot use an image env: it is hpcenv's only
        _update_environments_txt(layout, [], [prefix, *also])
    elif present:
        _update_environments_txt(layout, [prefix], list(also))
    else:
        _update_environments_txt(layout, [], [prefix, *also])


def needs_environments_txt_write(layout: Layout, prefix: Path, present: bool) -> bool:
    listed = {str(p) for p in read_environments_txt(layout).prefixes}
    return (str(prefix) in listed) != present


# --------------------------------------------------------------------------- discovery


class FoundIn(StrEnum):
    """Where `discover` found an env (see the module docstring)."""

    ENVS_DIR = "envs-dir"
    REGISTRY = "registry"
    ENVIRONMENTS_TXT = "environments.txt"
    SHARED = "shared"


class KnownEnv(namedtuple("KnownEnv", ["prefix", "name", "found_in", "owner"], defaults=[None])):
    """An env `discover` found: its prefix, name (None for one known by path), where it was
    found (`FoundIn`s), and for a shared group env its owner ("alice (group proj)")."""

    __slots__ = ()


class Discovery(namedtuple("Discovery", ["envs", "warnings"], defaults=[()])):
    """Every env (`KnownEnv`s) and what could not be read."""

    __slots__ = ()

    def prefixes(self) -> dict[Path, str | None]:
        return {e.prefix: e.name for e in self.envs}


def _envs_in(directory: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if not e.name.startswith(".") and is_env(Path(e.path)) is not False
    ]


def discover(
    layout: Layout,
    *,
    shared_root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Discovery:
    """Every env the user has (see the module docstring), each once (by its real path)."""
    found: dict[str, KnownEnv] = {}
    warnings: list[str] = []

    def add(prefix: Path, name: str | None, source: FoundIn, owner: str | None = None) -> None:
        key = os.path.realpath(prefix)
        old = found.get(key)
        if old is None:
            found[key] = KnownEnv(prefix, name, (source,), owner)
        elif source not in old.found_in:
            found[key] = KnownEnv(
                old.prefix, old.name or name, (*old.found_in, source), old.owner or owner
            )

    from hpcenv.condarc import envs_dirs

    dirs = envs_dirs(layout, environ)
    for directory in dirs:
        for prefix in _envs_in(directory):
            add(prefix, prefix.name, FoundIn.ENVS_DIR)
    for prefix, rec in read_registry(layout).items():
        name = rec.get("name") if isinstance(rec, dict) else None
        add(Path(prefix), name if isinstance(name, str) else None, FoundIn.REGISTRY)
    txt = read_environments_txt(layout)
    if txt.problem:
        warnings.append(f"{txt.path} {txt.problem}; read what could be read")
    in_dirs = {os.path.realpath(d) for d in dirs}
    for prefix in txt.prefixes:
        name = prefix.name if os.path.realpath(prefix.parent) in in_dirs else None
        add(prefix, name, FoundIn.ENVIRONMENTS_TXT)
    if shared_root is not None:
        from hpcenv.sharedroot import shared_envs

        listing = shared_envs(shared_root)
        warnings += listing.warnings
        for env in listing.envs:
            add(Path(env.prefix), env.name, FoundIn.SHARED, f"{env.owner} (group {env.group})")
    return Discovery(tuple(found.values()), tuple(warnings))


def env_prefix(layout: Layout, name: str) -> Path:
    return layout.envs_dir / validate_env_name(name)


def is_path_argument(text: str) -> bool:
    return "/" in text or text.startswith(("~", "."))


def resolve(
    layout: Layout, name_or_prefix: str, environ: Mapping[str, str] | None = None
) -> tuple[str | None, Path]:
    """NAME (an env in an envs dir, or one hpcenv registered by that name) or a path to
    (name, prefix); the env must exist."""
    if is_path_argument(name_or_prefix):
        prefix = Path(os.path.abspath(os.path.expanduser(name_or_prefix)))
        if is_env(prefix) is not False:
            return None, prefix
    else:
        name = validate_env_name(name_or_prefix)
        prefix = env_prefix(layout, name)
        if is_env(prefix) is not False:
            return name, prefix
        from hpcenv.condarc import envs_dirs  # conda's config: read only when needed

        for directory in envs_dirs(layout, environ)[1:]:
            if is_env(directory / name):
                return name, directory / name
        for path, rec in read_registry(layout).items():
            if isinstance(rec, dict) and rec.get("name") == name and is_env(Path(path)):
                return name, Path(path)
    known = ", ".join(e.name or str(e.prefix) for e in discover(layout, environ=environ).envs)
    raise UsageError(
        f"no environment {name_or_prefix!r} (looked in {prefix})",
        hint=f"known environments: {known or 'none'}; create one with `hpcenv create NAME python`",
    )


# --------------------------------------------------------------------------- who made it


def read_meta(prefix: Path) -> dict[str, Any] | None:
    try:
        import json

        data = json.loads((prefix / META_DIR / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class MadeBy(StrEnum):
    """Who made an env (see the module docstring)."""

    HPCENV = "hpcenv"
    LOCK = "lock"  # from a lock file (hpcenv's, or a pixi env)
    CONDA = "conda"
    MAMBA = "mamba"
    UNKNOWN = "unknown"  # e.g. a prefix made by a plain rattler script


def env_maker(prefix: Path) -> MadeBy:
    """Who made the env at `prefix` (see the module docstring)."""
    if is_image(prefix):
        import json

        try:
            made_by = json.loads((prefix / IMAGE_RECORD).read_text(encoding="utf-8"))["made_by"]
        except (OSError, ValueError, KeyError, TypeError):
            made_by = "hpcenv"
        return MadeBy(made_by) if made_by in MadeBy.__members__.values() else MadeBy.HPCENV
    meta = read_meta(prefix)
    if meta is not None:
        made_by = meta.get("made_by")
        return MadeBy(made_by) if made_by in MadeBy.__members__.values() else MadeBy.HPCENV
    if (prefix / "conda-meta" / "pixi").exists():
        return MadeBy.LOCK
    from hpcenv.condameta import first_tool

    tool = first_tool(prefix)
    if tool in (MadeBy.CONDA, MadeBy.MAMBA, MadeBy.HPCENV):
        return MadeBy(tool)
    import json  # here, not at the top: `hpcenv activate` does not read JSON

    try:
        records = sorted((prefix / "conda-meta").glob("*.json"))[:3]
        for path in records:
            if "package_tarball_full_path" in json.loads(path.read_text(encoding="utf-8")):
                return MadeBy.CONDA
    except (OSError, ValueError):
        pass
    return MadeBy.UNKNOWN
