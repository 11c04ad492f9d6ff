"""The argparse parser, built from the command table (`cli.table`), and nothing else.

Only the command being run gets its sub-parser filled in (building all of them costs a few
milliseconds that `hpcenv activate` does not have); `--help`, an unknown command or no
command at all build every one. Either way a command is parsed by the very parser its table
entry builds. argparse's usage errors become our one line (`UsageError`, exit 2).

Global options (`--storage`, `--config`, `-v`, `-q`) go before the command, or after it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from hpcenv.cli.options import GLOBAL, VERSION, Arg
from hpcenv.cli.table import BY_NAME, COMMANDS, DESCRIPTION, PROG, Command


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised as hpcenv's one-line UsageError (exit 2).

    A command's own parser reads options and positionals intermixed (`install ENV --pip -r
    FILE six`), as the shells' users expect; not `run`, whose command is the rest (REMAINDER,
    which argparse cannot intermix)."""

    intermixed = False
    _mixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self.intermixed and not self._mixing:
            self._mixing = True  # parse_known_intermixed_args calls back here
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._mixing = False
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # type: ignore[override]
        from hpcenv.errors import UsageError

        raise UsageError(message, hint=f"see `{self.prog} --help`")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, told the width (argparse would import shutil, with bz2 and lzma,
    to find it, for every argument added: milliseconds `hpcenv activate` does not have)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=_width())


def _width() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(2).columns
    except (ValueError, OSError):
        columns = 80
    return max(columns - 2, 40)


def _add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, arg: Arg, **extra) -> None:
    parser.add_argument(*arg.flags, **{**arg.options, **extra})


def _globals_after(parser: argparse.ArgumentParser) -> None:
    """The global options once more, after the command; SUPPRESS keeps the values given
    before the command when they are not repeated."""
    group = parser.add_argument_group("global options")
    for arg in GLOBAL:
        _add(group, arg, default=argparse.SUPPRESS)


def _command_parser(subparsers, command: Command) -> None:
    listed = {} if command.hidden else {"help": command.help}  # no help: not listed
    sub = subparsers.add_parser(
        command.name,
        prog=f"{PROG} {command.name}",
        description=f"{command.help}\n\n{command.description}",
        formatter_class=_Formatter,
        **listed,
    )
    sub.intermixed = command.name != "run"
    sub.set_defaults(table_entry=command)  # not `command`: the dest of the job commands' CMD
    for arg in command.args:
        _add(sub, arg)
    _globals_after(sub)


def build(only: str | None = None) -> Parser:
    """The parser: every command, or with `only` (a known command's name) that one alone."""
    parser = Parser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=_Formatter,
        usage=f"{PROG} [OPTIONS] COMMAND [ARGS]...",
    )
    for arg in (*GLOBAL, VERSION):
        _add(parser, arg)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        if only is None or command.name == only:
            _command_parser(subparsers, command)
    return parser


def _command_word(args: Sequence[str]) -> str | None:
    """The command's name in `args` (after the global options), or None."""
    takes_value = {f for arg in GLOBAL if "metavar" in arg.options for f in arg.flags}
    skip = False
    for word in args:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word
        elif word == "--":
            return None
    return None


def parse(args: Sequence[str]) -> tuple[Command | None, argparse.Namespace]:
    """The command and its arguments; (None, globals) when no command is given. For a `tail`
    command other than `run`, what follows the first `--` is `args.tail` (the command to run,
    never read as options)."""
    args = list(args)
    word = _command_word(args)
    command = BY_NAME.get(word) if word is not None else None
    if word is not None and command is None:
        from hpcenv.errors import UsageError

        raise UsageError(f"no such command {word!r}", hint=f"see `{PROG} --help`")
    tail: list[str] = []
    if command is not None and command.tail and command.name != "run" and "--" in args:
        cut = args.index("--", args.index(word) + 1) if "--" in args[args.index(word) :] else None
        if cut is not None:
            args, tail = args[:cut], args[cut + 1 :]
    parser = build(command.name if command is not None else None)
    ns, extra = parser.parse_known_args(args)
    if extra:
        from hpcenv.errors import UsageError

        where = f"{PROG} {command.name}" if command is not None else PROG
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}", hint=f"see `{where} --help`")
    ns.tail = tail
    return getattr(ns, "table_entry", None), ns


def help_text() -> str:
    return build().format_help()
