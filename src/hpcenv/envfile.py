"""Reading the files `hpcenv create -f FILE` takes: an environment.yml, or a lock file.

An environment.yml is checked before anything is built: a mapping whose `name` is a string,
`channels` a list of strings, `dependencies` a list of specs (strings) and at most one
`pip:` list of strings; anything else is a `UsageError` (exit 2) naming the file and the key.
Files over `MAX_BYTES` or with more than `MAX_DEPENDENCIES` entries are refused, as are files
that are not UTF-8. conda's own `conda env export` lines, `name=version=build`, mean what
conda means by them: that exact version and build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcenv.errors import UsageError

MAX_BYTES = 1024 * 1024
MAX_DEPENDENCIES = 10_000


@dataclass(frozen=True)
class EnvironmentFile:
    """What an environment.yml asks for. `cuda` / `gpu` come from the `hpcenv:` section that
    `hpcenv export` writes for an env made with --cuda / --gpu."""

    name: str | None
    channels: tuple[str, ...]
    specs: tuple[str, ...]
    pip: tuple[str, ...]
    cuda: str | None = None
    gpu: bool = False


def read_environment_file(path: Path) -> EnvironmentFile:
    """Parse and check an environment.yml (see the module docstring)."""
    import yaml

    text = read_text(path, "environment file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{path} is not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise UsageError(f"{path} is nested too deeply to be an environment file") from None
    if not isinstance(data, dict):
        raise UsageError(
            f"{path} is not an environment file (expected a mapping with `dependencies:`)",
            hint="see `conda env export` for the format",
        )
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(path, "name", "a string", name)
    channels = data.get("channels")
    if channels is None:
        channels = []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise _bad(path, "channels", "a list of channel names", channels)
    deps = data.get("dependencies")
    if deps is None:
        deps = []
    if not isinstance(deps, list):
        raise _bad(path, "dependencies", "a list (one `- spec` per line)", deps)
    if len(deps) > MAX_DEPENDENCIES:
        raise UsageError(
            f"{path}: 'dependencies' has {len(deps)} entries, more than the "
            f"{MAX_DEPENDENCIES} hpcenv accepts",
            hint="list the packages you need; their dependencies come by themselves",
        )
    specs: list[str] = []
    pip: list[str] = []
    for dep in deps:
        if isinstance(dep, str) and dep.strip():
            specs.append(_spec(dep))
        elif isinstance(dep, dict) and set(dep) == {"pip"}:
            reqs = dep["pip"]
            if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
                raise _bad(path, "dependencies: pip", "a list of requirement strings", reqs)
            pip.extend(reqs)
        else:
            raise UsageError(
                f"{path}: unsupported entry in 'dependencies': {_short(dep)}",
                hint="each entry is a spec such as `numpy>=1.26`, or one `pip:` list",
            )
    if len(pip) > MAX_DEPENDENCIES:
        raise UsageError(f"{path}: more than {MAX_DEPENDENCIES} pip requirements")
    cuda, gpu = _cuda_choice(path, data.get("hpcenv"))
    return EnvironmentFile(name, tuple(channels), tuple(specs), tuple(pip), cuda, gpu)


def _cuda_choice(path: Path, section: Any) -> tuple[str | None, bool]:
    """(cuda, gpu) from the `hpcenv:` section; anything but a mapping there is ignored."""
    if not isinstance(section, dict):
        return None, False
    cuda = section.get("cuda")
    if cuda is not None and not isinstance(cuda, (str, int, float)):
        raise UsageError(f'{path}: hpcenv.cuda must be a version such as "12.4"')
    return (str(cuda) if cuda is not None else None), section.get("gpu") is True


def is_lockfile(path: Path) -> bool:
    """Whether `path` looks like a lock file (rattler's/pixi's format) rather than YAML for
    conda; False for anything unreadable (the environment-file reader then says why)."""
    try:
        with open(path, "rb") as f:
            head = f.read(400).decode("utf-8", errors="replace")
    except OSError:
        return False
    return "version:" in head and ("environments:" in head or "packages:" in head)


def read_text(path: Path, what: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}", hint=f"give the path of an {what}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not an {what}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_mode & 0o170000 == 0o040000:
                raise UsageError(f"{path} is a directory, not an {what}")
            raw = f.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not an {what}") from None
    if len(raw) > MAX_BYTES:
        raise UsageError(
            f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MiB: too large for an {what}",
            hint="list the packages you need; their dependencies come by themselves",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path} is not UTF-8 text (byte {exc.start})", hint="save it as UTF-8"
        ) from None


def _spec(dep: str) -> str:
    """A dependency line as a spec the solver reads (conda's export lines translated)."""
    if dep.count("=") >= 2:
        from hpcenv import engine

        return engine.conda_spec(dep)
    return dep


def _bad(path: Path, key: str, expected: str, value: Any) -> UsageError:
    return UsageError(
        f"{path}: '{key}' must be {expected}, not {type(value).__name__} {_short(value)}",
        hint=f"fix '{key}' in that file",
    )


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."
