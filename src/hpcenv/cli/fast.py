"""The hot path: `hpcenv activate NAME [--shell S]` without Typer (whose import pulls in
pydantic, ~70 ms) and without Rich or rattler. Anything it does not recognise (help, global
options) returns None and goes through the full CLI, which behaves the same."""

from __future__ import annotations

import sys


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

    settings = load_settings()
    env = resolve_for_use(layout_from(settings), name)
    sys.stdout.write(
        activation_script(
            env.prefix,
            name=env.name or str(env.prefix),
            shell=shell or default_shell(),
            no_user_site=settings.no_user_site,
        )
    )
    return 0
