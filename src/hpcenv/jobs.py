"""Batch jobs: sbatch scripts that activate an env, submission, and node-local staging.

`render_jobscript` is pure: flags + site defaults -> script text. `#SBATCH` values are read by
sbatch, not by a shell, so they are validated (no spaces, quotes or newlines) instead of
quoted; every word of the command is `shlex.quote`d, unless the command is given as one shell
string (`--wrap`, as sbatch's own), which goes in as written so that the job's shell expands
`$SLURM_ARRAY_TASK_ID` and friends. `submit` pipes the script to `sbatch` on stdin (no
temporary file anywhere).

`pack` makes a conda-pack archive in storage, named after the env's identity (its real path)
and content, reused while the env is unchanged; a new pack never deletes an old one (a queued
job may still stage it): only `hpcenv clean` removes packs, and never one that the script of
a queued or running job names. A job with `--stage` unpacks the pack once per node onto
node-local disk (`sbcast` to every node of a multi-node job), activates that copy, and
removes it when the job ends.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError, UsageError

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_ARRAY = re.compile(r"^[0-9][0-9,\-:]*(%\d+)?$")
_WORD = re.compile(r"^[A-Za-z0-9_.,:%@+=/-]+$")
# a path that may name variables of the job's environment ($TMPDIR, ${LOCAL_SCRATCH}), and
# nothing else a shell would read inside double quotes
_STAGE_DIR = re.compile(
    r"^(?:[A-Za-z0-9_./@%+=:,-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})+$"
)
SUBMIT_TIMEOUT = 120.0  # seconds sbatch may take to queue a job before we give up on it
# sbatch's words for a controller that did not answer (down, unreachable, not configured)
_NO_ANSWER = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "Could not establish a configuration source",
)


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
    wrap: str | None = None  # the command as one shell string, instead of `command`
    no_user_site: bool = True


@dataclass(frozen=True)
class SchedulerSite:
    partition: str | None = None
    gpu_partition: str | None = None
    gres: str = "--gres=gpu:{n}"
    module_lines: tuple[str, ...] = ()
    stage_dir: str | None = None  # node-local disk; default ${TMPDIR:-/tmp}


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
    if req.command and req.wrap is not None:
        raise UsageError(
            "give the command either after -- or with --wrap, not both",
            hint="hpcenv jobscript NAME --wrap 'python run.py \"$SLURM_ARRAY_TASK_ID\"'",
        )
    if not req.command and not (req.wrap or "").strip():
        raise UsageError("no command given", hint="hpcenv jobscript NAME -- python train.py")
    if any("\x00" in w for w in (*req.command, req.wrap or "")):
        raise UsageError("the command contains a NUL byte")


def render_jobscript(
    req: JobRequest,
    site: SchedulerSite,
    *,
    log_dir: Path,
    pack: Path | None = None,
    activation: Path | None = None,
    image: tuple[Path, Path] | None = None,
) -> str:
    """A complete sbatch script for `req` (pure). `activation` is the env's static script
    (default `PREFIX/etc/hpcenv/activate.sh`; the caller makes sure it exists:
    `activate.ensure_static_script`); with `req.stage`, `pack` is the env's pack. An image
    env gives `image` (its file, its mount path = `req.prefix`): mounted once per node."""
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
    if image is not None:
        if req.stage:
            raise UsageError(
                f"{req.env_name} is an image env: it is mounted on each node, not staged",
                hint="drop --stage",
            )
        from hpcenv.mounts import job_lines

        lines += job_lines(*image)
    if req.stage:
        if pack is None:
            raise UsageError(
                "--stage needs the env's pack", hint=f"run `hpcenv pack {req.env_name}`"
            )
        lines += _stage_lines(req.env_name, pack, site.stage_dir, req.no_user_site)
    else:
        script = activation or req.prefix / "etc" / "hpcenv" / "activate.sh"
        lines.append(f"source {shlex.quote(str(script))}")
    if req.wrap is not None:
        lines += [
            "# The command, given with --wrap: as written, so the shell expands its variables",
            req.wrap.rstrip("\n"),
        ]
    else:
        lines.append(" ".join(shlex.quote(word) for word in req.command))
    return "\n".join(lines) + "\n"


def stage_root(stage_dir: str | None) -> str:
    """The node-local directory as shell text for inside double quotes."""
    if stage_dir is None:
        return "${TMPDIR:-/tmp}"
    if not _STAGE_DIR.match(stage_dir) or stage_dir[0] not in "/$":
        raise UsageError(
            f"invalid stage_dir {stage_dir!r} in the scheduler settings",
            hint="use an absolute path, which may name variables: /local/scratch or $TMPDIR",
        )
    return stage_dir


# Run on each node as `bash -c PRIVATE _ DIR`: DIR sits in a shared /tmp under a predictable
# name, so it must be a private directory we made, not a link someone planted.
PRIVATE = (
    'set -e; mkdir -m 700 -p "$1"; '
    'if [ -L "$1" ] || [ ! -O "$1" ]; then echo "hpcenv: unsafe staging directory $1" >&2; exit 1; fi'
)
# Run once per node as `bash -c UNPACK _ TARGET PACK [--remove-pack] [ACTIVATE_SH]`.
# conda-unpack is a Python script (`#!/usr/bin/env python`): run it with the env's own python,
# else python3 (Debian and RHEL nodes have no `python` by default). ACTIVATE_SH, when given,
# becomes the copy's etc/hpcenv/activate.sh.
UNPACK = (
    'set -e; d=$(dirname "$1"); mkdir -m 700 -p "$d"; '
    'if [ -L "$d" ] || [ ! -O "$d" ]; then echo "hpcenv: unsafe staging directory $d" >&2; exit 1; fi; '
    'mkdir -p "$1"; tar -xzf "$2" -C "$1"; '
    'if [ "${3-}" = --remove-pack ]; then rm -f "$2"; fi; '
    'if [ -x "$1/bin/python" ]; then "$1/bin/python" "$1/bin/conda-unpack"; '
    'elif command -v python3 >/dev/null; then python3 "$1/bin/conda-unpack"; '
    'else "$1/bin/conda-unpack"; fi; '
    'if [ -n "${4-}" ]; then mkdir -p "$1/etc/hpcenv"; printf %s "$4" > "$1/etc/hpcenv/activate.sh"; fi'
)
_ON_EACH_NODE = 'srun --ntasks-per-node=1 --nodes="$_hpcenv_nodes"'


def _stage_commands(target_lines: list[str], activate_sh: str | None) -> list[str]:
    """Shell lines that unpack "$HPCENV_PACK" into "$HPCENV_STAGED" on every node of the
    allocation; "$HPCENV_STAGE_DIR", its parent, is made private on each node first, and
    receives the broadcast pack (removed once unpacked)."""
    q = shlex.quote
    extra = f" {q(activate_sh)}" if activate_sh is not None else ""
    return [
        *target_lines,
        '_hpcenv_nodes="${SLURM_NNODES:-1}"',
        'if [ "$_hpcenv_nodes" -gt 1 ]; then',
        f'  {_ON_EACH_NODE} bash -c {q(PRIVATE)} _ "$HPCENV_STAGE_DIR"',
        '  sbcast --force "$HPCENV_PACK" "$HPCENV_STAGED.hpcenv-pack.tar.gz"',
        f"  {_ON_EACH_NODE} bash -c {q(UNPACK)} _ "
        f'"$HPCENV_STAGED" "$HPCENV_STAGED.hpcenv-pack.tar.gz" --remove-pack{extra}',
        "else",
        f'  bash -c {q(UNPACK)} _ "$HPCENV_STAGED" "$HPCENV_PACK" --keep-pack{extra}',
        "fi",
    ]


def _stage_lines(name: str, pack: Path, stage_dir: str | None, no_user_site: bool) -> list[str]:
    """Unpack the env once per node onto local disk, fix its prefix, activate the copy, and
    remove it from every node when the job ends."""
    from hpcenv.activate import posix_activation

    q = shlex.quote
    lines = ["# Stage the env onto node-local disk (once per node) and activate that copy"]
    lines += _stage_commands(
        [
            f"HPCENV_PACK={q(str(pack))}",
            f'HPCENV_STAGE_DIR="{stage_root(stage_dir)}/hpcenv-$SLURM_JOB_ID"',
            f'HPCENV_STAGED="$HPCENV_STAGE_DIR"/{q(name)}',
            "_hpcenv_unstage() {",
            '  if [ "${_hpcenv_nodes:-1}" -gt 1 ]; then',
            f'    {_ON_EACH_NODE} rm -rf "$HPCENV_STAGE_DIR" || true',
            '  else rm -rf "$HPCENV_STAGE_DIR"; fi',
            "}",
            "trap _hpcenv_unstage EXIT",
        ],
        None,
    )
    activation = posix_activation('"$HPCENV_STAGED"', name=name, no_user_site=no_user_site)
    return lines + activation.rstrip("\n").splitlines()


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


# ------------------------------------------------------------------ pack and stage


def pack_id(prefix: Path) -> str:
    """The env's identity: its real path (two envs named `a` in different places differ)."""
    return hashlib.sha256(os.fsencode(os.path.realpath(prefix))).hexdigest()[:12]


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


def pack_name(name: str, prefix: Path, key: str) -> str:
    """`NAME-ID-KEY.tar.gz`: readable name, identity (`pack_id`), content (`pack_key`)."""
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:64] or "env"
    return f"{label}-{pack_id(prefix)}-{key}.tar.gz"


def pack(prefix: Path, name: str, packs_dir: Path, out: Path | None = None) -> PackResult:
    """A conda-pack archive of the env, cached in `packs_dir`, reused while unchanged. Older
    packs stay: job scripts already queued may name them (`hpcenv clean` judges them)."""
    key = pack_key(prefix)
    packs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cached = packs_dir / pack_name(name, prefix, key)
    reused = cached.exists()
    if not reused:
        import conda_pack

        tmp = packs_dir / f".{cached.name[: -len('.tar.gz')]}.tmp-{os.getpid()}.tar.gz"
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


def default_stage_target(stage_dir: str | None, name: str, job: str) -> Path:
    """Where `hpcenv stage` puts the env when not told: STAGE_DIR/hpcenv-JOB/NAME."""
    if stage_dir is None:
        root = tempfile.gettempdir()
    else:
        stage_root(stage_dir)  # validates
        root = os.path.expandvars(stage_dir)
        if "$" in root:
            raise UsageError(
                f"stage_dir {stage_dir!r} names a variable that is not set here",
                hint="pass --to DIR",
            )
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "env"
    return Path(root) / f"hpcenv-{job}" / label


def stage(pack_file: Path, to: Path, activate_sh: str) -> Path:
    """Unpack a pack into `to`, fix its prefix and write `activate_sh` as its static script;
    inside an allocation on every node (the same lines as a job script's)."""
    q = shlex.quote
    to = Path(os.path.abspath(to))
    lines = _stage_commands(
        [
            f"HPCENV_PACK={q(str(pack_file))}",
            f"HPCENV_STAGED={q(str(to))}",
            f"HPCENV_STAGE_DIR={q(str(to.parent))}",
        ],
        activate_sh,
    )
    env = dict(os.environ)
    if not (env.get("SLURM_JOB_ID") and shutil.which("srun")):
        env["SLURM_NNODES"] = "1"  # not in an allocation: here only
    result = subprocess.run(
        ["bash", "-c", "set -eu\n" + "\n".join(lines)], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise OperationError(
            f"staging {pack_file} into {to} failed: {result.stderr.strip()[-300:]}"
        )
    return to
