"""Shell text rendered from data: every value quoted for the shell that will read it.

sh, bash, zsh:  shlex.quote (single quotes; a ' becomes '"'"')
fish:           single quotes; inside them fish only interprets \\\\ and \\'
tcsh:           single quotes; ! and newlines are rejected (csh history and line rules)
"""

from __future__ import annotations

import re
import shlex

from hpcenv.errors import UsageError

SHELLS = ("bash", "zsh", "fish", "tcsh", "sh")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_shell(shell: str) -> str:
    if shell not in SHELLS:
        raise UsageError(
            f"unsupported shell {shell!r}", hint=f"use one of: {', '.join(SHELLS[:4])}"
        )
    return shell


def quote(shell: str, value: str) -> str:
    """`value` as one word that `shell` reads back byte for byte."""
    if "\x00" in value:
        raise UsageError("a value contains a NUL byte, which no shell can hold")
    if shell == "fish":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if shell == "tcsh":
        if "!" in value or "\n" in value:
            raise UsageError(
                f"{value!r} contains '!' or a newline, which tcsh cannot quote safely",
                hint="use bash, zsh or fish, or a path without them",
            )
        return "'" + value.replace("'", "'\\''") + "'"
    return shlex.quote(value)


def var(name: str) -> str:
    """An environment variable's name, checked (UsageError if it is not one)."""
    if not _VAR.match(name):
        raise UsageError(f"invalid environment variable name {name!r}")
    return name


def command(words: list[str]) -> str:
    """A POSIX command line, every word quoted."""
    return " ".join(shlex.quote(w) for w in words)
