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
    from hpcenv.envs import resolve
    from hpcenv.settings import load_settings
    from hpcenv.site import check_trusted
    from hpcenv.storage import layout_from

    settings = load_settings()
    env_name, prefix = resolve(layout_from(settings), name)
    check_trusted(prefix)
    sys.stdout.write(
        activation_script(
            prefix,
            name=env_name or str(prefix),
            shell=default_shell() if shell is None else shell,
            no_user_site=settings.no_user_site,
        )
    )
    return 0
