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

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcenv.errors import RefusedError, UsageError
from hpcenv.storage import Layout, ensure_state_dir, validate_env_name

META_DIR = Path("etc") / "hpcenv"
TMP_MARK = ".hpcenv-tmp-"
IMAGE_RECORD = "hpcenv-image.json"  # in an image env's directory (`images`)
ENVIRONMENTS_TXT_LIMIT = 16 * 1024 * 1024

# The user-level condarc files conda reads (conda's search path, less the system ones),
# relative to HOME; $XDG_CONFIG_HOME/conda/*, $CONDARC and $CONDA_PREFIX/.condarc are added.
CONDARC_FILES = (".condarc", ".conda/.condarc", ".conda/condarc", ".config/conda/.condarc",
                 ".config/conda/condarc")  # fmt: skip


# --------------------------------------------------------------------------- small file helpers


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` in one step: write a sibling, fsync it, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, raw)
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


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


# --------------------------------------------------------------------------- conda's config


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
    dirs = [layout.envs_dir]
    for var in ("CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        for part in (env.get(var) or "").replace(",", os.pathsep).split(os.pathsep):
            if part.strip():
                dirs.append(_expand(part.strip(), layout.home, env))
    for path in condarc_paths(layout.home, env):
        data = _read_yaml(path)
        if not isinstance(data, dict):
            continue
        for key in ("envs_dirs", "envs_path"):
            entries = data.get(key)
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, str) and entry.strip():
                    dirs.append(_expand(entry.strip(), layout.home, env))
    return list(dict.fromkeys(dirs))


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


# --------------------------------------------------------------------------- environments.txt


@dataclass(frozen=True)
class EnvironmentsTxt:
    """conda's ~/.conda/environments.txt as read: its prefixes, and why it cannot be rewritten
    exactly (None when it can, or when it does not exist yet)."""

    path: Path
    prefixes: tuple[Path, ...]
    problem: str | None = None
    exists: bool = False


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


@dataclass(frozen=True)
class KnownEnv:
    prefix: Path
    name: str | None
    found_in: tuple[str, ...]  # envs-dir, registry, environments.txt, shared
    owner: str | None = None  # "alice (group proj)" for a shared group env


@dataclass(frozen=True)
class Discovery:
    envs: tuple[KnownEnv, ...]
    warnings: tuple[str, ...] = ()

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

    def add(prefix: Path, name: str | None, source: str, owner: str | None = None) -> None:
        key = os.path.realpath(prefix)
        old = found.get(key)
        if old is None:
            found[key] = KnownEnv(prefix, name, (source,), owner)
        elif source not in old.found_in:
            found[key] = KnownEnv(
                old.prefix, old.name or name, (*old.found_in, source), old.owner or owner
            )

    dirs = envs_dirs(layout, environ)
    for directory in dirs:
        for prefix in _envs_in(directory):
            add(prefix, prefix.name, "envs-dir")
    for prefix, rec in read_registry(layout).items():
        name = rec.get("name") if isinstance(rec, dict) else None
        add(Path(prefix), name if isinstance(name, str) else None, "registry")
    txt = read_environments_txt(layout)
    if txt.problem:
        warnings.append(f"{txt.path} {txt.problem}; read what could be read")
    in_dirs = {os.path.realpath(d) for d in dirs}
    for prefix in txt.prefixes:
        name = prefix.name if os.path.realpath(prefix.parent) in in_dirs else None
        add(prefix, name, "environments.txt")
    if shared_root is not None:
        from hpcenv.sharing import shared_envs

        listing = shared_envs(shared_root)
        warnings += listing.warnings
        for env in listing.envs:
            add(Path(env.prefix), env.name, "shared", f"{env.owner} (group {env.group})")
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
        data = json.loads((prefix / META_DIR / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def env_maker(prefix: Path) -> str:
    """hpcenv, lock, conda, mamba or unknown (see the module docstring)."""
    if is_image(prefix):
        try:
            made_by = json.loads((prefix / IMAGE_RECORD).read_text(encoding="utf-8"))["made_by"]
        except (OSError, ValueError, KeyError, TypeError):
            made_by = "hpcenv"
        return made_by if made_by in ("hpcenv", "lock", "conda", "mamba", "unknown") else "hpcenv"
    meta = read_meta(prefix)
    if meta is not None:
        made_by = meta.get("made_by")
        return made_by if made_by in ("hpcenv", "lock", "conda", "mamba", "unknown") else "hpcenv"
    if (prefix / "conda-meta" / "pixi").exists():
        return "lock"
    from hpcenv.condameta import first_tool

    tool = first_tool(prefix)
    if tool in ("conda", "mamba", "hpcenv"):
        return tool
    try:
        records = sorted((prefix / "conda-meta").glob("*.json"))[:3]
        for path in records:
            if "package_tarball_full_path" in json.loads(path.read_text(encoding="utf-8")):
                return "conda"
    except (OSError, ValueError):
        pass
    return "unknown"
