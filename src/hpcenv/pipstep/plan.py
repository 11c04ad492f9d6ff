"""Resolve and check (steps 1-3 of the package docstring): what uv would install, each artifact's
URL and hash, and the refusal of anything that would overwrite a conda package's file."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.pipstep.apply import PipPlan, _install, _work_dir
from hpcenv.pipstep.uv import _uv_error, python_of, run_uv
from hpcenv.pypi import (
    ARCHIVE_SUFFIXES,
    Dist,
    PypiPackage,
    canonical,
    clean_lines,
    conda_owners,
    installed_dists,
    read_pylock,
)
from hpcenv.storage import Layout

_NAME = re.compile(
    r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*(?=$|[<>=!~;@(\s])"
)
_CHANGE = re.compile(r"^ \+ ([A-Za-z0-9][A-Za-z0-9._-]*)(?:==(\S+)| @ (\S+))")

# --------------------------------------------------------------------------- resolve


def requirement_name(line: str) -> str | None:
    """The distribution a requirement line names, or None (an option, a path, a URL)."""
    line = line.strip()
    found = None if line.startswith("-") else _NAME.match(line)
    if found is None:
        return None
    if line[found.end() :].lstrip().startswith("@"):  # PEP 508: name @ URL
        return found.group(1)
    if line.split(";")[0].strip().endswith(ARCHIVE_SUFFIXES):  # a file name
        return None
    return found.group(1)


_PATH_OPTION = re.compile(
    r"^(-r|--requirement|-c|--constraint|-f|--find-links)(?:\s*=\s*|\s+)(\S.*)$"
)
_MAX_INCLUDES = 10


def expand(lines: Sequence[str], base: Path, depth: int = 0) -> list[str]:
    """Requirement lines as uv gets them: `-r FILE` replaced by the file's lines (read
    relative to `base`, theirs relative to the file, as pip does), the paths of `-c` and
    `--find-links` made absolute, so the lines mean the same wherever they are run or
    exported. Other relative paths stay relative to `base` (uv runs there)."""
    out = []
    for line in clean_lines(lines):
        found = _PATH_OPTION.match(line)
        if found is None or "://" in found.group(2):
            out.append(line)
            continue
        option, path = found.group(1), base / os.path.expanduser(found.group(2).strip())
        if option not in ("-r", "--requirement"):
            out.append(f"{option} {path}")
        elif depth >= _MAX_INCLUDES:
            raise UsageError(f"{path}: requirements files include each other too deeply")
        else:
            out += expand(read_requirements(path), path.parent, depth + 1)
    return out


def _resolve(layout: Layout, prefix: Path, requirements: Sequence[str], work: Path, cwd: Path):
    """The packages `requirements` would install into `prefix` (each artifact's URL and hash),
    nothing installed."""
    python = python_of(prefix)
    lines = expand(requirements, cwd)
    reqs = work / "requirements.txt"
    reqs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    hint = "check the PyPI requirements (a name, a version, an index option)"
    dry = run_uv(
        layout, ["pip", "install", "--dry-run", "--python", str(python), "-r", str(reqs)], cwd
    )
    if dry.returncode != 0:
        raise _uv_error(dry, "the PyPI requirements cannot be installed", hint)
    install: dict[str, tuple[str, str | None, str | None]] = {}
    for line in (dry.stderr + dry.stdout).splitlines():
        found = _CHANGE.match(line)
        if found:
            name, version, url = found.groups()
            install[canonical(name)] = (name, version, url)
    if not install:
        return []
    # the exact artifacts: the lines that name what is installed (others are satisfied in the
    # env already and need not be on the index), the rest of the set pinned
    kept, covered = [], set()
    for line in lines:
        name = requirement_name(line)
        if name is None:
            kept.append(line)
        elif canonical(name) in install:
            kept.append(line)
            covered.add(canonical(name))
    for key, (name, version, url) in install.items():
        if key not in covered:
            kept.append(f"{name} @ {url}" if url else f"{name}=={version}")
    (work / "compile.txt").write_text("\n".join(kept) + "\n", encoding="utf-8")
    pins = [f"{n}=={v}" for n, v, _u in install.values() if v]
    (work / "constraints.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    out = work / "compiled" / "pylock.toml"
    out.parent.mkdir()
    args = ["pip", "compile", "--no-deps", "--format", "pylock.toml", "--python", str(python)]
    args += ["-c", str(work / "constraints.txt"), "-o", str(out), str(work / "compile.txt")]
    compiled = run_uv(layout, args, cwd)
    if compiled.returncode != 0:
        raise _uv_error(compiled, "the PyPI requirements cannot be pinned", hint)
    return [p for p in read_pylock(out) if canonical(p.name) in install]


# --------------------------------------------------------------------------- plan


def plan(
    layout: Layout,
    prefix: Path,
    *,
    requirements: Sequence[str] = (),
    locked: Sequence[PypiPackage] = (),
    cwd: Path | None = None,
    env_label: str | None = None,
    creating: bool = False,
) -> PipPlan:
    """Resolve (or take the locked set), install it into a trial prefix, and check it against
    the conda packages of `prefix`. Raises `RefusedError` if it would overwrite any of them;
    `prefix` itself is not changed."""
    prefix = Path(prefix)
    with _work_dir(layout) as work:
        if locked:
            candidates = list(locked)
        else:
            candidates = _resolve(layout, prefix, requirements, work, cwd or Path.cwd())
        if not candidates:
            return PipPlan(str(prefix), ())
        trial = work / "trial"
        _install(layout, prefix, candidates, work, target=trial)
        chosen = _narrow(candidates, installed_dists(trial))
    replaced = check(prefix, chosen, env_label or str(prefix), creating)
    return PipPlan(str(prefix), tuple(chosen), tuple(replaced))


def _narrow(candidates, dists: Sequence[Dist]) -> list[PypiPackage]:
    """One artifact per package, with the files the trial installed from it."""
    by_name = {canonical(d.name): d for d in dists}
    out: dict[str, PypiPackage] = {}
    for p in candidates:
        key = canonical(p.name)
        d = by_name.get(key)
        if d is None:
            raise OperationError(f"uv did not install {p.name} in a trial; nothing was changed")
        out[key] = replace(p, version=p.version or d.version, files=d.files, dist_info=d.dist_info)
    return list(out.values())


def check(prefix: Path, packages: Sequence[PypiPackage], env_label: str, creating: bool):
    """Refuse a set that would overwrite a conda package's file or replace a distribution a
    conda package installed; return the PyPI distributions it replaces ("name version")."""
    owner = conda_owners(prefix)
    conda_dists = _conda_dists(owner)
    present = {canonical(d.name): d for d in installed_dists(prefix)}
    replaced = []
    for p in packages:
        old = present.get(canonical(p.name))
        hit = next((f for f in p.files if f in owner), None)
        conda_pkg = owner.get(hit) if hit else None
        if hit is None and canonical(p.name) in conda_dists:  # uv would uninstall conda's
            hit, conda_pkg = conda_dists[canonical(p.name)]
        if hit is not None:
            fix = (
                f"list {p.name} under dependencies instead of pip:"
                if creating
                else f"hpcenv install {env_label} {p.name}, and leave {p.name} out of the "
                "pip requirements"
            )
            raise RefusedError(
                f"PyPI package {p.name} {p.version} would overwrite {hit} of conda package "
                f"{conda_pkg}; nothing was changed",
                hint=f"take it from conda: {fix}",
            )
        if old is not None:
            replaced.append(f"{old.name} {old.version}")
    return replaced


def _conda_dists(owner: dict[str, str]) -> dict[str, tuple[str, str]]:
    """canonical name -> (its dist-info or egg-info, "NAME VERSION" of the conda package) for
    the Python distributions conda packages installed."""
    out = {}
    for f, conda_pkg in owner.items():
        parts = f.split("/")
        for i in range(1, len(parts)):
            if parts[i - 1] == "site-packages" and parts[i].endswith((".dist-info", ".egg-info")):
                out[canonical(parts[i].split("-")[0])] = ("/".join(parts[: i + 1]), conda_pkg)
    return out


# --------------------------------------------------------------------------- install --pip


def read_requirements(path: Path) -> list[str]:
    """The lines of a requirements file (`-r FILE`): comments, blanks and line continuations
    resolved; paths in it are relative to the current directory, as for pip and uv."""
    from hpcenv.envfile import read_text

    text = read_text(Path(path), "requirements file").replace("\\\n", " ")
    return clean_lines(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())
