"""A pip step: PyPI packages into a conda env with uv, never over conda's files.

A pip step (an environment.yml `pip:` section, `hpcenv install ENV --pip REQ...`, or the PyPI
part of a lock file) leaves the env untouched until its last stage:

1. **resolve**: `uv pip install --dry-run` against the env's interpreter says which
   distributions would be installed (what the env already has, conda's numpy too, is kept);
   `uv pip compile --no-deps --format pylock.toml` then names the exact artifact of each: its
   URL and sha256. A lock file's PyPI part is that already.
2. **trial**: that set is installed with `--prefix` into a throwaway directory in hpcenv's
   state dir: uv downloads or builds every artifact into its cache, and the trial's dist-info
   RECORDs list the files each package installs.
3. **check**: a file a conda package owns (conda-meta `files`) would be overwritten, or a
   distribution a conda package installed would be replaced: refused (`RefusedError`, exit 2)
   naming both packages and the fix, take it from conda. conda-pack, which `pack`/`stage`
   rely on, refuses such an env (conda/conda-pack#98, #197, #243), and removing the conda
   package would delete the PyPI package's files.
4. **install**: the same artifacts, hashes required, into the env (from uv's cache). Scripts
   written for a build prefix are pointed at the final one; uv's `PREFIX/.lock`, created 0666
   on purpose (astral-sh/uv#11328, #16845), loses the write bits the umask denies. Then the
   record (`pypi`).

An install in place is marked by `PREFIX/etc/hpcenv/pypi-pending.json` until it is recorded;
the next pip step, or `hpcenv install ENV`, finishes it (uv installs the same set again).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hpcenv.errors import OperationError, RefusedError, UsageError
from hpcenv.pypi import (
    ARCHIVE_SUFFIXES,
    PENDING_FILE,
    Dist,
    PypiPackage,
    canonical,
    clean_lines,
    conda_owners,
    installed_dists,
    read_pylock,
    read_text,
    record,
)
from hpcenv.registry import META_DIR, atomic_write
from hpcenv.storage import Layout, ensure_state_dir

_WORK_PREFIX = "pip-"
_NAME = re.compile(
    r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*(?=$|[<>=!~;@(\s])"
)
_CHANGE = re.compile(r"^ \+ ([A-Za-z0-9][A-Za-z0-9._-]*)(?:==(\S+)| @ (\S+))")


@dataclass(frozen=True)
class PipPlan:
    """What a pip step installs into a prefix, checked against conda's files by a trial."""

    prefix: str
    packages: tuple[PypiPackage, ...]  # files from the trial
    replaces: tuple[str, ...] = ()  # "name version" of PyPI distributions they replace


# --------------------------------------------------------------------------- uv


def find_uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
    if not found:
        raise OperationError(
            "uv is not installed (it installs the PyPI packages)", hint="pip install uv"
        )
    return found


def run_uv(layout: Layout, args: Sequence[str], cwd: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        UV_CACHE_DIR=str(layout.uv_cache),
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        NO_COLOR="1",
        # uv keeps credentials and tools under XDG dirs: in storage, never in home
        XDG_DATA_HOME=str(layout.state_dir / "uv-data"),
        XDG_CONFIG_HOME=str(layout.state_dir / "uv-config"),
    )
    try:
        return subprocess.run(
            [find_uv(), *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    finally:
        _limit_uv_cache(layout)


def _uv_error(result, what: str, hint: str) -> Exception:
    """One line from uv's report: its `error:`/`cause:` lines, else its last ones. Unsolvable
    requirements and artifacts that do not match their hash are bad input (exit 2)."""
    text = result.stderr or ""
    said, rest = [], []
    for raw in text.splitlines():
        line = raw.strip().lstrip("×╰─▶│ ").strip()
        label = re.match(r"(?i)(error|cause|caused by):\s*", line)
        if label:
            said.append(line[label.end() :])
        elif line and not line.startswith("warning:"):
            rest.append(line)
    if "Hash mismatch" in text:
        got = [line for line in rest if line.startswith("sha256:")]
        said = [line for line in said if "Hash mismatch" in line][:1]
        if len(got) == 2:
            said += [f"expected {got[0]}, got {got[1]}"]
    summary = " / ".join(said[-3:] or rest[-3:])[:400] or f"uv exited {result.returncode}"
    bad_input = "No solution found" in text or "Hash mismatch" in text
    return (UsageError if bad_input else OperationError)(f"{what}: {summary}", hint=hint)


def _limit_uv_cache(layout: Layout) -> None:
    """uv creates its cache's lock files 0666 on purpose (a cache shared between users,
    astral-sh/uv#11328): no file of ours is writable by anyone, so take the bits the umask
    denies. The unpacked wheels (`archive-v0`, large) are left to the envs' own walk."""
    from hpcenv.perms import apply_umask

    try:
        entries = list(os.scandir(layout.uv_cache))
    except OSError:
        return
    for entry in entries:
        if entry.name != "archive-v0":
            apply_umask(Path(entry.path))


def python_of(prefix: Path) -> Path:
    python = Path(prefix) / "bin" / "python"
    if not os.path.exists(python):
        raise UsageError(
            f"{prefix} has no python (PyPI packages need one)",
            hint="add python to the conda packages",
        )
    return python


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


# --------------------------------------------------------------------------- install


class _work_dir:
    """A private scratch directory in the state dir, removed afterwards; those of dead
    processes (a kill) are removed by the next one."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def __enter__(self) -> Path:
        from hpcenv.envjournal import remove_tree
        from hpcenv.journal import pid_alive

        state = ensure_state_dir(self.layout)
        for old in state.glob(f"{_WORK_PREFIX}*"):
            pid = old.name[len(_WORK_PREFIX) :].split("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                remove_tree(old)
        self.path = Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{os.getpid()}-", dir=state))
        return self.path

    def __exit__(self, *exc) -> None:
        from hpcenv.envjournal import remove_tree

        remove_tree(self.path)


def _install(layout, prefix: Path, packages, work: Path, *, target=None, reinstall=False):
    """uv installs exactly `packages` (no dependencies) with the env's interpreter, each from
    its artifact as a direct reference, hashes required for those that have one: into
    `target` as a prefix (a trial), else into the env."""
    args = ["pip", "install", "--no-deps", "--python", str(python_of(prefix))]
    if target is not None:
        args += ["--prefix", str(target)]
    if reinstall:
        args.append("--reinstall")
    hashed = [p for p in packages if p.sha256]
    for group, extra in (
        (hashed, ["--require-hashes"]),
        ([p for p in packages if not p.sha256], []),
    ):
        if not group:
            continue
        reqs = work / f"install-{len(extra)}.txt"
        reqs.write_text("".join(f"{p.direct_reference}\n" for p in group), encoding="utf-8")
        result = run_uv(layout, [*args, *extra, "-r", str(reqs)])
        if target is None:
            limit_lock_file(prefix)
        if result.returncode != 0:
            where = "(a trial; nothing was changed)" if target else f"into {prefix}"
            raise _uv_error(
                result,
                f"PyPI packages failed to install {where}",
                "check the PyPI requirements, or the network (uv's cache is used offline)",
            )


def limit_lock_file(prefix: Path) -> None:
    """uv locks a venv-style prefix with PREFIX/.lock, created 0666 on purpose (astral-sh/uv
    #11328, #16845); run/activate/jobscript then refuse the env as world-writable. Take the
    write bits the umask denies, and others' always (not unlinked: a uv running in the env
    right now may hold it)."""
    lock = Path(prefix) / ".lock"
    try:
        st = lock.lstat()
    except FileNotFoundError:
        return
    if not os.path.islink(lock) and st.st_mode & 0o022:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(lock, st.st_mode & 0o7777 & ~mask & ~0o002)


def apply(
    layout: Layout,
    the_plan: PipPlan,
    *,
    final_prefix: Path | None = None,
    mark: bool = False,
    reinstall: bool = False,
) -> tuple[PypiPackage, ...]:
    """Install a checked plan into its prefix and record it; returns what was installed.
    With `mark` (an install in place), the plan is written to `pypi-pending.json` first: a
    kill leaves a mark that the next pip step or `hpcenv install ENV` finishes."""
    from hpcenv.journal import tick

    prefix = Path(the_plan.prefix)
    if not the_plan.packages:
        return ()
    if mark:
        data = {"packages": [p.to_json() for p in the_plan.packages]}
        atomic_write(prefix / META_DIR / PENDING_FILE, json.dumps(data, indent=1))
        tick()
    with _work_dir(layout) as work:
        _install(layout, prefix, the_plan.packages, work, reinstall=reinstall)
    tick()
    if final_prefix is not None and Path(final_prefix) != prefix:
        _retarget_scripts(prefix, Path(final_prefix), the_plan.packages)
    done = record(prefix, the_plan.packages)
    (prefix / META_DIR / PENDING_FILE).unlink(missing_ok=True)
    tick()
    return done


def finish_pending(layout: Layout, prefix: Path) -> tuple[PypiPackage, ...]:
    """Finish a pip install in place that was interrupted: install its set again (uv
    replaces what a kill left half-linked) and record it."""
    path = Path(prefix) / META_DIR / PENDING_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ()
    except (OSError, ValueError):
        data = {}
    items = data.get("packages") if isinstance(data, dict) else None
    packages = [PypiPackage.from_json(p) for p in items or []]
    if not packages or any(p is None for p in packages):  # a torn mark: written before uv ran
        path.unlink()
        return ()
    return apply(layout, PipPlan(str(prefix), tuple(packages)), reinstall=True)  # type: ignore[arg-type]


def _retarget_scripts(build: Path, final: Path, packages: Sequence[PypiPackage]) -> None:
    """Scripts uv wrote name the interpreter of the build prefix (`#!BUILD/bin/python`, or
    for a long path `#!/bin/sh` + `'exec' 'BUILD/bin/python'`): name the final one, and keep
    each RECORD's hash and size right."""
    import base64
    import hashlib

    spellings = {str(build), os.path.realpath(build)}  # uv may name the interpreter either way
    olds = [s.encode() + b"/" for s in spellings]
    new = str(final).encode() + b"/"
    wanted = {canonical(p.name) for p in packages}
    for d in installed_dists(build):
        if canonical(d.name) not in wanted:
            continue
        fixed = {}
        for rel in d.files:
            path = build / rel
            if not rel.startswith("bin/") or path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            cut = _after_lines(data, 3)
            head = data[:cut]
            for old in olds:
                head = head.replace(old, new)
            if not data.startswith(b"#!") or head == data[:cut]:
                continue
            data = head + data[cut:]
            atomic_write(path, data, path.stat().st_mode & 0o7777)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            fixed[rel] = [f"sha256={digest.decode()}", str(len(data))]
        if fixed:
            _rewrite_record(build, d, fixed)


def _after_lines(data: bytes, n: int) -> int:
    at = 0
    for _ in range(n):
        at = data.find(b"\n", at) + 1
        if at == 0:
            return len(data)
    return at


def _rewrite_record(prefix: Path, d: Dist, fixed: dict[str, list[str]]) -> None:
    import io

    path = prefix / d.dist_info / "RECORD"
    site_rel = os.path.dirname(d.dist_info)
    rows = list(csv.reader((read_text(path) or "").splitlines()))
    for row in rows:
        rel = os.path.normpath(os.path.join(site_rel, row[0])) if row else None
        if rel in fixed:
            row[1:3] = fixed[rel]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    atomic_write(path, out.getvalue(), path.stat().st_mode & 0o7777)


# --------------------------------------------------------------------------- install --pip


def read_requirements(path: Path) -> list[str]:
    """The lines of a requirements file (`-r FILE`): comments, blanks and line continuations
    resolved; paths in it are relative to the current directory, as for pip and uv."""
    from hpcenv.envfile import _read_text

    text = _read_text(Path(path), "requirements file").replace("\\\n", " ")
    return clean_lines(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def install_into(
    layout: Layout,
    settings,
    name_or_prefix: str,
    requirements: Sequence[str],
    *,
    files: Sequence[Path] = (),
    cwd: Path | None = None,
    dry_run: bool = False,
    on_wait=None,
):
    """`hpcenv install ENV --pip REQ... [-r FILE]`: plan, check and install PyPI packages
    into an existing env, under the storage lock; the requirements join what the env records
    as asked for (`env.json` `pip`)."""
    from hpcenv.envs import ChangeReport
    from hpcenv.registry import resolve

    base = Path.cwd() if cwd is None else cwd
    lines = expand([*requirements, *(f"-r {path}" for path in files)], base)
    if not lines:
        raise UsageError(
            "no PyPI requirements given", hint="hpcenv install ENV --pip NAME[==VERSION]..."
        )
    name, prefix = resolve(layout, name_or_prefix)
    _check_env(prefix)
    if dry_run:
        label = name or str(prefix)
        the_plan = plan(layout, prefix, requirements=lines, cwd=cwd, env_label=label)
        return ChangeReport(
            "install", name, str(prefix), True, (), pip=tuple(lines),
            pypi=tuple(f"{p.name} {p.version}" for p in the_plan.packages),
        )  # fmt: skip
    return _install_locked(layout, settings, name, prefix, lines, cwd, on_wait)


def finish_interrupted(layout: Layout, settings, name_or_prefix: str, on_wait=None):
    """The report of finishing an interrupted `install --pip` of the env; None if none was."""
    from hpcenv.pypi import has_pending
    from hpcenv.registry import resolve

    name, prefix = resolve(layout, name_or_prefix)
    if not has_pending(prefix):
        return None
    _check_env(prefix)
    return _install_locked(layout, settings, name, prefix, [], None, on_wait)


def _check_env(prefix: Path) -> None:
    from hpcenv.envs import require_writable
    from hpcenv.trust import check_trusted

    check_trusted(prefix)
    find_uv()
    python_of(prefix)
    require_writable(prefix, [prefix, *prefix.glob("lib/python*/site-packages")])


def _install_locked(layout, settings, name, prefix: Path, lines, cwd, on_wait):
    import time

    from hpcenv import perms
    from hpcenv.envjournal import recover
    from hpcenv.envplan import EnvMeta, requested
    from hpcenv.envs import ChangeReport, _lock
    from hpcenv.registry import env_maker, set_registered

    start = time.perf_counter()
    warnings: list[str] = []
    with _lock(layout, settings, on_wait):
        recovered = recover(layout)
        finished = finish_pending(layout, prefix)
        done: tuple[PypiPackage, ...] = ()
        if lines:
            label = name or str(prefix)
            the_plan = plan(layout, prefix, requirements=lines, cwd=cwd, env_label=label)
            done = apply(layout, the_plan, mark=True)
        perms.limit_installed(prefix, layout.package_cache, ())  # no file anyone may write
        meta = EnvMeta.load(prefix)
        if meta is None:
            from hpcenv import engine

            asked = requested(prefix, engine.read_prefix(prefix).packages, None)
            meta = EnvMeta(
                name, str(prefix), asked.specs, asked.channels, made_by=env_maker(prefix)
            )
        pip = tuple(dict.fromkeys([*meta.pip, *lines]))
        EnvMeta(**{**meta.__dict__, "pip": pip, "updated": time.time()}).save(prefix)
        try:
            set_registered(layout, name, prefix, True)
        except RefusedError as exc:
            warnings.append(f"{prefix} was changed but not registered: {exc.message}")
    return ChangeReport(
        "install", name, str(prefix), False, (), pip=tuple(lines),
        pypi=tuple(f"{p.name} {p.version}" for p in (*finished, *done)),
        warnings=tuple(warnings), seconds=time.perf_counter() - start,
        recovered=tuple(recovered), resumed=bool(finished),
    )  # fmt: skip
