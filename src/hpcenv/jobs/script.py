"""Job scripts: flags + site defaults -> a complete sbatch script that activates the env.

`render_jobscript` is pure. `#SBATCH` values are read by sbatch, not by a shell, so they are
validated (no spaces, quotes or newlines) instead of quoted; every word of the command is
`shlex.quote`d, unless the command is given as one shell string (`--wrap`, as sbatch's own),
which goes in as written so that the job's shell expands `$SLURM_ARRAY_TASK_ID` and friends.
With `--stage`, the job unpacks the env's pack once per node onto node-local disk (`sbcast`
to every node of a multi-node job), activates that copy, and removes it when the job ends.

`build_jobscript` is what `hpcenv jobscript` and `submit` call: the env checked for use
(`trust.resolve_for_use`), its activation script or pack made, the log directory created.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from hpcenv.errors import UsageError
from hpcenv.settings import Settings
from hpcenv.storage import Layout

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_ARRAY = re.compile(r"^[0-9][0-9,\-:]*(%\d+)?$")
_WORD = re.compile(r"^[A-Za-z0-9_.,:%@+=/-]+$")
# a path that may name variables of the job's environment ($TMPDIR, ${LOCAL_SCRATCH}), and
# nothing else a shell would read inside double quotes
_STAGE_DIR = re.compile(
    r"^(?:[A-Za-z0-9_./@%+=:,-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})+$"
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
class JobOptions:
    """The job flags of `hpcenv jobscript` and `hpcenv submit`."""

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
    wrap: str | None = None


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
        from hpcenv.images.mounts import job_lines

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


def stage_commands(target_lines: list[str], activate_sh: str | None) -> list[str]:
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
    lines += stage_commands(
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


def build_jobscript(
    layout: Layout, settings: Settings, env: str, command: Sequence[str], options: JobOptions
) -> str:
    """The job script of `env` running `command` (a leading `--` dropped), with the site's
    defaults; bad flags are refused (exit 2) before any work."""
    from hpcenv.activate import ensure_static_script
    from hpcenv.jobs.pack import pack
    from hpcenv.trust import resolve_for_use

    usable = resolve_for_use(layout, env, mount=False)  # an image is mounted by the job itself
    env_name, prefix = usable.name, usable.prefix
    argv = list(command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    opts = {f.name: getattr(options, f.name) for f in fields(options)}
    req = JobRequest(
        env_name or (usable.image.path if usable.image is not None else prefix).name,
        prefix,
        tuple(argv),
        **opts,
        no_user_site=settings.no_user_site,
    )
    site = SchedulerSite(
        settings.partition,
        settings.gpu_partition,
        settings.gres,
        settings.module_lines,
        settings.stage_dir,
    )
    log_dir = settings.log_dir or layout.log_dir
    validate(req)
    packed = script = image = None
    if usable.image is not None:  # its activate.sh is in the image
        image = (usable.image.image, usable.image.mount)
        script = prefix / "etc" / "hpcenv" / "activate.sh"
    elif options.stage:
        packed = Path(pack(prefix, req.env_name, layout.packs_dir).path)
    else:
        script = ensure_static_script(
            prefix, env_name or str(prefix), layout.state_dir, no_user_site=settings.no_user_site
        )
    text = render_jobscript(req, site, log_dir=log_dir, pack=packed, activation=script, image=image)
    _make_log_dir(Path(options.output).parent if options.output else log_dir)
    return text


def _make_log_dir(path: Path) -> None:
    """SLURM opens --output before the script runs, in a directory it does not create: a job
    written to a missing one loses its log. A directory with %-patterns is left to the user."""
    if "%" in str(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the log directory {path}: {exc.strerror}",
            hint="pass --output with a file in a directory you can write",
        ) from None
