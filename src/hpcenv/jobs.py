"""Batch jobs: sbatch scripts that activate an env, submission, and node-local staging.

`render_jobscript` is pure: flags + site defaults -> script text. `#SBATCH` values are read by
sbatch, not by a shell, so they are validated (no spaces, quotes or newlines) instead of
quoted; every word of the command is `shlex.quote`d. `submit` pipes the script to `sbatch`
on stdin (no temporary file anywhere). `pack` makes a conda-pack archive cached in storage
(keyed by the env's conda-meta, reused while it is unchanged); a job with `--stage` unpacks it
once per node onto local disk and activates that copy.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError, UsageError

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_ARRAY = re.compile(r"^[0-9][0-9,\-:]*(%\d+)?$")
_WORD = re.compile(r"^[A-Za-z0-9_.,:%@+=/-]+$")


@dataclass(frozen=True)
class JobRequest:
    env_name: str
    prefix: Path
    command: tuple[str, ...]
    time: str | None = None
    mem: str | None = None
    cpus: int | None = None
    gpus: int | None = None
    partition: str | None = None
    nodes: int | None = None
    array: str | None = None
    output: str | None = None
    job_name: str | None = None
    stage: bool = False


@dataclass(frozen=True)
class SchedulerSite:
    partition: str | None = None
    gpu_partition: str | None = None
    gres: str = "--gres=gpu:{n}"
    module_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    waited: bool
    exit_code: int | None
    output: str | None


@dataclass(frozen=True)
class PackResult:
    path: str
    reused: bool
    bytes: int
    key: str


def _check(value: str | None, pattern: re.Pattern, what: str, example: str) -> None:
    if value is not None and not pattern.match(value):
        raise UsageError(f"invalid {what} {value!r}", hint=f"use a form like {example}")


def validate(req: JobRequest) -> None:
    _check(req.time, _TIME, "--time", "30, 02:00:00 or 1-12:00:00")
    _check(req.mem, _MEM, "--mem", "4G or 500M")
    _check(req.array, _ARRAY, "--array", "0-9, 1,3,5 or 0-99%10")
    _check(req.partition, _WORD, "--partition", "gpu")
    _check(req.output, _WORD, "--output (no spaces or quotes)", "/storage/logs/%x-%j.out")
    _check(req.job_name, _WORD, "--job-name", "train-1")
    for what, n in (("--cpus", req.cpus), ("--gpus", req.gpus), ("--nodes", req.nodes)):
        if n is not None and n < 1:
            raise UsageError(f"{what} must be a positive number, not {n}")
    if not req.command:
        raise UsageError("no command given", hint="hpcenv jobscript NAME -- python train.py")
    if any("\x00" in w for w in req.command):
        raise UsageError("the command contains a NUL byte")


def render_jobscript(
    req: JobRequest, site: SchedulerSite, *, log_dir: Path, pack: Path | None = None
) -> str:
    """A complete sbatch script for `req` (pure)."""
    validate(req)
    if not _WORD.match(str(log_dir)):
        raise UsageError(
            f"the log directory {log_dir} has characters #SBATCH lines cannot hold",
            hint="pass --output with a plain path",
        )
    partition = req.partition or (site.gpu_partition if req.gpus else None) or site.partition
    if partition is not None:
        _check(partition, _WORD, "partition in the site config", "gpu")
    # An env given by path may have any directory name; the default job name keeps it readable.
    name = req.job_name or "hpcenv-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", req.env_name)
    output = req.output or str(log_dir / ("%x-%A_%a.out" if req.array else "%x-%j.out"))
    sbatch = [f"--job-name={name}", f"--output={output}"]
    for flag, value in (
        ("--time", req.time),
        ("--mem", req.mem),
        ("--cpus-per-task", req.cpus),
        ("--nodes", req.nodes),
        ("--partition", partition),
        ("--array", req.array),
    ):
        if value is not None:
            sbatch.append(f"{flag}={value}")
    if req.gpus:
        gres = site.gres.format(n=req.gpus)
        _check(
            gres, re.compile(r"^--[a-z-]+=[A-Za-z0-9_.:,=-]+$"), "gres template", "--gres=gpu:{n}"
        )
        sbatch.append(gres)
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {s}" for s in sbatch),
        "",
        "# Written by hpcenv.",
        "set -euo pipefail",
    ]
    if site.module_lines:
        lines += [
            "set +u  # module functions are not written for nounset",
            *site.module_lines,
            "set -u",
        ]
    if req.stage:
        if pack is None:
            raise UsageError(
                "--stage needs the env's pack", hint=f"run `hpcenv pack {req.env_name}`"
            )
        lines += _stage_lines(req.env_name, pack)
    else:
        lines.append(f"source {shlex.quote(str(req.prefix / 'etc/hpcenv/activate.sh'))}")
    lines.append(" ".join(shlex.quote(word) for word in req.command))
    return "\n".join(lines) + "\n"


# Run once per node as `bash -c UNPACK _ TARGET PACK`. The parent of TARGET sits in a
# shared /tmp under a predictable name, so it must be a private directory we created, not a
# link someone planted. conda-unpack is a Python script (`#!/usr/bin/env python`): run it with
# the env's own python, else python3 (Debian and RHEL nodes have no `python` by default).
UNPACK = (
    'set -e; d=$(dirname "$1"); mkdir -m 700 -p "$d"; '
    'if [ -L "$d" ] || [ ! -O "$d" ]; then echo "hpcenv: unsafe staging directory $d" >&2; exit 1; fi; '
    'mkdir -p "$1"; tar -xzf "$2" -C "$1"; '
    'if [ -x "$1/bin/python" ]; then "$1/bin/python" "$1/bin/conda-unpack"; '
    'elif command -v python3 >/dev/null; then python3 "$1/bin/conda-unpack"; '
    'else "$1/bin/conda-unpack"; fi'
)


def _stage_lines(name: str, pack: Path) -> list[str]:
    """Unpack the env once per node onto local disk, fix its prefix, activate the copy."""
    q = shlex.quote
    unpack = UNPACK
    return [
        f"HPCENV_PACK={q(str(pack))}",
        f'HPCENV_STAGED="${{TMPDIR:-/tmp}}/hpcenv-${{SLURM_JOB_ID}}/"{q(name)}',
        'if [ "${SLURM_NNODES:-1}" -gt 1 ]; then',
        '  sbcast --force "$HPCENV_PACK" "${TMPDIR:-/tmp}/hpcenv-${SLURM_JOB_ID}.tar.gz"',
        '  HPCENV_PACK="${TMPDIR:-/tmp}/hpcenv-${SLURM_JOB_ID}.tar.gz"',
        "fi",
        f'srun --ntasks-per-node=1 --nodes="${{SLURM_NNODES:-1}}" bash -c {q(unpack)} _ '
        '"$HPCENV_STAGED" "$HPCENV_PACK"',
        'source "$HPCENV_STAGED/etc/hpcenv/activate.sh"',
    ]


def submit(script: str, *, wait: bool = False, sbatch: str = "sbatch") -> SubmitResult:
    """Pipe `script` to sbatch; with `wait`, block until the job ends and return its code."""
    exe = shutil.which(sbatch)
    if exe is None:
        raise UsageError(
            "sbatch not found: this is not a SLURM submit host",
            hint="write the script with `hpcenv jobscript` and submit it where SLURM runs",
        )
    argv = [exe, "--parsable"] + (["--wait"] if wait else [])
    result = subprocess.run(argv, input=script, capture_output=True, text=True)
    job_id = result.stdout.strip().split(";")[0]
    if not job_id:
        message = (
            " ".join(result.stderr.strip().splitlines()[-2:])
            or f"sbatch exited {result.returncode}"
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


# ------------------------------------------------------------------ pack and stage


def pack_key(prefix: Path) -> str:
    """Changes whenever the env's packages change: conda's (conda-meta), pip's (the entries of
    site-packages) or hpcenv's own files in it. The prefix is part of it: a pack holds it."""
    h = hashlib.sha256(f"{prefix}\n".encode())
    for pattern in ("conda-meta/*", "etc/hpcenv/*", "lib/python*/site-packages/*"):
        for path in sorted(prefix.glob(pattern)):
            if path.name == "__pycache__":  # changes on import, not on install
                continue
            st = path.lstat()
            rel = path.relative_to(prefix)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def pack(prefix: Path, name: str, packs_dir: Path, out: Path | None = None) -> PackResult:
    """A conda-pack archive of the env, cached in `packs_dir`, reused while unchanged."""
    key = pack_key(prefix)
    packs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cached = packs_dir / f"{name}-{key}.tar.gz"
    reused = cached.exists()
    if not reused:
        import conda_pack

        stale = re.compile(re.escape(name) + r"-[0-9a-f]{16}\.tar\.gz")
        for old in packs_dir.glob(f"{glob.escape(name)}-*.tar.gz"):
            if stale.fullmatch(old.name):  # not `NAME-gpu-KEY` of another env
                old.unlink()
        tmp = packs_dir / f".{name}-{key}.tmp-{os.getpid()}.tar.gz"
        try:
            conda_pack.pack(prefix=str(prefix), output=str(tmp), force=True, verbose=False)
        except conda_pack.CondaPackException as exc:
            tmp.unlink(missing_ok=True)
            raise OperationError(
                f"conda-pack cannot pack {prefix}: {' '.join(str(exc).split())[:300]}"
            ) from None
        os.replace(tmp, cached)
    if out is not None and Path(out).resolve() != cached.resolve():
        shutil.copyfile(cached, out)
        return PackResult(str(out), reused, cached.stat().st_size, key)
    return PackResult(str(cached), reused, cached.stat().st_size, key)


def stage(pack_file: Path, to: Path) -> Path:
    """Unpack a pack into `to` and fix its prefix (inside an allocation: once per node)."""
    argv = ["bash", "-c", UNPACK, "_", str(to), str(pack_file)]
    nodes = int(os.environ.get("SLURM_NNODES", "1") or 1)
    if os.environ.get("SLURM_JOB_ID") and shutil.which("srun"):
        local = pack_file
        if nodes > 1:
            local = Path(tempfile.gettempdir()) / f"hpcenv-{os.environ['SLURM_JOB_ID']}.tar.gz"
            subprocess.run(["sbcast", "--force", str(pack_file), str(local)], check=True)
        argv = ["srun", "--ntasks-per-node=1", f"--nodes={nodes}", *argv[:-1], str(local)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise OperationError(
            f"staging {pack_file} into {to} failed: {result.stderr.strip()[-300:]}"
        )
    return to
