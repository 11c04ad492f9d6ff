"""`hpcenv verify`: is every file of every package still what its record says?

An env loses files behind its owner's back: a scratch purge, an `rm` to free quota, a full
disk that truncated an install, another tool that overwrote or chmod'ed a file. This module
checks an env against its own records and names the packages that lost something:

    conda packages   every path of `conda-meta/*.json` (`paths_data`, else `files`): present,
                     of the recorded type (file, link, directory), of the recorded size, and
                     readable (and executable, for a program in `bin/`); with `full`, its
                     sha256 too
    PyPI packages    every path of the RECORD of a `*.dist-info` in site-packages that no
                     conda record lists (pip or uv put it there): present, size, sha256

Sizes: a file with a `prefix_placeholder` is rewritten at install. rattler (hpcenv, pixi, a
py-rattler script) records the size and sha256 of the file as written (`size_in_bytes`,
`sha256_in_prefix`); conda keeps the package's size, so for conda's records such a file is
checked for presence and, with `full`, against `sha256_in_prefix`. Byte-compiled caches
(`pyc_file` entries, `.pyc` lines of a RECORD) that are missing are not damage: python writes
them again; a `.pyc` present but of another size than its RECORD says is.

Extra files: an entry of a directory that holds files of exactly one package and that no
record lists (`__pycache__` and `.pyc` left out) is reported as extra, never as broken.

Speed: one `lstat` per recorded path, nothing else unless something is wrong (a `bin/` file
without an execute bit is read for `#!` or an ELF header). Packages are checked in this
process, in threads on a slow filesystem, or over forked processes for a big env
(`treescan.fanout`, the usage walker's rule). `deadline` (a `time.monotonic()` value) bounds
a check: what was not reached is reported as not checked (`EnvCheck.complete` is false).

The package: `results` (what is found), `checker` (one record's paths), `env` (one env, and its
extra files); here, the command.
"""

from __future__ import annotations

import time
from pathlib import Path

from hpcenv.verify.env import check_prefix, site_packages_dirs
from hpcenv.verify.results import (
    EnvCheck,
    FileIssue,
    PackageCheck,
    UnreadableRecord,
    VerifyReport,
)

# --------------------------------------------------------------------------- the command


def verify(
    layout,
    settings,
    target: str | None,
    *,
    all_envs: bool = False,
    full: bool = False,
) -> VerifyReport:
    """`hpcenv verify [NAME | -p PREFIX | --all] [--full]`."""
    from hpcenv.errors import UsageError
    from hpcenv.registry import discover, is_env, resolve

    t0 = time.perf_counter()
    warnings: tuple[str, ...] = ()
    if all_envs:
        found = discover(layout, shared_root=settings.shared_root)
        warnings = found.warnings
        targets = [(e.name, e.prefix) for e in found.envs if is_env(e.prefix) is not False]
    elif target is None:
        raise UsageError("give an environment NAME, -p PREFIX or --all", hint="hpcenv verify NAME")
    else:
        targets = [resolve(layout, target)]
    envs = []
    for name, prefix in targets:
        check = check_prefix(_tree(prefix), name=name, full=full)
        if repair_pending(layout, prefix):
            from dataclasses import replace

            check = replace(check, interrupted_repair=True)
        envs.append(check)
    return VerifyReport(tuple(envs), full, time.perf_counter() - t0, warnings)


def as_json(report: VerifyReport) -> dict:
    """The report as JSON data, with each env's and package's `broken` spelled out."""
    from hpcenv.report import jsonable

    envs = []
    for env in report.envs:
        data = jsonable(env)
        data["broken"] = env.broken
        data["problems"] = [{**jsonable(p), "broken": p.broken} for p in env.problems]
        envs.append(data)
    return {**jsonable(report), "broken": report.broken, "envs": envs}


def repair_pending(layout, prefix: Path) -> bool:
    """Whether a repair of `prefix` was interrupted (its journal is still there)."""
    from hpcenv.repair import journal_name

    return (layout.journal_dir / f"{journal_name(Path(prefix))}.jsonl").exists()


def quick_check(layout, prefixes: dict, seconds: float) -> tuple[list[EnvCheck], int]:
    """For `doctor`: a stat-only check of each env (no extras), all of them within
    `seconds`; returns the checks made and how many envs were not reached."""
    deadline = time.monotonic() + seconds
    out = []
    from hpcenv.registry import is_image

    # an image env's files are in a read-only image (doctor's `images` check looks at it)
    todo = [(p, n) for p, n in prefixes.items() if not is_image(p)]
    while todo:
        prefix, name = todo[0]
        if time.monotonic() > deadline:
            break
        check = check_prefix(prefix, name=name, extras=False, deadline=deadline)
        out.append(check)
        todo.pop(0)
        if not check.complete:
            break
    return out, len(todo)


def _tree(prefix):
    """Where an env's files are: an image env's current version, mounted here (`images`)."""
    from hpcenv.registry import is_image

    if not is_image(prefix):
        return prefix
    from hpcenv.images import readable_tree

    return readable_tree(prefix)


__all__ = [
    "EnvCheck",
    "FileIssue",
    "PackageCheck",
    "UnreadableRecord",
    "VerifyReport",
    "check_prefix",
    "quick_check",
    "site_packages_dirs",
    "verify",
]
