"""The Typer application, its global options, and helpers shared by the command modules."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from hpcenv import __version__

app = typer.Typer(
    name="hpcenv",
    help="Safe, fast, reproducible Python environments on HPC clusters.\n\n"
    "Start with `hpcenv setup`, then `hpcenv create NAME python`.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Globals:
    storage: Path | None = None
    config: Path | None = None
    verbose: int = 0
    quiet: bool = False
    _settings: Any = None


def _version(value: bool) -> None:
    if value:
        print(f"hpcenv {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    storage: Path = typer.Option(
        None, "--storage", help="Storage root (default: $HPCENV_STORAGE, config, $global_storage)."
    ),
    config: Path = typer.Option(
        None, "--config", help="User config file to read instead of the default."
    ),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More detail."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only results and errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    ctx.obj = Globals(storage=storage, config=config, verbose=verbose, quiet=quiet)


def settings(ctx: typer.Context, storage: Path | None = None):
    """The one Settings object of this invocation (a command's --storage wins)."""
    from hpcenv.settings import load_settings

    g: Globals = ctx.obj or Globals()
    if g._settings is None or storage is not None:
        g._settings = load_settings(
            storage=storage or g.storage, config=g.config, verbose=g.verbose, quiet=g.quiet
        )
    return g._settings


def info(ctx: typer.Context, message: str) -> None:
    """A human message on stderr (never stdout: it may be eval'ed), unless --quiet."""
    g: Globals = ctx.obj or Globals()
    if not g.quiet:
        print(message, file=sys.stderr)


def warn(message: str) -> None:
    print(f"hpcenv: warning: {message}", file=sys.stderr)


def emit_json(command: str, result: Any) -> None:
    from hpcenv.report import dumps

    print(dumps(command, result))


def confirm(question: str, yes: bool) -> bool:
    """Ask on a terminal; without one, proceed only with --yes."""
    if yes:
        return True
    if not sys.stdin.isatty():
        from hpcenv.errors import UsageError

        raise UsageError(f"{question} needs confirmation", hint="re-run with --yes")
    return typer.confirm(question, default=False)


NAME_OPTION = typer.Option(None, "-n", "--name", help="Environment name (as conda's -n).")
PREFIX_OPTION = typer.Option(None, "-p", "--prefix", help="Environment path (as conda's -p).")
LONG_PREFIX_OPTION = typer.Option(None, "--prefix", help="Environment path (as conda's -p).")


def pick_env(
    ctx: typer.Context,
    args: list[str] | None,
    name: str | None,
    prefix: Path | None,
    *,
    specs_follow: bool = True,
    use_active: bool = True,
) -> tuple[str | None, list[str]]:
    """The env a command acts on (a name or an absolute path) and the other arguments.

    `-n NAME` / `-p PREFIX` name it, as in conda; otherwise the first argument does when it
    names an env (or always, when no specs follow); otherwise, with `use_active`, the active
    env ($CONDA_PREFIX), said on stderr. None when nothing names one."""
    from hpcenv.errors import UsageError

    args = list(args or [])
    if name is not None and prefix is not None:
        raise UsageError("give -n NAME or -p PREFIX, not both")
    if name is not None:
        return name, args
    if prefix is not None:
        return os.path.abspath(os.path.expanduser(str(prefix))), args
    if args and (not specs_follow or _names_env(ctx, args[0])):
        return args[0], args[1:]
    active = os.environ.get("CONDA_PREFIX") if use_active else None
    if active:
        from hpcenv.registry import is_env

        if is_env(Path(active)):
            info(ctx, f"using the active environment {active} ($CONDA_PREFIX)")
            return active, args
    if args:
        return args[0], args[1:]
    return None, args


def _names_env(ctx: typer.Context, word: str) -> bool:
    from hpcenv.errors import HpcenvError
    from hpcenv.registry import resolve
    from hpcenv.storage import layout_from

    try:
        resolve(layout_from(settings(ctx)), word)
    except HpcenvError:
        return False
    return True


def env_arg(
    ctx: typer.Context,
    positional: str | None,
    name: str | None,
    prefix: Path | None,
    rest: list[str] | None = None,
) -> tuple[str, list[str]]:
    """For commands whose first argument is the env (activate, run, jobscript, ...): -n/-p
    take its place, and what was read as the env is then the first of `rest` (the command)."""
    args = ([positional] if positional is not None else []) + list(rest or [])
    env, others = pick_env(ctx, args, name, prefix, specs_follow=False, use_active=False)
    env = require_env(env, ctx.command.name if ctx.command else "COMMAND")
    if rest is None and others:
        from hpcenv.errors import UsageError

        raise UsageError(f"unexpected argument {others[0]!r}", hint="give one environment")
    return env, others


def require_env(env: str | None, command: str) -> str:
    if env is None:
        from hpcenv.errors import UsageError

        raise UsageError(
            "no environment given",
            hint=f"hpcenv {command} NAME (or -n NAME, -p PREFIX, or activate one first)",
        )
    return env


# Command modules register themselves on `app` when imported.
from hpcenv.cli import (  # noqa: E402,F401
    activate_cmd,
    envs_cmd,
    hygiene_cmd,
    images_cmd,
    jobs_cmd,
    modulefile_cmd,
    selftest_cmd,
    setup_cmd,
    share_cmd,
)
