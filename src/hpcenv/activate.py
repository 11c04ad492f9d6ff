"""Activation without conda and without touching any startup file.

`activation_script` renders what `eval "$(hpcenv activate NAME)"` runs; `static_script` the
POSIX script kept at `PREFIX/etc/hpcenv/activate.sh` that job scripts source with no Python
process at all. Both prepend `PREFIX/bin` to PATH, set `CONDA_PREFIX`, `CONDA_DEFAULT_ENV`,
`CONDA_SHLVL` and (by default) `PYTHONNOUSERSITE=1`, source the env's `etc/conda/activate.d`
scripts as conda does, and define `deactivate`, which runs `deactivate.d` and restores PATH
and every variable it touched byte for byte (unset stays unset, empty stays empty).

Activating an env while another hpcenv env is active deactivates the first (no stacking).
This module imports neither rattler nor rich: activation must start fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hpcenv import shell as sh
from hpcenv.errors import UsageError

TOUCHED = ("CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL", "PYTHONNOUSERSITE")
_EXT = {"bash": "sh", "zsh": "sh", "sh": "sh", "fish": "fish", "tcsh": "csh"}


def hook_scripts(prefix: Path, kind: str, shell: str, look_in: Path | None = None) -> list[str]:
    """The env's activate.d / deactivate.d scripts for `shell`, sorted as conda runs them.
    `look_in` is where the env is now, if that is not yet `prefix` (a create in progress)."""
    sub = Path("etc") / "conda" / f"{kind}.d"
    try:
        names = sorted(
            n for n in os.listdir((look_in or prefix) / sub) if n.endswith("." + _EXT[shell])
        )
    except OSError:
        return []
    return [str(prefix / sub / n) for n in names]


def env_vars(
    prefix: Path, name: str, environ: Mapping[str, str] | None = None, no_user_site: bool = True
) -> dict[str, str]:
    """The activated environment as a dict (for `hpcenv run` and subprocesses)."""
    env = dict(os.environ if environ is None else environ)
    path = env.get("PATH")
    env["PATH"] = f"{prefix}/bin" + (f":{path}" if path else "")
    env["CONDA_PREFIX"] = str(prefix)
    env["CONDA_DEFAULT_ENV"] = name
    env["CONDA_SHLVL"] = str(_shlvl(env.get("CONDA_SHLVL")) + 1)
    if no_user_site:
        env["PYTHONNOUSERSITE"] = "1"
    return env


def _shlvl(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _values(prefix: Path, name: str, no_user_site: bool) -> dict[str, str]:
    values = {"CONDA_PREFIX": str(prefix), "CONDA_DEFAULT_ENV": name}
    if no_user_site:
        values["PYTHONNOUSERSITE"] = "1"
    return values


def _check(prefix: Path, name: str) -> None:
    for value in (str(prefix), name):
        if "\n" in value or "\x00" in value:
            raise UsageError(f"{value!r} contains a newline; it cannot be activated safely")


def activation_script(
    prefix: Path,
    *,
    name: str,
    shell: str = "bash",
    no_user_site: bool = True,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Code for `eval` in bash/zsh (`| source` in fish, eval of backticks in tcsh)."""
    sh.check_shell(shell)
    _check(prefix, name)
    if shell == "fish":
        return _fish(prefix, name, no_user_site)
    if shell == "tcsh":
        return _tcsh(prefix, name, no_user_site, os.environ if environ is None else environ)
    return _posix(prefix, name, no_user_site, shell)


def static_script(
    prefix: Path, *, name: str, no_user_site: bool = True, look_in: Path | None = None
) -> str:
    """The POSIX script for `PREFIX/etc/hpcenv/activate.sh` (sourced by job scripts)."""
    _check(prefix, name)
    header = (
        "# Written by hpcenv; activates this environment without Python or conda.\n"
        "# Use: . THIS_FILE   (then `deactivate` to undo)\n"
    )
    return header + _posix(prefix, name, no_user_site, "sh", look_in)


def write_static_script(prefix: Path, name: str, no_user_site: bool = True) -> Path:
    path = prefix / "etc" / "hpcenv" / "activate.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".activate.sh.tmp-{os.getpid()}")
    tmp.write_text(static_script(prefix, name=name, no_user_site=no_user_site))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def _posix(
    prefix: Path, name: str, no_user_site: bool, shell: str, look_in: Path | None = None
) -> str:
    q = lambda v: sh.quote("sh", v)  # noqa: E731 - bash, zsh and sh read the same quoting
    lines = ['if [ -n "${_HPCENV_ACTIVE:-}" ]; then deactivate; fi', "_HPCENV_ACTIVE=1"]
    lines.append('_HPCENV_SAVED_PATH="${PATH-}"')
    for v in TOUCHED:
        lines.append(
            f'if [ -n "${{{v}+x}}" ]; then _HPCENV_SET_{v}=1; _HPCENV_SAVED_{v}="${v}"; '
            f"else _HPCENV_SET_{v}=0; fi"
        )
    # deactivate: hooks first (they may read CONDA_PREFIX), then restore
    body = [f"  . {q(s)}" for s in hook_scripts(prefix, "deactivate", "sh", look_in)]
    body.append('  PATH="$_HPCENV_SAVED_PATH"; export PATH')
    for v in TOUCHED:
        body.append(
            f'  if [ "$_HPCENV_SET_{v}" = 1 ]; then {v}="$_HPCENV_SAVED_{v}"; export {v}; '
            f"else unset {v}; fi"
        )
        body.append(f"  unset _HPCENV_SET_{v} _HPCENV_SAVED_{v}")
    body.append("  unset _HPCENV_ACTIVE _HPCENV_SAVED_PATH")
    body.append("  unset -f deactivate")
    body.append("  hash -r 2>/dev/null || true")
    lines.append("deactivate() {\n" + "\n".join(body) + "\n}")
    lines.append(f'PATH={q(str(prefix) + "/bin")}"${{PATH:+:$PATH}}"; export PATH')
    for key, value in _values(prefix, name, no_user_site).items():
        lines.append(f"{key}={q(value)}; export {key}")
    lines.append("CONDA_SHLVL=$(( ${CONDA_SHLVL:-0} + 1 )); export CONDA_SHLVL")
    lines += [f". {q(s)}" for s in hook_scripts(prefix, "activate", "sh", look_in)]
    lines.append("hash -r 2>/dev/null || true")
    return "\n".join(lines) + "\n"


def _fish(prefix: Path, name: str, no_user_site: bool) -> str:
    q = lambda v: sh.quote("fish", v)  # noqa: E731
    lines = [
        "if set -q _HPCENV_ACTIVE; and functions -q deactivate; deactivate; end",
        "set -g _HPCENV_ACTIVE 1",
    ]
    lines.append("set -g _HPCENV_SAVED_PATH $PATH")
    for v in TOUCHED:
        lines.append(
            f"if set -q {v}; set -g _HPCENV_SET_{v} 1; set -g _HPCENV_SAVED_{v} ${v}; "
            f"else; set -g _HPCENV_SET_{v} 0; end"
        )
    body = [f"  source {q(s)}" for s in hook_scripts(prefix, "deactivate", "fish")]
    body.append("  set -gx PATH $_HPCENV_SAVED_PATH")
    for v in TOUCHED:
        body.append(
            f'  if test "$_HPCENV_SET_{v}" = 1; set -gx {v} $_HPCENV_SAVED_{v}; else; set -e {v}; end'
        )
        body.append(f"  set -e _HPCENV_SET_{v} _HPCENV_SAVED_{v}")
    body.append("  set -e _HPCENV_ACTIVE _HPCENV_SAVED_PATH")
    body.append("  functions -e deactivate")
    lines.append("function deactivate\n" + "\n".join(body) + "\nend")
    lines.append(f"set -gx PATH {q(str(prefix) + '/bin')} $PATH")
    for key, value in _values(prefix, name, no_user_site).items():
        lines.append(f"set -gx {key} {q(value)}")
    lines.append(
        "if set -q CONDA_SHLVL; set -gx CONDA_SHLVL (math $CONDA_SHLVL + 1); else; set -gx CONDA_SHLVL 1; end"
    )
    lines += [f"source {q(s)}" for s in hook_scripts(prefix, "activate", "fish")]
    return "\n".join(lines) + "\n"


def _tcsh(prefix: Path, name: str, no_user_site: bool, environ: Mapping[str, str]) -> str:
    """Straight-line tcsh: `eval "`...`"` joins lines, so every statement ends with ';' and
    there are no if-blocks; the values to restore are read here, from the shell's exported
    environment, and kept in exported variables for `deactivate` (an alias that asks hpcenv
    for the restoring code: tcsh aliases cannot hold functions)."""
    q = lambda v: sh.quote("tcsh", v)  # noqa: E731
    lines = []
    if "_HPCENV_ACTIVE" in environ:
        lines.append(tcsh_deactivation(environ).rstrip("\n"))
        environ = _restored(environ)
    lines += ["setenv _HPCENV_ACTIVE 1", f"setenv _HPCENV_SAVED_PATH {q(environ.get('PATH', ''))}"]
    for v in TOUCHED:
        saved = environ.get(v)
        lines.append(
            f"setenv _HPCENV_SAVED_{v} {q(saved)}"
            if saved is not None
            else f"unsetenv _HPCENV_SAVED_{v}"
        )
    path = environ.get("PATH")
    lines.append(f"setenv PATH {q(str(prefix) + '/bin' + (':' + path if path else ''))}")
    for key, value in _values(prefix, name, no_user_site).items():
        lines.append(f"setenv {key} {q(value)}")
    lines.append(f"setenv CONDA_SHLVL {_shlvl(environ.get('CONDA_SHLVL')) + 1}")
    lines.append(f"setenv _HPCENV_PREFIX {q(str(prefix))}")
    lines += [f"source {q(s)}" for s in hook_scripts(prefix, "activate", "tcsh")]
    lines.append("alias deactivate 'eval \"`hpcenv deactivate --shell tcsh`\"'")
    lines.append("rehash")
    return "".join(f"{line};\n" for line in lines)


def _restored(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment as it will be after deactivating the active env."""
    env = {k: v for k, v in environ.items() if not k.startswith("_HPCENV_")}
    env["PATH"] = environ.get("_HPCENV_SAVED_PATH", env.get("PATH", ""))
    for v in TOUCHED:
        saved = environ.get(f"_HPCENV_SAVED_{v}")
        if saved is None:
            env.pop(v, None)
        else:
            env[v] = saved
    return env


def tcsh_deactivation(environ: Mapping[str, str]) -> str:
    """Restoring code for tcsh, from the saved values activation exported."""
    q = lambda v: sh.quote("tcsh", v)  # noqa: E731
    if "_HPCENV_ACTIVE" not in environ:
        return "echo 'hpcenv: no hpcenv environment is active';\n"
    prefix = Path(environ.get("_HPCENV_PREFIX", ""))
    lines = (
        [f"source {q(s)}" for s in hook_scripts(prefix, "deactivate", "tcsh")]
        if prefix.name
        else []
    )
    lines.append(f"setenv PATH {q(environ.get('_HPCENV_SAVED_PATH', ''))}")
    for v in TOUCHED:
        saved = environ.get(f"_HPCENV_SAVED_{v}")
        lines.append(f"setenv {v} {q(saved)}" if saved is not None else f"unsetenv {v}")
        lines.append(f"unsetenv _HPCENV_SAVED_{v}")
    lines += ["unsetenv _HPCENV_ACTIVE", "unsetenv _HPCENV_SAVED_PATH", "unsetenv _HPCENV_PREFIX"]
    lines += ["unalias deactivate", "rehash"]
    return "".join(f"{line};\n" for line in lines)


def run_in_env(prefix: Path, name: str, argv: list[str], *, no_user_site: bool = True) -> int:
    """Replace this process with `argv` inside the env (`hpcenv run NAME -- CMD...`).

    exec, not a child: the command's exit code is ours, and signals sent to this process
    reach the command itself, with stdin and stdout untouched. With activate.d scripts the
    command runs through the static script in sh so they take effect. Returns only on error.
    """
    import shutil

    if not argv:
        raise UsageError("no command given", hint="hpcenv run NAME -- CMD [ARGS...]")
    env = env_vars(prefix, name, no_user_site=no_user_site)
    if shutil.which(argv[0], path=env["PATH"]) is None:
        raise UsageError(f"command not found in {name} or on PATH: {argv[0]}")
    static = prefix / "etc" / "hpcenv" / "activate.sh"
    if hook_scripts(prefix, "activate", "sh") and static.is_file():
        env = dict(os.environ)
        argv = ["/bin/sh", "-c", '. "$0" && exec "$@"', str(static), *argv]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise UsageError(f"cannot run {argv[0]}: {exc.strerror}") from None
    return 127
