"""The Typer application, its global options, and helpers shared by the command modules."""

from __future__ import annotations

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


# Command modules register themselves on `app` when imported.
from hpcenv.cli import (  # noqa: E402,F401
    activate_cmd,
    envs_cmd,
    hygiene_cmd,
    jobs_cmd,
    modulefile_cmd,
    selftest_cmd,
    setup_cmd,
    share_cmd,
)
