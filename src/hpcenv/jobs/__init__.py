"""Batch jobs: sbatch scripts that activate an env, submission, and node-local staging.

The modules: `script` (the job script), `slurm` (sbatch and asking SLURM), `pack` (packs and
node-local copies).

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

from hpcenv.jobs.pack import (
    PackResult,
    default_stage_target,
    pack,
    pack_env,
    pack_id,
    pack_key,
    pack_name,
    stage,
    stage_env,
)
from hpcenv.jobs.script import (
    JobOptions,
    JobRequest,
    SchedulerSite,
    build_jobscript,
    render_jobscript,
    stage_root,
    validate,
)
from hpcenv.jobs.slurm import (
    SchedulerState,
    SubmitResult,
    queued_job_scripts,
    scheduler_state,
    submit,
)

__all__ = [
    "JobOptions",
    "JobRequest",
    "PackResult",
    "SchedulerSite",
    "SchedulerState",
    "SubmitResult",
    "build_jobscript",
    "default_stage_target",
    "pack",
    "pack_env",
    "pack_id",
    "pack_key",
    "pack_name",
    "queued_job_scripts",
    "render_jobscript",
    "scheduler_state",
    "stage",
    "stage_env",
    "stage_root",
    "submit",
    "validate",
]
