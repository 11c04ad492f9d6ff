"""The error hierarchy, mapped to exit codes in one place.

Core modules raise these; only the CLI turns them into a message on stderr and an exit code.
Every message says what happened and, in ``hint``, the command or step that fixes it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed; state on disk is consistent
EXIT_USAGE = 2  # bad input or refused; nothing was changed


class HpcenvError(Exception):
    """Base of every error hpcenv reports to the user."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and its hint on one line, as the CLI prints it."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text


class UsageError(HpcenvError):
    """Bad input: a name, a flag, a spec, a path. Nothing was changed."""

    exit_code = EXIT_USAGE


class RefusedError(HpcenvError):
    """The input is well formed but acting on it would be unsafe. Nothing was changed."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration file is invalid (names the file, line and key)."""


class OperationError(HpcenvError):
    """The operation started and failed; what is on disk is consistent (finished or rolled back)."""

    exit_code = EXIT_FAILED


class LockedError(RefusedError):
    """Another hpcenv process holds the storage lock."""
