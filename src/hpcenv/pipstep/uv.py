"""uv, the one installer of PyPI packages: found, run in hpcenv's state (its cache, its XDG dirs),
its errors made one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hpcenv.errors import OperationError, UsageError
from hpcenv.storage import Layout


def uv_path() -> str | None:
    """The uv executable: the `uv` package's, else uv on PATH; None without one (the one
    lookup: `clean` empties uv's cache with it too)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def find_uv() -> str:
    """The uv executable, or OperationError saying how to install it."""
    found = uv_path()
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
