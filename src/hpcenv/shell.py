"""Shell text rendered from data: every value quoted for the shell that will read it.

sh, bash, zsh:  shlex.quote (single quotes; a ' becomes '"'"')
fish:           single quotes; inside them fish only interprets \\\\ and \\'
tcsh:           single quotes; ! and newlines are rejected (csh history and line rules)
"""

from __future__ import annotations

import shlex

from hpcenv.errors import UsageError

SHELLS = ("bash", "zsh", "fish", "tcsh", "sh")


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
