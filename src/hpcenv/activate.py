"""Activation without conda and without touching any startup file.

`activation_script` renders what `eval "$(hpcenv activate NAME)"` runs; `static_script` the
POSIX script kept at `PREFIX/etc/hpcenv/activate.sh` that job scripts source with no Python
process at all. Both prepend `PREFIX/bin` to PATH, set `CONDA_PREFIX`, `CONDA_DEFAULT_ENV`,
`CONDA_SHLVL` and (by default) `PYTHONNOUSERSITE=1`, source the env's `etc/conda/activate.d`
scripts as conda does, and define `deactivate`, which runs `deactivate.d` and restores PATH
and every variable it touched byte for byte (unset stays unset, empty stays empty), and the
`deactivate` function defined before, if any (a venv's).

The hooks are found when the code runs (a loop over the directory, not a list written down
earlier), so an env changed by conda or mamba since activates as it is now; they run with
`errexit` and `nounset` off and the caller's options back afterwards, so `set -euo pipefail`
job scripts survive packages whose hooks read unset variables. A static script for an env
hpcenv did not make is created on demand (`ensure_static_script`).

Activating an env while another hpcenv env is active deactivates the first (no stacking).
This module imports neither rattler nor rich: activation must start fast.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from hpcenv import shell as sh
from hpcenv.errors import UsageError
from hpcenv.fsops import atomic_write

TOUCHED = ("CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL", "PYTHONNOUSERSITE")
_EXT = {"bash": "sh", "zsh": "sh", "sh": "sh", "fish": "fish", "tcsh": "csh"}


def hook_scripts(prefix: Path, kind: str, shell: str) -> list[str]:
    """The env's activate.d / deactivate.d scripts for `shell` as they are now, sorted as conda
    runs them (tcsh: its code is made when it runs)."""
    sub = Path("etc") / "conda" / f"{kind}.d"
    try:
        names = sorted(n for n in os.listdir(prefix / sub) if n.endswith("." + _EXT[shell]))
    except OSError:
        return []
    return [str(prefix / sub / n) for n in names]


def shlvl(value: str | None) -> int:
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
    return _posix(sh.quote("sh", str(prefix)), name, no_user_site, shell)


STATIC_MARK = "# hpcenv activate.sh v2: reads etc/conda/activate.d when sourced"


def static_script(prefix: Path, *, name: str, no_user_site: bool = True) -> str:
    """The POSIX script for `PREFIX/etc/hpcenv/activate.sh` (sourced by job scripts). It holds
    no list of hooks: it runs whatever `etc/conda/activate.d` holds when it is sourced, so an
    env changed since by conda or mamba activates as it is now."""
    _check(prefix, name)
    header = (
        "# Written by hpcenv; activates this environment without Python or conda.\n"
        f"{STATIC_MARK}\n"
        "# Use: . THIS_FILE   (then `deactivate` to undo)\n"
    )
    return header + _posix(sh.quote("sh", str(prefix)), name, no_user_site, "sh")


def posix_activation(prefix_word: str, *, name: str, no_user_site: bool = True) -> str:
    """Activation code for bash/sh whose prefix is the shell word `prefix_word` (already
    quoted, e.g. `"$HPCENV_STAGED"`): for a prefix known only when the code runs."""
    _check(Path("/"), name)
    return _posix(prefix_word, name, no_user_site, "sh")


def write_static_script(
    prefix: Path, name: str, no_user_site: bool = True, *, build_dir: Path | None = None
) -> Path:
    """Write `PREFIX/etc/hpcenv/activate.sh`; with `build_dir`, into the env being built
    there (the script names `prefix`, where the build is renamed to)."""
    path = (build_dir or prefix) / "etc" / "hpcenv" / "activate.sh"
    atomic_write(path, static_script(prefix, name=name, no_user_site=no_user_site), 0o644)
    return path


def _is_current(path: Path, prefix: Path) -> bool:
    """`path` is a v2 static script for `prefix` (an older one lists the hooks of the moment
    it was written, and breaks when conda removes one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return STATIC_MARK in text and f"_HPCENV_PREFIX={sh.quote('sh', str(prefix))}\n" in text


def _own_writable_dir(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and os.access(path, os.W_OK)


def static_script_path(prefix: Path, state_dir: Path) -> Path:
    """Where the static script of `prefix` lives when the env does not hold it: in hpcenv's
    private state dir, keyed by the prefix's real path."""
    import hashlib

    key = hashlib.sha256(os.fsencode(os.path.realpath(prefix))).hexdigest()[:16]
    return state_dir / "activate" / f"{key}.sh"


def ensure_static_script(
    prefix: Path, name: str, state_dir: Path, *, no_user_site: bool = True
) -> Path:
    """A static activation script for any env, hpcenv's or not, that exists on return.

    `PREFIX/etc/hpcenv/activate.sh` when it is current, or when the user owns the env and can
    write it; otherwise a copy in the 0700 state dir (an env of another user, a read-only one).
    """
    inside = prefix / "etc" / "hpcenv" / "activate.sh"
    if _is_current(inside, prefix):
        return inside
    text = static_script(prefix, name=name, no_user_site=no_user_site)
    if _own_writable_dir(prefix):
        try:
            for d in (prefix / "etc", prefix / "etc" / "hpcenv"):
                if not os.path.lexists(d):
                    os.mkdir(d, 0o755)
                if not _own_writable_dir(d):
                    raise PermissionError(f"{d} is not a directory of this user")
            atomic_write(inside, text, 0o644)
            return inside
        except OSError:
            pass  # a read-only filesystem, a planted link: the state dir holds it instead
    from hpcenv.storage import ensure_private_dir

    path = static_script_path(prefix, state_dir)
    ensure_private_dir(state_dir)
    ensure_private_dir(path.parent)
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text, 0o600)
    return path


def _hooks_posix(kind: str, shell: str, indent: str = "") -> list[str]:
    """Source the env's `kind`.d/*.sh as they are now, with errexit and nounset off (hooks of
    real packages read unset variables: `[[ -n "$GDAL_DATA" ]]`), then the caller's options
    back. zsh needs `(N)` so that a directory without hooks is no error."""
    glob_ = '"$_HPCENV_PREFIX"/etc/conda/' + kind + ".d/*.sh" + ("(N)" if shell == "zsh" else "")
    return [
        indent + line
        for line in (
            "_hpcenv_opts=$-; set +eu",
            f"for _hpcenv_hook in {glob_}; do",
            '  if [ -f "$_hpcenv_hook" ]; then . "$_hpcenv_hook"; fi',
            "done",
            "case $_hpcenv_opts in *e*) set -e;; esac",
            "case $_hpcenv_opts in *u*) set -u;; esac",
            "unset _hpcenv_opts _hpcenv_hook",
        )
    ]


def _posix(prefix_word: str, name: str, no_user_site: bool, shell: str) -> str:
    """`prefix_word` is the prefix as one shell word (quoted, or a quoted variable)."""
    q = lambda v: sh.quote("sh", v)  # noqa: E731 - bash, zsh and sh read the same quoting
    lines = [
        # _HPCENV_ACTIVE may come from the environment (tcsh exports it): deactivate only
        # when there is one to call
        'if [ -n "${_HPCENV_ACTIVE:-}" ] && command -v deactivate >/dev/null 2>&1; then '
        "deactivate; fi",
        # a `deactivate` defined before (a venv's) comes back when ours is done; sh has no
        # way to print a function, bash and zsh have typeset -f
        "_HPCENV_OLD_DEACTIVATE=$(typeset -f deactivate 2>/dev/null) || _HPCENV_OLD_DEACTIVATE=",
        "_HPCENV_ACTIVE=1",
        f"_HPCENV_PREFIX={prefix_word}",
        '_HPCENV_SAVED_PATH="${PATH-}"',
    ]
    for v in TOUCHED:
        lines.append(
            f'if [ -n "${{{v}+x}}" ]; then _HPCENV_SET_{v}=1; _HPCENV_SAVED_{v}="${v}"; '
            f"else _HPCENV_SET_{v}=0; fi"
        )
    # deactivate: hooks first (they may read CONDA_PREFIX), then restore
    body = _hooks_posix("deactivate", shell, "  ")
    body.append('  PATH="$_HPCENV_SAVED_PATH"; export PATH')
    for v in TOUCHED:
        body.append(
            f'  if [ "$_HPCENV_SET_{v}" = 1 ]; then {v}="$_HPCENV_SAVED_{v}"; export {v}; '
            f"else unset {v}; fi"
        )
        body.append(f"  unset _HPCENV_SET_{v} _HPCENV_SAVED_{v}")
    body.append("  unset _HPCENV_ACTIVE _HPCENV_SAVED_PATH _HPCENV_PREFIX")
    body.append("  unset -f deactivate")
    body.append('  if [ -n "$_HPCENV_OLD_DEACTIVATE" ]; then eval "$_HPCENV_OLD_DEACTIVATE"; fi')
    body.append("  unset _HPCENV_OLD_DEACTIVATE")
    body.append("  hash -r 2>/dev/null || true")
    lines.append("deactivate() {\n" + "\n".join(body) + "\n}")
    lines.append('PATH="$_HPCENV_PREFIX/bin${PATH:+:$PATH}"; export PATH')
    lines.append('CONDA_PREFIX="$_HPCENV_PREFIX"; export CONDA_PREFIX')
    for key, value in _values(Path("/"), name, no_user_site).items():
        if key != "CONDA_PREFIX":
            lines.append(f"{key}={q(value)}; export {key}")
    lines.append("CONDA_SHLVL=$(( ${CONDA_SHLVL:-0} + 1 )); export CONDA_SHLVL")
    lines += _hooks_posix("activate", shell)
    lines.append("hash -r 2>/dev/null || true")
    return "\n".join(lines) + "\n"


def _fish(prefix: Path, name: str, no_user_site: bool) -> str:
    q = lambda v: sh.quote("fish", v)  # noqa: E731
    hooks = "for _hpcenv_hook in $_HPCENV_PREFIX/etc/conda/{}.d/*.fish; source $_hpcenv_hook; end"
    lines = [
        "if set -q _HPCENV_ACTIVE; and functions -q deactivate; deactivate; end",
        # a `deactivate` defined before (a venv's) comes back when ours is done
        "functions -e _hpcenv_old_deactivate",
        "if functions -q deactivate; functions -c deactivate _hpcenv_old_deactivate; end",
        "set -g _HPCENV_ACTIVE 1",
        f"set -g _HPCENV_PREFIX {q(str(prefix))}",
    ]
    lines.append("set -g _HPCENV_SAVED_PATH $PATH")
    for v in TOUCHED:
        lines.append(
            f"if set -q {v}; set -g _HPCENV_SET_{v} 1; set -g _HPCENV_SAVED_{v} ${v}; "
            f"else; set -g _HPCENV_SET_{v} 0; end"
        )
    body = ["  " + hooks.format("deactivate"), "  set -e _hpcenv_hook"]
    body.append("  set -gx PATH $_HPCENV_SAVED_PATH")
    for v in TOUCHED:
        body.append(
            f'  if test "$_HPCENV_SET_{v}" = 1; set -gx {v} $_HPCENV_SAVED_{v}; else; set -e {v}; end'
        )
        body.append(f"  set -e _HPCENV_SET_{v} _HPCENV_SAVED_{v}")
    body.append("  set -e _HPCENV_ACTIVE _HPCENV_SAVED_PATH _HPCENV_PREFIX")
    body.append("  functions -e deactivate")
    body.append(
        "  if functions -q _hpcenv_old_deactivate; "
        "functions -c _hpcenv_old_deactivate deactivate; functions -e _hpcenv_old_deactivate; end"
    )
    lines.append("function deactivate\n" + "\n".join(body) + "\nend")
    lines.append("set -gx PATH $_HPCENV_PREFIX/bin $PATH")
    for key, value in _values(prefix, name, no_user_site).items():
        lines.append(f"set -gx {key} {q(value)}")
    lines.append(
        "if set -q CONDA_SHLVL; set -gx CONDA_SHLVL (math $CONDA_SHLVL + 1); else; set -gx CONDA_SHLVL 1; end"
    )
    lines += [hooks.format("activate"), "set -e _hpcenv_hook"]
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
    # a `deactivate` alias defined before (a venv's) comes back when ours is done
    lines.append('set _hpcenv_old_deactivate = "`alias deactivate`"')
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
    lines.append(f"setenv CONDA_SHLVL {shlvl(environ.get('CONDA_SHLVL')) + 1}")
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
    lines += [
        "unalias deactivate",
        'if ( ! $?_hpcenv_old_deactivate ) set _hpcenv_old_deactivate = ""',
        'if ( "$_hpcenv_old_deactivate:q" != "" ) alias deactivate $_hpcenv_old_deactivate:q',
        "unset _hpcenv_old_deactivate",
        "rehash",
    ]
    return "".join(f"{line};\n" for line in lines)
