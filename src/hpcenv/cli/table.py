"""The command table: every command's name, help, example and arguments, written once.

`cli.parser` builds the argparse parser from it, `cli.completion` the shell completions, and
each command's handler (`"module:function"` under `hpcenv.cli`) is imported only when that
command runs. Option groups shared by several commands (the env selection, --json, the job
options, --dry-run, --yes) are defined once in `cli.options` and listed by each command that
takes them.

To add a command: write its handler `def NAME(ctx: Context, args: Namespace) -> int | None`
in `cli/<command>.py` (parse nothing there: read `args`, call one core function, render), and
add a `Command` below; docs/architecture.md says more.

This module is imported by every invocation (`hpcenv activate` too): plain classes, no
dataclasses, nothing else imported.
"""

from __future__ import annotations

from hpcenv.cli.options import (
    CHANNEL,
    CUDA,
    DRY_RUN,
    ENV,
    ENV_SELECT,
    GPU,
    JOB,
    JOB_COMMAND,
    JSON,
    LONG_PREFIX,
    NAME,
    PREFIX,
    YES,
    Arg,
)


class Command:
    """One command: `handler` is "module:function" under hpcenv.cli; `help` its first line,
    `description` the rest of its --help (with an example); `args` its arguments, in order.
    `tail` commands take `-- CMD...`: what follows the first `--` is the command to run, and
    `run` stops reading options at its first positional (argparse.REMAINDER)."""

    __slots__ = ("name", "handler", "help", "description", "args", "hidden", "tail")

    def __init__(
        self,
        name: str,
        handler: str,
        help: str,
        description: str,
        args: tuple[Arg, ...] = (),
        *,
        hidden: bool = False,
        tail: bool = False,
    ) -> None:
        self.name = name
        self.handler = handler
        self.help = help
        self.description = description
        self.args = args
        self.hidden = hidden
        self.tail = tail


PROG = "hpcenv"
DESCRIPTION = (
    "Safe, fast, reproducible Python environments on HPC clusters.\n\n"
    "Start with `hpcenv setup`, then `hpcenv create NAME python`."
)

# --------------------------------------------------------------------------- the commands

COMMANDS: tuple[Command, ...] = (
    Command(
        "setup",
        "setup:setup",
        "Redirect ~/.cache and ~/.conda to the storage area, losing nothing.",
        "Puts the symlink in place first, so new files land in storage at once, then moves what\n"
        "was there (renames on one filesystem; across two, a copy, and each file is removed\n"
        "only once checked identical to its copy), merging with what storage already has\n"
        "(conflicting files are kept aside, never overwritten). Safe to re-run; resumes after\n"
        "a crash; --undo also reverses an interrupted setup. Give the storage area with\n"
        "--storage DIR.\n\n"
        'Example:  hpcenv setup --storage "$global_storage" --dry-run',
        (
            DRY_RUN.but(help="Print the plan; change nothing."),
            Arg("--undo", action="store_true", help="Move everything back home, remove the links."),
            YES.but(help="Do not ask for confirmation."),
            Arg("--allow-home", action="store_true", help="Allow a storage root in home."),
            JSON,
        ),
    ),
    Command(
        "doctor",
        "doctor:doctor",
        "Check this account's setup and print the command that fixes each problem.",
        "Exit status 1 when a check FAILs (WARN alone exits 0).\n\n"
        "Example:  hpcenv doctor\n          hpcenv doctor --fix",
        (
            JSON,
            Arg(
                "--fix",
                action="store_true",
                help="Remove `conda init` blocks from shell startup files (backed up).",
            ),
        ),
    ),
    Command(
        "create",
        "create:create",
        "Create an environment in storage (with no specs: an empty one, as conda does).",
        "Example:  hpcenv create myenv python=3.11 numpy\n"
        '          hpcenv create -p "$global_storage/envs/proj" -f environment.yml\n'
        "          hpcenv create gpuenv pytorch --gpu --cuda 12.4",
        (
            Arg(
                "args",
                nargs="*",
                metavar="ARG",
                help="NAME, then package specs (python=3.11 numpy).",
            ),
            NAME,
            PREFIX.but(help="Create at this path instead."),
            Arg("-f", "--file", metavar="FILE", help="environment.yml or a lock file."),
            CHANNEL,
            GPU,
            CUDA,
            DRY_RUN.but(help="Solve and show; install nothing."),
            Arg("--force", action="store_true", help="Replace an existing environment."),
            YES.but(help="Accept suggested fixes (the old PyTorch recipe's replacement)."),
            Arg("--allow-home", action="store_true", help="Allow an env in home."),
            JSON,
        ),
    ),
    Command(
        "install",
        "install:install",
        "Add packages, changing nothing you did not name unless you agree.",
        "Nothing you did not name is removed, downgraded or rebuilt unless the solve needs it,\n"
        "and then only after you agree (--yes where there is no terminal). With no ENV (and no\n"
        "-n/-p), the active environment ($CONDA_PREFIX). With no specs, it repairs an\n"
        "interrupted install.\n\n"
        'Example:  hpcenv install myenv scipy "numpy<2"\n'
        "          hpcenv install -n myenv -c conda-forge scipy",
        (
            Arg("args", nargs="*", metavar="ARG", help="[ENV] then package specs to add."),
            NAME,
            PREFIX,
            CHANNEL.but(help="Also use this channel (added to the env's; repeatable)."),
            GPU,
            CUDA,
            DRY_RUN,
            YES.but(help="Accept changes to packages not named."),
            JSON,
        ),
    ),
    Command(
        "remove",
        "install:remove",
        "Remove packages from an environment, or (with no packages) delete the environment.",
        "What only the removed packages needed goes with them; a package that needs a removed\n"
        "one must go too, and is removed only after you agree.\n\n"
        "Example:  hpcenv remove myenv scipy\n          hpcenv remove myenv --yes",
        (
            Arg("args", nargs="*", metavar="ARG", help="ENV, then packages; no packages: the env."),
            NAME,
            PREFIX,
            DRY_RUN,
            YES.but(
                help="Do not ask (delete the env, or remove packages that depend on the ones "
                "named)."
            ),
            JSON,
        ),
    ),
    Command(
        "list",
        "list:list_",
        "List every environment you have, or with -n/-p the packages of one.",
        "Every environment: hpcenv's, conda's and mamba's, shared ones, with who made it, its\n"
        "size on disk (unique after hardlinks) and file count. With -n/-p: the packages of one\n"
        "env, as `conda list -n NAME`.\n\n"
        "Example:  hpcenv list --json",
        (NAME, PREFIX, JSON),
    ),
    Command(
        "info",
        "list:info",
        "Show an environment's requested specs, channels, packages and GPU report.",
        "Example:  hpcenv info myenv",
        (*ENV_SELECT, JSON),
    ),
    Command(
        "export",
        "export:export",
        "Print environment.yml from the requested specs, or write a lock file with --lock.",
        "Example:  hpcenv export myenv > environment.yml\n"
        "          hpcenv export myenv --lock -o myenv.lock && hpcenv create copy -f myenv.lock",
        (
            *ENV_SELECT,
            Arg("--lock", action="store_true", help="Write a lock file (exact URLs and hashes)."),
            Arg("-o", "--output", metavar="FILE", help="File to write (lock default: NAME.lock)."),
        ),
    ),
    Command(
        "activate",
        "activate:activate",
        "Print code that activates an environment in this shell; nothing else is touched.",
        'Example:  eval "$(hpcenv activate myenv)"            # bash, zsh\n'
        "          hpcenv activate myenv --shell fish | source\n"
        '          eval "`hpcenv activate myenv --shell tcsh`"\n'
        "Undo with `deactivate`. In job scripts, source PREFIX/etc/hpcenv/activate.sh instead.\n"
        "If it fails, what it prints is `false`, so `set -e` scripts stop at the eval.",
        (
            *ENV_SELECT,
            Arg("--shell", metavar="SHELL", help="bash, zsh, fish or tcsh (default: $SHELL)."),
        ),
    ),
    Command(
        "deactivate",
        "activate:deactivate",
        "Restoring code for tcsh's `deactivate` alias.",
        "bash, zsh and fish need no Python to deactivate; tcsh's alias asks for this code.",
        (Arg("--shell", default="tcsh", help="tcsh."),),
        hidden=True,
    ),
    Command(
        "run",
        "run:run",
        "Run a command inside an environment without activating it.",
        "Its exit code is returned and signals reach it (hpcenv execs it).\n\n"
        "Example:  hpcenv run myenv -- python train.py --epochs 3",
        (
            Arg("words", nargs="...", metavar="ENV -- CMD", help="The env, then the command."),
            NAME,
            PREFIX,
        ),
        tail=True,
    ),
    Command(
        "jobscript",
        "jobscript:jobscript",
        "Print a complete sbatch script that activates the env and runs the command.",
        "Every word after -- is quoted; use --wrap 'CMD \"$SLURM_ARRAY_TASK_ID\"' for job\n"
        "variables.\n\n"
        "Example:  hpcenv jobscript myenv --time 02:00:00 --gpus 1 -- python train.py > job.sh",
        (ENV, JOB_COMMAND, NAME, LONG_PREFIX, *JOB),
        tail=True,
    ),
    Command(
        "submit",
        "jobscript:submit",
        "Submit the job script to SLURM (piped to sbatch, no temp files); print the job id.",
        "Example:  hpcenv submit myenv --time 00:30:00 --wait -- python train.py\n"
        "          hpcenv submit myenv --array 0-9 --wrap 'python run.py \"$SLURM_ARRAY_TASK_ID\"'",
        (
            ENV,
            JOB_COMMAND,
            NAME,
            LONG_PREFIX,
            *JOB,
            Arg("--wait", action="store_true", help="Wait for the job; exit with its exit code."),
            JSON,
        ),
        tail=True,
    ),
    Command(
        "pack",
        "pack:pack",
        "Pack the env with conda-pack (cached in storage, reused while the env is unchanged).",
        "Example:  hpcenv pack myenv -o myenv.tar.gz",
        (
            *ENV_SELECT,
            Arg("-o", "--output", metavar="FILE", help="Also write the archive here."),
            JSON,
        ),
    ),
    Command(
        "stage",
        "pack:stage",
        "Copy the env onto node-local disk and print the staged prefix.",
        "Inside an allocation: once per node. Activate it with\n"
        "`source PREFIX/etc/hpcenv/activate.sh`.\n\n"
        "Example:  PREFIX=$(hpcenv stage myenv)",
        (
            *ENV_SELECT,
            Arg(
                "--to",
                metavar="DIR",
                help="Where (default: the site's stage_dir, else $TMPDIR or /tmp).",
            ),
        ),
    ),
    Command(
        "usage",
        "usage:usage",
        "Show what uses space and files: home (against its quota), storage, caches, envs.",
        'Sizes count each hardlinked file once; "unique" is what deleting that item would free.\n\n'
        "Example:  hpcenv usage\n"
        "          hpcenv usage --json | jq '.result.envs[] | {name, unique_bytes}'",
        (JSON,),
    ),
    Command(
        "clean",
        "clean:clean",
        "Remove what no environment needs: archives, unused packages, pip/uv caches, leftovers.",
        "A package an environment links is never removed (decided from every env's conda-meta\n"
        "and confirmed by link counts). Safe to interrupt: the next run finishes the job.\n\n"
        "Example:  hpcenv clean --dry-run\n          hpcenv clean --yes",
        (
            DRY_RUN.but(help="Show what would go; remove nothing."),
            YES.but(help="Do not ask for confirmation."),
            JSON,
        ),
    ),
    Command(
        "modulefile",
        "modulefile:modulefile",
        "Print (or write with --to) an Lmod modulefile: `module use DIR; module load NAME`.",
        "Example:  hpcenv modulefile myenv --to ~/modules && module use ~/modules && "
        "module load myenv\n"
        "          hpcenv modulefile --self --to /apps/modules/hpcenv     # for admins",
        (
            ENV.but(help="Environment name or path (omit with --self)."),
            NAME,
            PREFIX,
            Arg("--to", metavar="DIR", help="Write DIR/NAME.lua instead of printing it."),
            Arg(
                "--self",
                dest="self_",
                action="store_true",
                help="A modulefile for hpcenv itself (admins).",
            ),
        ),
    ),
    Command(
        "share",
        "share:share",
        "Share an environment with a Unix group.",
        "Group-owned, setgid, group-readable (writable only with --group-writable), never\n"
        "world-writable; listed for members by `hpcenv list`.\n\n"
        "Example:  hpcenv share myenv --group mylab",
        (
            *ENV_SELECT,
            Arg("--group", "-g", required=True, metavar="G", help="Unix group to share with."),
            Arg("--group-writable", action="store_true", help="Let the group change it too."),
            JSON,
        ),
    ),
    Command(
        "selftest",
        "selftest:selftest",
        "Run the whole flow offline in a throwaway HOME and storage.",
        "setup, create (also a GPU env for CUDA 12.4), activate, run, jobscript/submit, usage,\n"
        "clean, doctor. Exit 0 only if every step passed.\n\n"
        "Example:  hpcenv selftest --keep",
        (
            Arg("--keep", action="store_true", help="Leave the sandbox for inspection."),
            JSON,
        ),
    ),
    Command(
        "completion",
        "completion:completion",
        "Print shell completion code for bash, zsh or fish.",
        "Example:  hpcenv completion bash > ~/.local/share/bash-completion/completions/hpcenv\n"
        "          hpcenv completion zsh > ~/.zfunc/_hpcenv\n"
        "          hpcenv completion fish > ~/.config/fish/completions/hpcenv.fish",
        (Arg("shell", choices=("bash", "zsh", "fish"), help="The shell."),),
    ),
)

BY_NAME = {c.name: c for c in COMMANDS}
