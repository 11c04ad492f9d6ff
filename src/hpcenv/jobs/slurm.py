"""SLURM: submit a job script (piped to sbatch on stdin, no temporary file anywhere), and ask
the controller what it has (queued jobs' scripts, whether it answers), each bounded in time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from hpcenv.errors import OperationError, UsageError

SUBMIT_TIMEOUT = 120.0  # seconds sbatch may take to queue a job before we give up on it
# sbatch's words for a controller that did not answer (down, unreachable, not configured)
_NO_ANSWER = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "Could not establish a configuration source",
)


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    waited: bool
    exit_code: int | None
    output: str | None


def submit(script: str, *, wait: bool = False, sbatch: str = "sbatch") -> SubmitResult:
    """Pipe `script` to sbatch; with `wait`, block until the job ends and return its code."""
    exe = shutil.which(sbatch)
    if exe is None:
        raise UsageError(
            "sbatch not found: this is not a SLURM submit host",
            hint="write the script with `hpcenv jobscript` and submit it where SLURM runs",
        )
    argv = [exe, "--parsable"] + (["--wait"] if wait else [])
    try:
        # --wait lasts as long as the job; only the submission itself is bounded
        result = subprocess.run(
            argv,
            input=script,
            capture_output=True,
            text=True,
            timeout=None if wait else SUBMIT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise OperationError(
            f"SLURM does not answer: sbatch got no reply in {SUBMIT_TIMEOUT:.0f} s",
            hint="see with `squeue --me` whether the job was queued, and `sinfo` whether "
            "SLURM answers",
        ) from None
    job_id = result.stdout.strip().split(";")[0]
    if not job_id:
        message = (
            " ".join(result.stderr.strip().splitlines()[-2:])
            or f"sbatch exited {result.returncode}"
        )
        if any(words in message for words in _NO_ANSWER):
            raise OperationError(
                f"SLURM does not answer, nothing was submitted ({message})",
                hint="check with `sinfo`; submit again when it answers",
            )
        raise OperationError(f"SLURM rejected the job: {message}", hint="fix the flags SLURM names")
    output = _output_path(script, job_id)
    if wait:
        return SubmitResult(job_id, True, result.returncode, output)
    return SubmitResult(job_id, False, None, output)


def _output_path(script: str, job_id: str) -> str | None:
    m = re.search(r"^#SBATCH --output=(\S+)$", script, re.MULTILINE)
    n = re.search(r"^#SBATCH --job-name=(\S+)$", script, re.MULTILINE)
    if not m or "%A" in m.group(1):
        return None
    return m.group(1).replace("%j", job_id).replace("%x", n.group(1) if n else "")


# ------------------------------------------------------------------ asking SLURM

ASK_TIMEOUT = 20.0  # seconds for one query; a controller that is down is refused in ~4 s


def _slurm(argv: list[str], environ: Mapping[str, str]) -> subprocess.CompletedProcess | None:
    """Run a SLURM client command, bounded in time; None if it could not run or finish."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=ASK_TIMEOUT, env=dict(environ)
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def queued_job_scripts(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The batch scripts of this user's queued and running jobs, as SLURM keeps them
    (`squeue --me`, then `scontrol write batch_script JOB -`); () where SLURM is not
    installed; None where it cannot be asked (down, not answering, refusing)."""
    env = os.environ if environ is None else environ
    squeue = shutil.which("squeue", path=env.get("PATH"))
    if squeue is None:
        return ()
    listed = _slurm([squeue, "--me", "-h", "-o", "%A"], env)
    if listed is None or listed.returncode != 0:
        return None
    jobs = sorted(set(listed.stdout.split()))
    scontrol = shutil.which("scontrol", path=env.get("PATH"))
    if jobs and scontrol is None:
        return None
    scripts = []
    for job in jobs:
        got = _slurm([scontrol, "write", "batch_script", job, "-"], env)
        if got is None:
            return None
        # scontrol exits 0 even when it failed: judge by what it printed
        if got.returncode != 0 or not got.stdout:
            if "Invalid job id" in got.stderr:
                continue  # it ended meanwhile
            return None
        scripts.append(got.stdout)
    return tuple(scripts)


@dataclass(frozen=True)
class SchedulerState:
    answers: bool
    detail: str


def scheduler_state(environ: Mapping[str, str] | None = None) -> SchedulerState | None:
    """Whether the SLURM controller answers (`scontrol ping`, bounded in time); None where
    SLURM's client commands are not installed."""
    env = os.environ if environ is None else environ
    scontrol = shutil.which("scontrol", path=env.get("PATH"))
    if scontrol is None:
        return None
    got = _slurm([scontrol, "ping"], env)
    if got is None:
        return SchedulerState(False, f"`scontrol ping` got no reply in {ASK_TIMEOUT:.0f} s")
    out, err = got.stdout.strip().splitlines(), got.stderr.strip().splitlines()
    said = (out or err or [f"scontrol ping exited {got.returncode}"])[0 if out else -1]
    return SchedulerState(got.returncode == 0 and " is UP" in got.stdout, said.strip())
