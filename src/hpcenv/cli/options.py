"""Commands and arguments as the command table writes them, and the option groups several
commands share (each written once here): the global options, the env selection, --json,
--dry-run, --yes, the job options of jobscript and submit. Plain classes: imported by every
invocation."""

from __future__ import annotations


class Arg:
    """One option or positional argument, in argparse's words (`flags`, then keywords)."""

    __slots__ = ("flags", "options")

    def __init__(self, *flags: str, **options: object) -> None:
        self.flags = flags
        self.options = options

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    def but(self, **options: object) -> Arg:
        """The same argument with some keywords changed (a command-specific help text)."""
        return Arg(*self.flags, **{**self.options, **options})


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


GLOBAL = (
    Arg(
        "--storage",
        metavar="DIR",
        help="Storage root (default: $HPCENV_STORAGE, config, $global_storage).",
    ),
    Arg("--config", metavar="FILE", help="User config file to read instead of the default."),
    Arg("-v", "--verbose", action="count", default=0, help="More detail."),
    Arg("-q", "--quiet", action="store_true", help="Only results and errors."),
)
VERSION = Arg("--version", action="store_true", help="Print the version.")

NAME = Arg("-n", "--name", metavar="NAME", help="Environment name (as conda's -n).")
PREFIX = Arg("-p", "--prefix", metavar="PREFIX", help="Environment path (as conda's -p).")
LONG_PREFIX = Arg("--prefix", metavar="PREFIX", help="Environment path (as conda's -p).")
ENV = Arg("env", nargs="?", metavar="ENV", help="Environment name or path.")
ENV_SELECT = (ENV, NAME, PREFIX)  # the env as a word, or -n NAME / -p PREFIX
JSON = Arg("--json", dest="json_out", action="store_true", help="Machine-readable output.")
DRY_RUN = Arg("--dry-run", action="store_true", help="Show the plan; change nothing.")
YES = Arg("--yes", "-y", action="store_true", help="Do not ask; agree to what the command asks.")
CHANNEL = Arg("-c", "--channel", action="append", metavar="CHANNEL", help="Channel (repeatable).")
GPU = Arg("--gpu", action="store_true", help="Require CUDA builds (for GPU nodes).")
CUDA = Arg("--cuda", metavar="VER", help="CUDA version of the GPU nodes, e.g. 12.4.")

JOB = (
    Arg("--time", metavar="T", help="Wall time, e.g. 02:00:00."),
    Arg("--mem", metavar="M", help="Memory per node, e.g. 16G."),
    Arg("--cpus", type=int, metavar="N", help="CPUs per task."),
    Arg("--gpus", type=int, metavar="N", help="GPUs (renders the site's GPU partition and gres)."),
    Arg("--partition", "-p", metavar="P", help="Partition (default: the site's)."),
    Arg("--nodes", "-N", type=int, metavar="N", help="Nodes."),
    Arg("--array", metavar="SPEC", help="Job array, e.g. 0-9%%2."),
    Arg(
        "--output",
        "-o",
        metavar="FILE",
        help="Log file (default: STORAGE/hpcenv-logs/%%x-%%j.out).",
    ),
    Arg("--job-name", "-J", metavar="NAME", help="Job name (default: hpcenv-NAME)."),
    Arg("--stage", action="store_true", help="Copy the env to node-local disk first (many nodes)."),
    Arg(
        "--wrap",
        metavar="CMD",
        help="The command as one shell string, inserted as written, so the job's shell "
        "expands variables: --wrap 'python run.py \"$SLURM_ARRAY_TASK_ID\"'. Instead of -- CMD.",
    ),
)
JOB_COMMAND = Arg("command", nargs="*", metavar="CMD", help="The command (after --).")
