"""Which shell to speak when --shell is not given (shared by the fast path and the CLI)."""

from __future__ import annotations

import os

SUPPORTED = ("bash", "zsh", "fish", "tcsh")


def default_shell() -> str:
    base = os.path.basename(os.environ.get("SHELL", "bash"))
    return base if base in SUPPORTED else "bash"
