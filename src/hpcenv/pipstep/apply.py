"""Install (step 4): the checked artifacts into the env, a pending mark until recorded, scripts
pointed at the final prefix, uv's .lock limited."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcenv.fsops import atomic_write
from hpcenv.pipstep.uv import _uv_error, python_of, run_uv
from hpcenv.pypi import (
    PENDING_FILE,
    Dist,
    PypiPackage,
    canonical,
    installed_dists,
    read_text,
    record,
)
from hpcenv.registry import META_DIR
from hpcenv.storage import Layout, ensure_state_dir

_WORK_PREFIX = "pip-"


@dataclass(frozen=True)
class PipPlan:
    """What a pip step installs into a prefix, checked against conda's files by a trial."""

    prefix: str
    packages: tuple[PypiPackage, ...]  # files from the trial
    replaces: tuple[str, ...] = ()  # "name version" of PyPI distributions they replace


# --------------------------------------------------------------------------- install


class _work_dir:
    """A private scratch directory in the state dir, removed afterwards; those of dead
    processes (a kill) are removed by the next one."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def __enter__(self) -> Path:
        from hpcenv.fsops import remove_tree
        from hpcenv.journal import pid_alive

        state = ensure_state_dir(self.layout)
        for old in state.glob(f"{_WORK_PREFIX}*"):
            pid = old.name[len(_WORK_PREFIX) :].split("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                remove_tree(old)
        self.path = Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{os.getpid()}-", dir=state))
        return self.path

    def __exit__(self, *exc) -> None:
        from hpcenv.fsops import remove_tree

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
