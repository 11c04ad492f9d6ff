"""What a Jupyter kernel of an env is, as text: where kernels go, their names, kernel.json and
the launcher (pure; `kernel.py` writes them).

    <data dir>/kernels/hpcenv-NAME/kernel.json   argv: /bin/bash LAUNCHER {connection_file}
    <data dir>/kernels/hpcenv-NAME/launch.sh     the site's module lines, the --env variables,
                                                 hpcenv's static activation (activate.d hooks,
                                                 PYTHONNOUSERSITE), then
                                                 exec PREFIX/bin/python -m ipykernel_launcher

No hpcenv (and no Python other than the kernel's own) runs when the kernel starts. The
activation is the one of `activate.static_script`, written into the launcher: it reads
`etc/conda/activate.d` when it runs, so an env changed since activates as it is now.

The data dir follows `jupyter --data-dir` (jupyter_core 5.9 `paths.jupyter_data_dir`, Linux):
`$JUPYTER_DATA_DIR`, else with `$JUPYTER_PLATFORM_DIRS` set platformdirs' rule
(`$XDG_DATA_HOME` if absolute, else `~/.local/share`) + `/jupyter`, else `$XDG_DATA_HOME/jupyter`
when `$XDG_DATA_HOME` is set, else `<real path of ~>/.local/share/jupyter`.

Kernel names are what jupyter_client accepts (`[a-z0-9._-]`, compared lower-cased): the env
NAME itself when it is such a name (`hpcenv-NAME`, stable), else its lower-cased, cleaned
form plus a short hash of the name; an env given by path gets `hpcenv-<basename>-<hash of
its real path>`. `kernel.json`'s `metadata.hpcenv` records the env.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcenv import shell as sh
from hpcenv.errors import UsageError
from hpcenv.registry import IMAGE_RECORD

PREFIX = "hpcenv-"
KERNEL_JSON = "kernel.json"
LAUNCHER = "launch.sh"
LAUNCHER_MARK = "# hpcenv kernel launcher v1"
SPEC_VERSION = 1
BASH = "/bin/bash"
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")  # copied from ipykernel
_KERNEL_NAME = re.compile(r"^[a-z0-9._-]+$")  # jupyter_client's rule, after lower-casing


@dataclass(frozen=True)
class KernelFiles:
    """What `render` makes: the two files of a kernel, as text."""

    kernel_json: str
    launcher: str


# --------------------------------------------------------------------------- where and names


def jupyter_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`jupyter --data-dir` for this user (see the module docstring), as an absolute path."""
    env = os.environ if environ is None else environ
    if env.get("JUPYTER_DATA_DIR"):
        return Path(os.path.abspath(env["JUPYTER_DATA_DIR"]))
    home = env.get("HOME") or os.path.expanduser("~")
    if _envset(env.get("JUPYTER_PLATFORM_DIRS")):
        xdg = env.get("XDG_DATA_HOME", "")
        base = xdg if os.path.isabs(xdg) else os.path.join(home, ".local", "share")
        return Path(base) / "jupyter"
    xdg = env.get("XDG_DATA_HOME")
    if xdg:
        return Path(os.path.abspath(xdg)) / "jupyter"
    return Path(os.path.realpath(home)) / ".local" / "share" / "jupyter"


def _envset(value: str | None) -> bool:
    """jupyter_core's `envset`: set, and not one of its words for false."""
    return value is not None and value.lower() not in ("no", "n", "false", "off", "0", "0.0")


def kernels_dir(environ: Mapping[str, str] | None = None) -> Path:
    return jupyter_data_dir(environ) / "kernels"


def _short_hash(text: str) -> str:
    return hashlib.sha256(os.fsencode(text)).hexdigest()[:8]


def _clean(text: str) -> str:
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")[:40]
    return cleaned or "env"


def kernel_name(env_name: str | None, prefix: Path | str) -> str:
    """The stable kernel name of an env: `hpcenv-NAME` for an env given by name (cleaned and
    hashed when NAME has characters Jupyter does not take), `hpcenv-<basename>-<hash>` for one
    given by path (the hash of its real path: two spellings of one env get one kernel)."""
    if env_name is not None:
        if _KERNEL_NAME.match(env_name) and len(env_name) <= 100:
            return PREFIX + env_name
        return f"{PREFIX}{_clean(env_name)}-{_short_hash(env_name)}"
    real = os.path.realpath(prefix)
    return f"{PREFIX}{_clean(os.path.basename(real.rstrip('/')))}-{_short_hash(real)}"


def parse_env_vars(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` words (`--env`) as pairs; UsageError for a bad one."""
    pairs = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(
                f"--env {item!r} is not KEY=VALUE", hint="e.g. --env OMP_NUM_THREADS=4"
            )
        sh.var(key)
        if key.startswith("_HPCENV_"):
            raise UsageError(f"--env {key}: variables starting with _HPCENV_ are hpcenv's own")
        if "\x00" in value:
            raise UsageError(f"the value of {key} contains a NUL byte")
        pairs.append((key, value))
    return tuple(pairs)


def check_display_name(text: str) -> str:
    if not text.strip() or any(ord(c) < 32 or ord(c) == 127 for c in text) or len(text) > 200:
        raise UsageError(
            f"invalid display name {text!r}: empty, too long or with control characters",
            hint='e.g. --display-name "Python (my project)"',
        )
    return text


# --------------------------------------------------------------------------- rendering (pure)


def render(
    *,
    kernel: str,
    directory: Path,
    prefix: Path,
    env_name: str | None,
    display_name: str,
    module_lines: Sequence[str] = (),
    env_vars: Sequence[tuple[str, str]] = (),
    no_user_site: bool = True,
    debugger: bool = False,
    python_options: Sequence[str] = (),
    image_dir: Path | None = None,
    hpcenv_argv: Sequence[str] = (),
) -> KernelFiles:
    """kernel.json and the launcher of the kernel `kernel` kept in `directory` (pure).

    The launcher is bash (activate.d scripts of real packages use bash syntax, and conda
    sources them in bash): the site's module lines (with `module` defined from
    $MODULESHOME when the Jupyter server did not pass it on), the --env variables (before the
    activation, as conda exports `conda env config vars`: the hooks see them), the activation,
    then `exec` of the env's python, so that the kernel is the process Jupyter signals.
    Module lines are the site's shell code, kept as written; every other word is quoted.

    An image env (`image_dir`: its directory in storage; `prefix`: where its current version
    is mounted now) is activated by `hpcenv activate` (`hpcenv_argv`), which mounts the
    current version on the node the kernel starts on, as it does in a shell; the kernel is the
    python of whatever version is current then."""
    from hpcenv.activate import posix_activation

    for value in (str(prefix), str(directory), env_name or ""):
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UsageError(
                f"{value!r} contains control characters; a kernel cannot use it safely",
                hint="use an environment path without them",
            )
    label = env_name or str(prefix)
    q = lambda v: sh.quote("sh", v)  # noqa: E731
    redo = sh.command(["hpcenv", "kernel", label])
    lines = [
        f"# Written by hpcenv for the Jupyter kernel {kernel}; `{redo}` writes it again.",
        LAUNCHER_MARK,
        "# It loads the site's modules, activates the environment as `hpcenv activate` does",
        "# (etc/conda/activate.d scripts run), then becomes the kernel (exec).",
    ]
    if module_lines:
        lines += [
            'if ! command -v module >/dev/null 2>&1 && [ -n "${MODULESHOME:-}" ] \\',
            '  && [ -r "$MODULESHOME/init/bash" ]; then',
            '  . "$MODULESHOME/init/bash"',
            "fi",
            *module_lines,
        ]
    for key, value in env_vars:
        lines.append(f"{sh.var(key)}={q(value)}; export {key}")
    gone = (
        f"hpcenv: the environment of the Jupyter kernel {kernel} is gone: {prefix} "
        f"(remove the kernel with `{sh.command(['hpcenv', 'kernel', label, '--remove'])}`)"
    )
    marker = prefix / "conda-meta" if image_dir is None else image_dir / IMAGE_RECORD
    lines += [
        f"if [ ! -e {q(str(marker))} ]; then",
        f"  printf '%s\\n' {q(gone)} >&2",
        "  exit 1",
        "fi",
    ]
    if image_dir is None:
        activation = posix_activation(
            q(str(prefix)), name=env_name or str(prefix), no_user_site=no_user_site
        )
        lines.append(activation.rstrip("\n"))
        python = sh.quote("sh", str(prefix / "bin" / "python"))
    else:
        activate = sh.command([*hpcenv_argv, "activate", "-p", str(image_dir), "--shell", "bash"])
        lines.append(f'eval "$({activate})" || exit 1')
        python = '"$CONDA_PREFIX/bin/python"'
    argv = sh.command([*python_options, "-m", "ipykernel_launcher", "-f"])
    lines.append(f'exec {python} {argv} "$1"')
    launcher = "\n".join(lines) + "\n"

    metadata: dict[str, Any] = {
        "hpcenv": {
            "version": SPEC_VERSION,
            "env": env_name,
            "prefix": str(prefix if image_dir is None else image_dir),
            "env_vars": [f"{k}={v}" for k, v in env_vars],
        }
    }
    if debugger:
        metadata["debugger"] = True
    spec = {
        "argv": [BASH, str(directory / LAUNCHER), "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": metadata,
    }
    return KernelFiles(json.dumps(spec, indent=1) + "\n", launcher)


def default_display_name(label: str, owner: str | None = None) -> str:
    if owner:
        return f"Python (hpcenv: {label}, shared by {owner})"
    return f"Python (hpcenv: {label})"
