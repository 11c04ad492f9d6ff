"""The hot path: `hpcenv activate NAME [--shell S]` without Typer (whose import pulls in
pydantic, ~70 ms) and without Rich or rattler. Anything it does not recognise (help, global
options) returns None and goes through the full CLI, which behaves the same."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def activate(args: list[str]) -> int | None:
    name = shell = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--shell" and rest:
            shell = rest.pop(0)
        elif arg.startswith("--shell="):
            shell = arg.split("=", 1)[1]
        elif arg.startswith("-") or name is not None:
            return None
        else:
            name = arg
    if name is None:
        return None
    from hpcenv.activate import activation_script
    from hpcenv.cli.app_shell import default_shell
    from hpcenv.settings import load_settings
    from hpcenv.storage import layout_from
    from hpcenv.trust import resolve_for_use

    shell = default_shell() if shell is None else shell
    with eval_fails_on_error():
        settings = load_settings()
        env = resolve_for_use(layout_from(settings), name)
        sys.stdout.write(
            activation_script(
                env.prefix,
                name=env.name or str(env.prefix),
                shell=shell,
                no_user_site=settings.no_user_site,
            )
        )
    hint_on_a_terminal(name, shell)
    return 0


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


_EVAL = {
    "fish": "hpcenv activate {} --shell fish | source",
    "tcsh": 'eval "`hpcenv activate {} --shell tcsh`"',
}


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
