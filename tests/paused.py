"""A CLI run held at a known step (the journal's pause hook), so that a test can start a second
run while the first one holds the lock, without any timing: `Paused` starts the run, waits
until it has paused right after its K-th step, and resumes it when told; `Started` reads a
run's stderr until a line says what the test waits for (e.g. that it is waiting for the lock).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

LIMIT_S = 120.0  # a run that never gets there is a failure, not a hang


class Started:
    """`hpcenv ARGS` started in the background (stdin closed), its stderr readable as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpcenv", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._err = b""

    def stderr_until(self, text: str) -> str:
        """Read stderr until it holds `text` (an AssertionError if the run ends first)."""
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + LIMIT_S
        while text.encode() not in self._err:
            assert time.monotonic() < deadline, f"no {text!r} in: {self._err.decode()}"
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"ended without {text!r}: {self._err.decode()}"
                self._err += chunk
        return self._err.decode()

    def finish(self) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(timeout=LIMIT_S)
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, out.decode(), (self._err + err).decode()
        )


class Paused(Started):
    """`hpcenv ARGS` paused right after its `at`-th step until `resume()`."""

    def __init__(self, args: list[str], env: dict[str, str], work: Path, at: int = 1) -> None:
        self.resume_file = work / f"resume-{os.getpid()}-{id(self)}"
        hook = {"_HPCENV_TEST_PAUSE_AT": str(at), "_HPCENV_TEST_RESUME_FILE": str(self.resume_file)}
        super().__init__(args, {**env, **hook})
        deadline = time.monotonic() + LIMIT_S
        paused = Path(str(self.resume_file) + ".paused")
        while not paused.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the run never reached its pause"
            time.sleep(0.01)

    def resume(self) -> None:
        self.resume_file.touch()
