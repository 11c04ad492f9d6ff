"""Doctor checks of the tools around hpcenv: conda's channels, SLURM, environment modules."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from hpcenv.condarc import UnreadableCondarc, condarc_paths, read_condarc
from hpcenv.doctor.check import Check, Status, ok, q
from hpcenv.settings import Settings


def _is_anaconda_channel(channel: str) -> bool:
    return channel == "defaults" or "repo.anaconda.com" in channel or channel.startswith("pkgs/")


def condarc_defaults(home: Path, settings: Settings, environ: Mapping[str, str]) -> Check:
    problems, fixes = [], []
    for path in condarc_paths(home, environ):
        try:
            data = read_condarc(path)
        except UnreadableCondarc:
            problems.append(f"{path} is not valid YAML")
            continue
        channels = data.get("channels")
        for channel in channels if isinstance(channels, list) else []:
            if _is_anaconda_channel(str(channel)):
                problems.append(f"{path} lists the `{channel}` channel")
                fix = f"conda config --file {q(path)} --remove channels {q(channel)}"
                if "conda-forge" not in channels:
                    fix += f" && conda config --file {q(path)} --add channels conda-forge"
                fixes.append(fix)
    for channel in settings.channels:
        if _is_anaconda_channel(channel):
            problems.append(f"hpcenv's channels setting lists `{channel}`")
            fixes.append('set channels = ["conda-forge"] in ~/.config/hpcenv/config.toml')
    if not problems:
        return ok("condarc-defaults", "no Anaconda `defaults` channel configured")
    detail = "; ".join(problems)
    if fixes:
        detail += (
            ": Anaconda's terms require a paid licence for many organisations; use conda-forge"
        )
    return Check("condarc-defaults", Status.WARN, detail, " && ".join(fixes) or None)


def sbatch(environ: Mapping[str, str]) -> Check:
    exe = shutil.which("sbatch", path=environ.get("PATH"))
    if exe:
        from hpcenv.jobs import scheduler_state

        state = scheduler_state(environ)
        if state is None:
            return ok("sbatch", f"sbatch found: {exe} (scontrol is missing: SLURM not asked)")
        if state.answers:
            return ok("sbatch", f"sbatch found: {exe}; SLURM answers ({state.detail})")
        return Check(
            "sbatch",
            Status.WARN,
            f"SLURM does not answer ({state.detail}): `hpcenv submit` cannot submit now; "
            "check with `sinfo`",
        )
    return Check(
        "sbatch",
        Status.WARN,
        "sbatch is not on PATH: `hpcenv submit` cannot submit from here "
        "(`hpcenv jobscript` still writes scripts)",
    )


def modules(environ: Mapping[str, str]) -> Check:
    for var in ("LMOD_CMD", "MODULESHOME"):
        if environ.get(var):
            return ok("modules", f"environment modules available (${var}={environ[var]})")
    return Check(
        "modules",
        Status.WARN,
        "no environment modules ($LMOD_CMD and $MODULESHOME unset): `module load` lines of "
        "job scripts will fail here",
    )
