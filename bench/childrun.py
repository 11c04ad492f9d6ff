"""What the section modules beside run.py share: run.py's own helpers, and a child process
timed with its peak memory.

The sections run inside `python bench/run.py`, where run.py is `__main__`: importing `run`
then would load a second copy with its own `Row` and `Skipped` classes, which run.py's table
would not recognise. So `run` is made to name the running script when it is the one running.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_main = sys.modules.get("__main__")
if "run" not in sys.modules and hasattr(_main, "Row") and hasattr(_main, "hpcenv_cmd"):
    sys.modules["run"] = _main  # type: ignore[assignment]

kit = importlib.import_module("run")  # Row, Skipped, run, hpcenv_cmd, RAW_RATTLER, tmpfs


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_bytes: int  # the child's own peak resident memory (ru_maxrss)
    cpu_seconds: float  # user + system, of the child and the children it waited for
    stdout: bytes


# Linux hands a process's resident high-water mark to the program it execs, so a child of a
# big bench process reports at least the bench's size (the channel generator alone reached
# 1 GB: every child then read 985 MiB). A small fresh interpreter in between forks the command
# and reports its wait4() rusage and the wall time from fork to exit.
_TIMER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    cpu = usage.ru_utime + usage.ru_stime
    json.dump({"seconds": seconds, "peak": usage.ru_maxrss * 1024, "cpu": cpu}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(cmd: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run cmd to its end: wall time, its peak resident memory and CPU time, stdout. A
    non-zero exit raises, with the end of stderr."""
    with tempfile.TemporaryDirectory(prefix="measured-") as tmp:
        result, out, err = Path(tmp) / "result", Path(tmp) / "out", Path(tmp) / "err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            code = subprocess.call(
                [sys.executable, "-I", "-S", "-c", _TIMER, str(result), *cmd],
                stdout=fout, stderr=ferr, env=env,
            )  # fmt: skip
        if code != 0:
            tail = err.read_text(errors="replace").strip()[-300:]
            raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... exited {code}: {tail}")
        data = json.loads(result.read_text())
        return Measured(data["seconds"], data["peak"], data["cpu"], out.read_bytes())


def test_cache() -> Path:
    """Where generated inputs live across runs: $HPCENV_TEST_CACHE, else ~/.cache/hpcenv-tests
    (as tests/realpkgs.py)."""
    root = os.environ.get("HPCENV_TEST_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "hpcenv-tests"


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"
