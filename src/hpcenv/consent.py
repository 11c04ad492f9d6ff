"""The one confirmation rule: a core function that needs the user's consent says so with a
`Consent`; the CLI asks on a terminal, or, without one, refuses (exit 2, nothing changed)
unless --yes was given. Nothing in the core prompts.

`hpcenv setup` is the one deliberate exception: it moves rather than deletes, so without a
terminal it proceeds without --yes (on a terminal it still shows the plan and asks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Consent:
    """What the user must agree to before the command goes on."""

    question: str  # asked on a terminal ("Delete environment x?")
    refusal: str  # the error without a terminal or --yes ("... needs confirmation")
    hint: str  # how to agree without a terminal ("re-run with --yes")
    details: tuple[str, ...] = ()  # shown (on stderr) before asking or refusing
