"""`hpcenv activate` (code for eval) and the hidden `hpcenv deactivate` (tcsh's alias).

The hot path of the CLI: it imports neither rattler nor rich."""

from __future__ import annotations

import contextlib
import os
import sys
from argparse import Namespace
from collections.abc import Iterator

from hpcenv.cli.context import Context
from hpcenv.cli.envarg import env_arg

SHELLS = ("bash", "zsh", "fish", "tcsh")
_EVAL = {
    "fish": "hpcenv activate {} --shell fish | source",
    "tcsh": 'eval "`hpcenv activate {} --shell tcsh`"',
}


def activate(ctx: Context, args: Namespace) -> None:
    from hpcenv.activate import activation_script
    from hpcenv.trust import resolve_for_use

    shell = default_shell() if args.shell is None else args.shell
    with eval_fails_on_error():
        env, _ = env_arg(ctx, "activate", args.env, args.name, args.prefix)
        settings = ctx.settings()
        usable = resolve_for_use(ctx.layout(), env)
        sys.stdout.write(
            activation_script(
                usable.prefix,
                name=usable.name or str(usable.prefix),
                shell=shell,
                no_user_site=settings.no_user_site,
            )
        )
    hint_on_a_terminal(env, shell)


def deactivate(ctx: Context, args: Namespace) -> None:
    from hpcenv.activate import tcsh_deactivation

    sys.stdout.write(tcsh_deactivation(os.environ))


def default_shell() -> str:
    """The shell to speak when --shell is not given: $SHELL's, if hpcenv speaks it."""
    base = os.path.basename(os.environ.get("SHELL", "bash"))
    return base if base in SHELLS else "bash"


@contextlib.contextmanager
def eval_fails_on_error() -> Iterator[None]:
    """On an error, `false` on stdout besides the message on stderr: the eval of what we print
    then fails in every shell (an empty string would succeed, and a `set -e` script would go
    on with the wrong python)."""
    from hpcenv.errors import HpcenvError

    try:
        yield
    except HpcenvError:
        sys.stdout.write("false\n")
        sys.stdout.flush()
        raise


def hint_on_a_terminal(name: str, shell: str) -> None:
    """Printed to a terminal, the code activates nothing: say how to use it, in one line."""
    try:
        if not os.isatty(sys.stdout.fileno()):
            return
    except (OSError, ValueError):
        return
    from hpcenv.shell import quote

    word = quote("sh" if shell not in _EVAL else shell, name)
    how = _EVAL.get(shell, 'eval "$(hpcenv activate {})"').format(word)
    sys.stdout.flush()
    print(f"hpcenv: this code activates nothing on its own; run: {how}", file=sys.stderr)
