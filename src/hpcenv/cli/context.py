"""What a command handler gets besides its arguments: the invocation's settings, and the ways
the CLI speaks (messages on stderr, JSON on stdout, the one confirmation rule)."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the hot path
if TYPE_CHECKING:
    from hpcenv.consent import Consent
    from hpcenv.settings import Settings
    from hpcenv.storage import Layout


class Context:
    """The global options of one invocation and the Settings built from them (once)."""

    def __init__(self, args: Namespace) -> None:
        storage = getattr(args, "storage", None)
        config = getattr(args, "config", None)
        self.storage = Path(storage) if storage else None
        self.config = Path(config) if config else None
        self.verbose: int = getattr(args, "verbose", 0) or 0
        self.quiet: bool = bool(getattr(args, "quiet", False))
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        """The one Settings object of this invocation."""
        if self._settings is None:
            from hpcenv.settings import load_settings

            self._settings = load_settings(storage=self.storage, config=self.config)
        return self._settings

    def layout(self) -> Layout:
        from hpcenv.storage import layout_from

        return layout_from(self.settings())

    def info(self, message: str) -> None:
        """A human message on stderr (never stdout: it may be eval'ed), unless --quiet."""
        if not self.quiet:
            print(message, file=sys.stderr)

    def waiting(self, pid: str) -> None:
        """Said while another hpcenv holds the storage lock."""
        self.info(f"waiting for another hpcenv (pid {pid}) to finish...")

    @property
    def progress(self) -> bool:
        """Progress bars: on a terminal, unless --quiet."""
        return sys.stderr.isatty() and not self.quiet

    def agree(self, consent: Consent, yes: bool) -> bool:
        """The one confirmation rule: --yes agrees; on a terminal the user is asked (after the
        details); without one it is a refusal (RefusedError, exit 2, nothing changed). False
        when the user says no."""
        if yes:
            return True
        for line in consent.details:
            self.info(line)
        if not sys.stdin.isatty():
            from hpcenv.errors import RefusedError

            raise RefusedError(consent.refusal, hint=consent.hint)
        return ask(consent.question, default=False)


def ask(question: str, *, default: bool) -> bool:
    """A yes/no question on the terminal (stderr), the answer read from stdin."""
    choices = "[Y/n]" if default else "[y/N]"
    while True:
        print(f"{question} {choices}: ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:  # end of input: the default, as a closed terminal would
            return default
        answer = answer.strip().lower()
        if not answer:
            return default
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def warn(message: str) -> None:
    print(f"hpcenv: warning: {message}", file=sys.stderr)


def emit_json(command: str, result: object) -> None:
    from hpcenv.report import dumps

    print(dumps(command, result))
