"""The command table, continued (`cli.table` holds the first part and the whole): jobs,
kernels, disk, the site's package caches, sharing, and hpcenv's own tools."""

from __future__ import annotations

from hpcenv.cli.options import (
    CHANNEL,
    CUDA,
    DRY_RUN,
    ENV,
    ENV_SELECT,
    JOB,
    JOB_COMMAND,
    JSON,
    LONG_PREFIX,
    NAME,
    PREFIX,
    YES,
    Arg,
    Command,
)

TOOLS: tuple[Command, ...] = (
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
        "image",
        "image:image",
        "Turn an env into an image env: one squashfs file in storage, mounted where it runs.",
        "Its packages are installed afresh at a node-local mount path and packed into one\n"
        "squashfs file, which replaces the env's directory tree in storage (the tree is\n"
        "deleted). Run it while nothing runs from the env.\n\n"
        'Example:  hpcenv image myenv --yes && hpcenv run myenv -- python -c "import numpy"',
        (
            *ENV_SELECT,
            DRY_RUN.but(help="Say what would happen; change nothing."),
            Arg(
                "--force",
                action="store_true",
                help="Drop files that no package accounts for (they are listed).",
            ),
            YES.but(help="Do not ask before deleting the tree."),
            JSON,
        ),
    ),
    Command(
        "umount",
        "image:umount",
        "Unmount image envs on this node (those of ENV, or all of yours) that nothing uses.",
        "A running `hpcenv run` or job keeps its mount. Mounts whose squashfuse died are\n"
        "cleaned. Exit status 1 when a mount is in use.\n\n"
        "Example:  hpcenv umount myenv",
        (
            ENV.but(help="Image env name or path (default: all of yours)."),
            NAME,
            PREFIX,
            JSON,
        ),
    ),
    Command(
        "kernel",
        "kernel:kernel",
        "Make an environment a Jupyter kernel that starts inside the activated env.",
        "For JupyterHub and Open OnDemand: the site's modules and etc/conda/activate.d scripts\n"
        "run, no user site-packages, no `conda init` needed. The env needs ipykernel.\n\n"
        'Example:  hpcenv kernel myenv                 # then pick "Python (hpcenv: myenv)"\n'
        '          hpcenv kernel myenv --env OMP_NUM_THREADS=4 --display-name "My project"\n'
        "          hpcenv kernel --list\n"
        "          hpcenv kernel myenv --remove",
        (
            *ENV_SELECT,
            Arg(
                "--display-name",
                metavar="TEXT",
                help="What Jupyter's launcher shows (default: Python (hpcenv: NAME)).",
            ),
            Arg(
                "--env",
                dest="env_var",
                action="append",
                metavar="KEY=VALUE",
                help="Set for the kernel before the env activates (repeatable).",
            ),
            Arg("--list", dest="list_", action="store_true", help="List the kernels hpcenv wrote."),
            Arg("--remove", action="store_true", help="Remove the kernel(s) of this env."),
            JSON,
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
        "cache",
        "cache:cache",
        "The site's read-only package caches: `cache fill SPEC...` (admins), `cache list`.",
        "fill: put packages (and their dependencies) into a site package cache, each one whole\n"
        "before it appears, readable by everyone and writable by no one else; run it as root or\n"
        "as the site config's `package_cache_owner`. list: the site package caches (used or why\n"
        "not, size, packages) and your own cache.\n\n"
        "Example:  hpcenv cache fill pytorch numpy -c conda-forge\n"
        '          hpcenv cache fill "pytorch * *cuda*" --cuda 12.4 --to /apps/hpcenv/pkgs\n'
        "          hpcenv cache list --json | jq '.result.layers[] | {path, trusted, packages}'",
        (
            Arg("action", choices=("fill", "list"), help="fill (admins) or list."),
            Arg(
                "specs", nargs="*", default=[], metavar="SPEC", help="fill: specs (as for create)."
            ),
            CHANNEL,
            Arg(
                "--to",
                metavar="DIR",
                help="fill: the layer to fill (default: the first of package_caches).",
            ),
            CUDA.but(help="fill: solve for GPU nodes with this CUDA version."),
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
