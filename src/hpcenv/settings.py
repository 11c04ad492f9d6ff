"""One `Settings` object, built once, with one precedence written down here and nowhere else:

    flag  >  HPCENV_* environment variable  >  user config (~/.config/hpcenv/config.toml)
          >  site config (/etc/hpcenv/site.toml, or $HPCENV_SITE_CONFIG)  >  default

The storage root is special only in its last fallback: after the flag, `HPCENV_STORAGE` and the
config files' `storage` key, it is the value of the site's storage variable (the setting
`storage_var`, default `global_storage`, so `$global_storage` on our first site).

Every config key has a type in `SCHEMA`; an unknown key or a wrong type is a `ConfigError`
(exit 2) naming the file, the line and the key. Each key `a.b` can also be set by the
environment variable `HPCENV_A_B`.
"""

from __future__ import annotations

import math
import os
import re
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path

from hpcenv.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: activation's hot path
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SITE_CONFIG = "/etc/hpcenv/site.toml"

# Packages with CPU and CUDA builds on conda-forge (`gpu.packages`; see hpcenv.gpu).
DEFAULT_GPU_PACKAGES: tuple[str, ...] = (
    "pytorch",
    "torchvision",
    "torchaudio",
    "libtorch",
    "jaxlib",
    "tensorflow",
    "tensorflow-base",
    "cupy",
    "cupy-core",
    "onnxruntime",
)


# key -> (type, default). Types: str, bool, int, float, "path", "size", ("list", str),
# ("list", "path") (absolute paths), ("map", str)
SCHEMA: dict[str, tuple[Any, Any]] = {
    "storage": ("path", None),
    "storage_var": (str, "global_storage"),
    "redirect": (("list", str), (".cache", ".conda")),
    "allow_home": (bool, False),
    "channels": (("list", str), ("conda-forge",)),
    "channel_alias": (str, "https://conda.anaconda.org"),
    "mirrors": (("map", str), {}),
    "no_user_site": (bool, True),
    "lock_timeout": (float, 60.0),
    "home_quota": ("size", None),
    "shared_root": ("path", None),
    "package_caches": (("list", "path"), ()),
    "package_cache_owner": (str, None),
    "scheduler.partition": (str, None),
    "scheduler.gpu_partition": (str, None),
    "scheduler.gres": (str, "--gres=gpu:{n}"),
    "scheduler.module_lines": (("list", str), ()),
    "scheduler.log_dir": ("path", None),
    "scheduler.stage_dir": (str, None),
    "gpu.cuda_version": (str, None),
    "gpu.packages": (("list", str), DEFAULT_GPU_PACKAGES),
    "purged_paths": ("purged", ()),
    "images.default": (bool, False),
    "images.mount_root": (str, "/tmp"),  # noqa: S108 - per-user 0700 dirs in it (`mounts`)
}


class Settings(
    namedtuple(
        "Settings",
        [
            "home",  # Path
            "storage",  # Path | None: the storage root, None when nothing names one
            "storage_source",  # str: where it came from ("--storage", "$global_storage", ...)
            "storage_var",  # str: the site's storage variable (default "global_storage")
            "redirect",  # tuple[str, ...]: the directories `setup` moves (".cache", ".conda")
            "allow_home",  # bool
            "channels",  # tuple[str, ...]
            "channel_alias",  # str
            "mirrors",  # Mapping[str, str]: channel -> mirror URL
            "no_user_site",  # bool: activation sets PYTHONNOUSERSITE=1
            "lock_timeout",  # float: seconds
            "home_quota",  # int | None: bytes
            "shared_root",  # Path | None: the site's registry of shared envs
            "package_caches",  # tuple[Path, ...]: site package caches, read-only (sitecache)
            "package_cache_owner",  # str | None: the account (besides root) that fills them
            "partition",  # str | None: scheduler.partition
            "gpu_partition",  # str | None
            "gres",  # str: "--gres=gpu:{n}"
            "module_lines",  # tuple[str, ...]: lines job scripts run first
            "log_dir",  # Path | None
            "stage_dir",  # str | None: node-local disk for --stage; may name variables
            "gpu_cuda_version",  # str | None: the GPU nodes' driver CUDA version
            "gpu_packages",  # tuple[str, ...]: packages with CPU and CUDA builds
            "purged_paths",  # tuple[purge.PurgedPath, ...]: where the site purges old files
            "images_default",  # bool: `create` makes image envs unless told --no-image
            "images_mount_root",  # str: node-local, the same on every node (`images`)
            "site_config",  # Path: the site config file read (it may not exist)
        ],
    )
):
    """Everything hpcenv reads from flags, environment and config files, resolved once.

    A named tuple, not a dataclass, as the other values `hpcenv activate` reads on every run:
    the `dataclasses` import alone costs that command a fifth of its start-up."""

    __slots__ = ()


_FIELD_FOR_KEY = {
    "scheduler.partition": "partition",
    "scheduler.gpu_partition": "gpu_partition",
    "scheduler.gres": "gres",
    "scheduler.module_lines": "module_lines",
    "scheduler.log_dir": "log_dir",
    "scheduler.stage_dir": "stage_dir",
    "gpu.cuda_version": "gpu_cuda_version",
    "gpu.packages": "gpu_packages",
    "images.default": "images_default",
    "images.mount_root": "images_mount_root",
}

# Image envs are built at (and mounted at) a path under this root on every node: it ends up in
# shebangs and in text files of the env, so it must be short, plain and the same everywhere.
_MOUNT_ROOT = re.compile(r"^/(?!.*//)(?!.*/\.\.?(/|$))[A-Za-z0-9._+/-]{0,63}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(text: str) -> int | None:
    """'10G' -> 10737418240 (binary units, as quota tools print them); None if not a size."""
    m = _SIZE_RE.match(text)
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _load_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:  # only now: tomllib costs more than the rest of `hpcenv activate`
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid TOML: {exc}", hint="fix the file or move it away"
        ) from exc


def _line_of(text: str, key: str) -> int | None:
    """The line where `key` (dotted: its last part under its table) is set, for messages."""
    table, _, leaf = key.rpartition(".")
    in_table = not table
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = stripped.strip("[] ") == table
            continue
        if in_table and re.match(rf"^{re.escape(leaf)}\s*=", stripped):
            return number
        if re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in SCHEMA:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _convert(key: str, value: Any, where: str) -> Any:
    kind, _ = SCHEMA[key]

    def bad(expected: str) -> ConfigError:
        return ConfigError(
            f"{where}: key '{key}' must be {expected}, not {value!r}",
            hint=f"fix '{key}' in that file",
        )

    if _has_nul(value):
        raise bad("text without NUL characters")
    if kind == "purged":
        from hpcenv.purge import parse_purged_paths

        return parse_purged_paths(value, bad)
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise bad("a path string")
        return Path(os.path.expandvars(os.path.expanduser(value)))
    if kind == "size":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        size = parse_size(value) if isinstance(value, str) else None
        if size is None:
            raise bad("a size such as 10G or a number of bytes")
        return size
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        if not math.isfinite(value) or value < 0:
            raise bad("a finite number of at least 0")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string")
        if key == "images.mount_root" and not _MOUNT_ROOT.match(value):
            raise bad(
                "an absolute path of at most 64 characters (letters, digits, . _ + - /), "
                "without variables: it is built into every image env"
            )
        return value
    if kind == ("list", "path"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad("a list of absolute paths")
        paths = [os.path.expandvars(os.path.expanduser(v)) for v in value]
        if not all(os.path.isabs(v) for v in paths):
            raise bad("a list of absolute paths")
        return tuple(Path(os.path.normpath(v)) for v in paths)
    if isinstance(kind, tuple) and kind[0] == "list":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        if key == "channels" and not value:
            raise ConfigError(
                f"{where}: no channel configured: 'channels' is empty",
                hint='name at least one, e.g. channels = ["conda-forge"], or remove the key',
            )
        return tuple(value)
    if isinstance(kind, tuple) and kind[0] == "map":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad("a table of strings")
        return dict(value)
    raise AssertionError(kind)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def read_config_file(path: Path) -> dict[str, Any]:
    """The validated settings of one TOML file, keyed by dotted name (`scheduler.partition`)."""
    data, text = _load_toml(path)
    values: dict[str, Any] = {}
    for key, value in _flatten(data).items():
        line = _line_of(text, key)
        where = f"{path}, line {line}" if line else str(path)
        if key not in SCHEMA:
            known = ", ".join(sorted(SCHEMA))
            raise ConfigError(
                f"{where}: unknown key '{key}'", hint=f"remove it; known keys: {known}"
            )
        values[key] = _convert(key, value, where)
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, (kind, _) in SCHEMA.items():
        name = "HPCENV_" + key.upper().replace(".", "_")
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        where = f"environment variable {name}"
        value: Any = raw
        if kind is bool:
            low = raw.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(f"{where} must be 1/0/true/false, not {raw!r}")
            value = low in ("1", "true", "yes")
        elif kind is float:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{where} must be a number, not {raw!r}") from None
        elif (isinstance(kind, tuple) and kind[0] == "list") or kind == "purged":
            value = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(kind, tuple) and kind[0] == "map":
            pairs = [part.split("=", 1) for part in raw.split(",") if part.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"{where} must be NAME=URL pairs separated by commas")
            value = {k.strip(): v.strip() for k, v in pairs}
        values[key] = _convert(key, value, where)
    return values


def user_config_path(environ: Mapping[str, str], home: Path) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(base) / "hpcenv" / "config.toml"


def load_settings(
    *,
    storage: Path | None = None,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings once: flags (the arguments) > env > user config > site config."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    site_path = Path(env.get("HPCENV_SITE_CONFIG") or DEFAULT_SITE_CONFIG)
    user_path = config if config is not None else user_config_path(env, home)
    if config is not None and not config.is_file():
        raise ConfigError(f"config file {config} does not exist", hint="check the --config path")

    merged: dict[str, Any] = {key: default for key, (_, default) in SCHEMA.items()}
    sources: dict[str, str] = {}
    for source, values in (
        (f"site config {site_path}", read_config_file(site_path)),
        (f"user config {user_path}", read_config_file(user_path)),
        ("environment", _from_env(env)),
    ):
        for key, value in values.items():
            merged[key] = value
            sources[key] = source

    root: Path | None
    if storage is not None:
        root, storage_source = storage, "--storage"
    elif merged["storage"] is not None:
        root = merged["storage"]
        storage_source = (
            "HPCENV_STORAGE" if sources.get("storage") == "environment" else sources["storage"]
        )
    else:
        var = merged["storage_var"]
        root = Path(env[var]) if env.get(var) else None
        storage_source = f"${var}"
    if root is not None:
        root = Path(os.path.abspath(os.path.expanduser(str(root))))

    kwargs = {_FIELD_FOR_KEY.get(key, key): value for key, value in merged.items()}
    kwargs.pop("storage")
    return Settings(
        home=home,
        storage=root,
        storage_source=storage_source,
        site_config=site_path,
        **kwargs,
    )
