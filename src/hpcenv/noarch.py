"""`noarch: python` packages after rattler links them, made as conda makes them.

- `compile_noarch_python`: byte-compile their .py files with the env's own python, as conda
  does (rattler links them and writes their entry points but compiles nothing), and record
  the .pyc files in the package's conda-meta entry (`pyc_file`), so removing it removes them.
- `normalize_records`: conda (26) writes package-relative paths (`site-packages/x.py`) into
  the paths_data of noarch:python records while `files` holds the installed paths; rattler
  unlinks by paths_data, so such records are rewritten to the installed paths first.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.fsops import atomic_write

if TYPE_CHECKING:
    from hpcenv.engine import PackageInfo, PrefixState


# Run by the env's own python (`-I -B`: no user settings, no .pyc of its own imports):
# compile each NUL-separated .py path from stdin, naming it by its final path in tracebacks;
# print "source NUL pyc NUL" for each one that compiled.
_COMPILE = r"""
import os, py_compile, sys
build, final = sys.argv[1], sys.argv[2]
def one(path):
    try:
        pyc = py_compile.compile(path, dfile=final + path[len(build):], doraise=True,
                                 invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    except Exception:
        return ""
    return path + "\0" + pyc + "\0"
paths = [p for p in sys.stdin.read().split("\0") if p]
if len(paths) > 200:
    import multiprocessing
    with multiprocessing.get_context("fork").Pool() as pool:
        done = pool.map(one, paths, chunksize=50)
else:
    done = [one(p) for p in paths]
sys.stdout.write("".join(done))
"""


def compile_noarch_python(
    prefix: Path, final_prefix: Path, packages: Sequence[PackageInfo]
) -> None:
    """Byte-compile the `noarch: python` packages in `prefix` that are not yet, as conda does
    (rattler links them and writes their entry points but compiles nothing), and record the
    .pyc files in the package's conda-meta entry (`pyc_file`), so removing it removes them.

    The .pyc are an optimisation (without them a shared read-only env compiles on every
    import): a file that does not compile, or an env whose python does not run, is left as
    rattler linked it."""
    python = next((p for p in packages if p.name == "python"), None)
    noarch = [p for p in packages if p.record is not None and p.record.noarch.python]
    if python is None or not noarch:
        return
    exe = prefix / "bin" / f"python{'.'.join(python.version.split('.')[:2])}"
    if not os.access(exe, os.X_OK):
        return
    todo: dict[Path, list[str]] = {}
    for package in noarch:
        path = prefix / "conda-meta" / f"{package.name}-{package.version}-{package.build}.json"
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))["paths_data"]["paths"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if any(e.get("path_type") == "pyc_file" for e in entries):
            continue
        sources = [
            e["_path"]
            for e in entries
            if e["_path"].endswith(".py") and "site-packages/" in e["_path"]
        ]
        if sources:
            todo[path] = sources
    if not todo:
        return
    files = "".join(f"{prefix / rel}\0" for sources in todo.values() for rel in sources)
    try:
        result = subprocess.run(
            [str(exe), "-I", "-B", "-c", _COMPILE, str(prefix), str(final_prefix)],
            input=files,
            capture_output=True,
            text=True,
        )
    except OSError:
        return
    words = result.stdout.split("\0")
    pyc_of = {
        os.path.relpath(src, prefix): os.path.relpath(pyc, prefix)
        for src, pyc in zip(words[0::2], words[1::2], strict=False)
    }
    for path, sources in todo.items():
        mine = sorted(pyc_of[rel] for rel in sources if rel in pyc_of)
        if not mine:
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        record["files"] = record.get("files", []) + mine
        paths_data = record.setdefault("paths_data", {"paths": [], "paths_version": 1})
        paths_data["paths"] += [{"_path": p, "path_type": "pyc_file"} for p in mine]
        atomic_write(path, json.dumps(record, indent=2), os.stat(path).st_mode & 0o777)


def normalize_records(state: PrefixState) -> bool:
    """Rewrite conda's noarch:python records whose paths_data holds package-relative paths
    (`site-packages/x.py`) to the installed paths of `files`, so unlinking removes them."""
    for record_path in state.relative_noarch:
        path = Path(record_path)
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = (data.get("paths_data") or {}).get("paths") or []
        new = []
        for installed in data.get("files") or []:
            match = next(
                (
                    e
                    for e in entries
                    if e.get("_path") == installed
                    or installed.endswith("/" + str(e.get("_path", "")).split("/", 1)[-1])
                ),
                None,
            )
            entry = dict(match) if match else {"path_type": "hardlink"}
            entry["_path"] = installed
            new.append(entry)
        data.setdefault("paths_data", {"paths_version": 1})["paths"] = new
        atomic_write(path, json.dumps(data, indent=1), os.stat(path).st_mode & 0o777)
    return bool(state.relative_noarch)
