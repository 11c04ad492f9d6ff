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
    ENV_SELECT,
    GPU,
    JSON,
    NAME,
    PREFIX,
    YES,
    Arg,
    Command,
)
from hpcenv.cli.table_tools import TOOLS

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
        "          hpcenv create gpuenv pytorch --gpu --cuda 12.4\n"
        "          hpcenv create bigenv python numpy scipy --image    # one file in storage",
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
            Arg(
                "--image",
                action="store_const",
                const=True,
                default=None,
                help="Keep the env as one squashfs image in storage, mounted where it runs "
                "(default: the site's images.default).",
            ),
            Arg(
                "--no-image",
                dest="image",
                action="store_const",
                const=False,
                help="A plain env (a tree in storage), whatever images.default says.",
            ),
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
        "With --pip (or -r FILE) the arguments are PyPI requirements, installed by uv and\n"
        "recorded (export and export --lock keep them); one that would overwrite a conda\n"
        "package's file is refused before anything changes.\n\n"
        'Example:  hpcenv install myenv scipy "numpy<2"\n'
        "          hpcenv install -n myenv -c conda-forge scipy\n"
        "          hpcenv install myenv --pip six==1.16.0 -r requirements.txt",
        (
            Arg("args", nargs="*", metavar="ARG", help="[ENV] then package specs to add."),
            NAME,
            PREFIX,
            Arg(
                "--pip",
                action="store_true",
                help="The arguments after ENV are PyPI requirements (installed by uv).",
            ),
            Arg(
                "-r",
                "--requirement",
                action="append",
                metavar="FILE",
                help="PyPI requirements file (repeatable; implies --pip).",
            ),
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
        "verify",
        "verify:verify",
        "Check that every file of every package is still there, unchanged.",
        "Missing, changed (size, type, permissions; content with --full) and extra files are\n"
        "listed per package. Exit status 1 when a package is broken (`hpcenv repair` fixes it).\n\n"
        "Example:  hpcenv verify myenv\n"
        "          hpcenv verify --all --json\n"
        '          hpcenv verify -p "$global_storage/envs/proj" --full',
        (
            Arg("args", nargs="*", metavar="ENV", help="Environment name or path."),
            NAME,
            PREFIX,
            Arg("--all", dest="all_envs", action="store_true", help="Every environment found."),
            Arg("--full", action="store_true", help="Also compare each file's sha256."),
            JSON,
        ),
    ),
    Command(
        "repair",
        "verify:repair",
        "Install again exactly the packages that lost files (same builds), journaled.",
        "From the package cache (a damaged cached copy is extracted again, a lost one downloaded\n"
        "again); PyPI packages through uv at their installed version. Re-running it finishes an\n"
        "interrupted repair.\n\n"
        "Example:  hpcenv repair myenv --dry-run\n          hpcenv repair myenv",
        (
            Arg("args", nargs="*", metavar="ENV", help="Environment name or path."),
            NAME,
            PREFIX,
            DRY_RUN.but(help="Show what would be done; do nothing."),
            Arg("--full", action="store_true", help="Check file contents too (sha256)."),
            JSON,
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
)

COMMANDS = (*COMMANDS, *TOOLS)

BY_NAME = {c.name: c for c in COMMANDS}
