"""`hpcenv run NAME -- CMD`: replace this process with the command, inside the env.

exec, not a child: the command's exit code is ours, and signals sent to this process reach
the command itself, with stdin and stdout untouched. When the env has activate.d scripts, the
command runs through the env's static activation script in bash, as conda sources them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hpcenv.activate import ensure_static_script, shlvl
from hpcenv.errors import UsageError
from hpcenv.settings import Settings
from hpcenv.storage import Layout


def env_vars(
    prefix: Path, name: str, environ: Mapping[str, str] | None = None, no_user_site: bool = True
) -> dict[str, str]:
    """The activated environment as a dict (for `hpcenv run` and subprocesses)."""
    env = dict(os.environ if environ is None else environ)
    path = env.get("PATH")
    env["PATH"] = f"{prefix}/bin" + (f":{path}" if path else "")
    env["CONDA_PREFIX"] = str(prefix)
    env["CONDA_DEFAULT_ENV"] = name
    env["CONDA_SHLVL"] = str(shlvl(env.get("CONDA_SHLVL")) + 1)
    if no_user_site:
        env["PYTHONNOUSERSITE"] = "1"
    return env


def _has_hooks(prefix: Path) -> bool:
    try:
        return any(n.endswith(".sh") for n in os.listdir(prefix / "etc" / "conda" / "activate.d"))
    except OSError:
        return False


def run_in_env(
    prefix: Path,
    name: str,
    argv: list[str],
    *,
    state_dir: Path,
    no_user_site: bool = True,
) -> int:
    """Replace this process with `argv` inside the env (`hpcenv run NAME -- CMD...`).

    exec, not a child: the command's exit code is ours, and signals sent to this process
    reach the command itself, with stdin and stdout untouched. When the env has activate.d
    scripts, the command runs through the static script (made if missing) in bash, as conda
    sources them, so bash syntax in them works. Returns only on error.
    """
    import shutil

    if not argv:
        raise UsageError("no command given", hint="hpcenv run NAME -- CMD [ARGS...]")
    env = env_vars(prefix, name, no_user_site=no_user_site)
    if shutil.which(argv[0], path=env["PATH"]) is None:
        raise UsageError(f"command not found in {name} or on PATH: {argv[0]}")
    if _has_hooks(prefix):
        static = ensure_static_script(prefix, name, state_dir, no_user_site=no_user_site)
        shell = shutil.which("bash") or "/bin/sh"
        env = dict(os.environ)
        argv = [shell, "-c", '. "$0" && exec "$@"', str(static), *argv]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise UsageError(f"cannot run {argv[0]}: {exc.strerror}") from None
    return 127


def run_command(layout: Layout, settings: Settings, env: str, argv: list[str]) -> int:
    """`hpcenv run`: the env checked for use (`trust.resolve_for_use`), then `argv` (a
    leading `--` dropped) exec'ed inside it. Returns only on error."""
    from hpcenv.trust import resolve_for_use

    usable = resolve_for_use(layout, env)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return run_in_env(
        usable.prefix,
        usable.name or str(usable.prefix),
        argv,
        state_dir=layout.state_dir,
        no_user_site=settings.no_user_site,
    )
