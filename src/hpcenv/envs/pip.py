"""The `pip:` section of an environment.yml, installed with uv into the env's interpreter."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from hpcenv.errors import OperationError
from hpcenv.storage import Layout


def find_uv() -> str | None:
    """The uv executable: the `uv` package's, else uv on PATH; None without one."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def require_uv() -> str:
    found = find_uv()
    if not found:
        raise OperationError(
            "uv is not installed (it installs the pip: section)", hint="pip install uv"
        )
    return found


def pip_install(layout: Layout, build_prefix: Path, requirements: Sequence[str]) -> None:
    """Install an environment.yml `pip:` list with uv into the env's interpreter."""
    import subprocess
    import tempfile

    python = build_prefix / "bin" / "python"
    uv = require_uv()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
        reqs.write("\n".join(requirements) + "\n")
    env = {
        **os.environ,
        "UV_CACHE_DIR": str(layout.uv_cache),
        "VIRTUAL_ENV": str(build_prefix),
        "UV_NO_CONFIG": "1",
        # uv keeps credentials and tools under XDG dirs: in storage, never in home
        "XDG_DATA_HOME": str(layout.state_dir / "uv-data"),
        "XDG_CONFIG_HOME": str(layout.state_dir / "uv-config"),
    }
    try:
        result = subprocess.run(
            [uv, "pip", "install", "--python", str(python), "-r", reqs.name],
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(reqs.name)
    # uv locks a venv-style prefix with PREFIX/.lock, created 0666 on purpose (astral-sh/uv
    # #11328, #16845); run/activate/jobscript then refuse the env as world-writable. Take the
    # write bits the umask denies, and others' always, as for any file hpcenv writes (not
    # unlinked: a uv running in the env right now may hold it).
    lock = build_prefix / ".lock"
    try:
        st = lock.lstat()
    except FileNotFoundError:
        pass
    else:
        if not os.path.islink(lock) and st.st_mode & 0o022:
            mask = os.umask(0o022)
            os.umask(mask)
            os.chmod(lock, st.st_mode & 0o7777 & ~mask & ~0o002)
    if result.returncode != 0:
        msgs = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise OperationError(
            f"pip requirements failed to install: {' / '.join(msgs[-3:])}",
            hint="check the pip: section of the environment.yml",
        )
