"""Which environment a command's arguments name: `-n NAME` / `-p PREFIX` as in conda, else its
first word; for commands that add packages, the active env ($CONDA_PREFIX) when the first word
is not an env."""

from __future__ import annotations

import os
from pathlib import Path

from hpcenv.cli.context import Context
from hpcenv.errors import UsageError


def pick_env(
    ctx: Context,
    args: list[str] | None,
    name: str | None,
    prefix: str | None,
    *,
    specs_follow: bool = True,
    use_active: bool = True,
) -> tuple[str | None, list[str]]:
    """The env a command acts on (a name or an absolute path) and the other arguments.

    `-n NAME` / `-p PREFIX` name it, as in conda; otherwise the first argument does when it
    names an env (or always, when no specs follow); otherwise, with `use_active`, the active
    env ($CONDA_PREFIX), said on stderr. None when nothing names one."""
    args = list(args or [])
    if name is not None and prefix is not None:
        raise UsageError("give -n NAME or -p PREFIX, not both")
    if name is not None:
        return name, args
    if prefix is not None:
        return os.path.abspath(os.path.expanduser(str(prefix))), args
    if args and (not specs_follow or _names_env(ctx, args[0])):
        return args[0], args[1:]
    active = os.environ.get("CONDA_PREFIX") if use_active else None
    if active:
        from hpcenv.registry import is_env

        if is_env(Path(active)):
            ctx.info(f"using the active environment {active} ($CONDA_PREFIX)")
            return active, args
    if args:
        return args[0], args[1:]
    return None, args


def _names_env(ctx: Context, word: str) -> bool:
    from hpcenv.errors import HpcenvError
    from hpcenv.registry import resolve

    try:
        resolve(ctx.layout(), word)
    except HpcenvError:
        return False
    return True


def env_arg(
    ctx: Context,
    command: str,
    positional: str | None,
    name: str | None,
    prefix: str | None,
    rest: list[str] | None = None,
) -> tuple[str, list[str]]:
    """For commands whose first argument is the env (activate, run, jobscript, ...): -n/-p
    take its place, and what was read as the env is then the first of `rest` (the command)."""
    args = ([positional] if positional is not None else []) + list(rest or [])
    env, others = pick_env(ctx, args, name, prefix, specs_follow=False, use_active=False)
    env = require_env(env, command)
    if rest is None and others:
        raise UsageError(f"unexpected argument {others[0]!r}", hint="give one environment")
    return env, others


def require_env(env: str | None, command: str) -> str:
    if env is None:
        raise UsageError(
            "no environment given",
            hint=f"hpcenv {command} NAME (or -n NAME, -p PREFIX, or activate one first)",
        )
    return env
