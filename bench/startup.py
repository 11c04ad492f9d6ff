"""Start-up as users get it, and create's fixed cost.

What users run is the console script pip writes (its template imports `re`), with the package
byte-compiled as pip compiles it, in an installation whose site-packages has no foreign `.pth`
files. This machine's own python imports certifi from a `.pth` at every start (~45 ms) and sets
PYTHONDONTWRITEBYTECODE, and `hpcenv` on its PATH is a pyenv shim (a bash script that runs
`pyenv exec`): measured through those, `hpcenv activate` looked 2-3x slower than it is (the
142 ms against 60 ms of the issue). So this section builds a clean venv (`python -m venv
--without-pip`), installs the worktree's hpcenv into it as pip would (files, the console
script from pip's template, `compileall`), and times fresh processes there, interleaved with
`python -c pass` of the same venv. The context rows show what the other ways cost.

Each run is a fresh process; medians of wall time, with CPU time (user+sys of the child,
which load on a shared machine inflates less) in the note.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PIP_TEMPLATE = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from hpcenv.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""
UV_TEMPLATE = """#!{python}
# -*- coding: utf-8 -*-
import sys
from hpcenv.cli import main
if __name__ == "__main__":
    if sys.argv[0].endswith("-script.pyw"):
        sys.argv[0] = sys.argv[0][:-11]
    elif sys.argv[0].endswith(".exe"):
        sys.argv[0] = sys.argv[0][:-4]
    sys.exit(main())
"""


def install_like_pip(venv: Path) -> dict[str, Path]:
    """A venv holding the worktree's hpcenv as pip installs it; its python and scripts."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    shutil.copytree(
        REPO / "src" / "hpcenv", site / "hpcenv", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run([python, "-m", "compileall", "-q", str(site / "hpcenv")], check=True)
    scripts = {}
    for name, template in (("hpcenv", PIP_TEMPLATE), ("hpcenv-uv", UV_TEMPLATE)):
        path = venv / "bin" / name
        path.write_text(template.format(python=python))
        path.chmod(0o755)
        scripts[name] = path
    return {"python": python, **scripts}


def fresh(commands: dict[str, list[str]], env: dict[str, str], repeat: int):
    """{label: (wall times, cpu times)} of fresh processes, the commands interleaved."""
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in commands}
    for _ in range(repeat):
        for label, cmd in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            result = subprocess.run(cmd, env=env, capture_output=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if result.returncode != 0:
                raise RuntimeError(f"{cmd}: {result.stderr.decode()[-300:]}")
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            out[label][0].append(wall)
            out[label][1].append(cpu)
    return out


def _ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.1f} ms"


def bench_startup(quick: bool, work: Path, Row, demo_env) -> list:
    """`hpcenv --version` and `hpcenv activate NAME` as users get them, against `python -c
    pass` of the same installation; the other ways of running them, for context."""
    repeat = 5 if quick else 31
    env, prefix = demo_env(work)
    venv = install_like_pip(work / "venv")
    clean = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    site = work / "site.toml"
    site.write_text('channels = ["conda-forge"]\n')
    runs = fresh(
        {
            "pass": [str(venv["python"]), "-c", "pass"],
            "version": [str(venv["hpcenv"]), "--version"],
            "version-uv": [str(venv["hpcenv-uv"]), "--version"],
            "activate": [str(venv["hpcenv"]), "activate", "demo"],
            "activate-site": [str(venv["hpcenv"]), "activate", "demo"],
        }
        | {},
        clean,
        repeat,
    )
    with_site = fresh(
        {"activate-site": [str(venv["hpcenv"]), "activate", "demo"]},
        {**clean, "HPCENV_SITE_CONFIG": str(site)},
        repeat,
    )
    runs["activate-site"] = with_site["activate-site"]
    med = statistics.median
    base_wall, base_cpu = runs["pass"]

    def note(label: str) -> str:
        return f"CPU {_ms(runs[label][1])} vs {_ms(base_cpu)}"

    rows = [
        Row(
            "startup",
            "hpcenv --version (pip's console script, installed as pip does)",
            runs["version"][0],
            "python -c pass (same venv)",
            base_wall,
            "<= 1.2x",
            med(runs["version"][0]) <= 1.2 * med(base_wall),
            note("version"),
        ),
        Row(
            "startup",
            "hpcenv --version (uv's console script: no `import re`)",
            runs["version-uv"][0],
            "python -c pass (same venv)",
            base_wall,
            "<= 1.2x",
            med(runs["version-uv"][0]) <= 1.2 * med(base_wall),
            note("version-uv"),
        ),
        Row(
            "startup",
            "hpcenv activate demo (pip's console script)",
            runs["activate"][0],
            "python -c pass (same venv)",
            base_wall,
            "<= 40 ms",
            med(runs["activate"][0]) <= 0.040,
            note("activate"),
        ),
        Row(
            "startup",
            "hpcenv activate demo, with a site config (tomllib read)",
            runs["activate-site"][0],
            "python -c pass (same venv)",
            base_wall,
            "-",
            None,
            note("activate-site"),
        ),
    ]
    rows += _context_rows(work, env, venv, Row, repeat)
    return rows


def _context_rows(work: Path, env: dict[str, str], venv: dict[str, Path], Row, repeat: int):
    """What the other ways of running the same code cost (the issue's 142 ms)."""
    machine = {**env, "PYTHONPATH": str(REPO / "src")}
    nobyte = work / "nobytecode"
    shutil.copytree(REPO / "src", nobyte, ignore=shutil.ignore_patterns("__pycache__"))
    commands = {
        "machine": [sys.executable, "-c", "pass"],
        "module": [sys.executable, "-m", "hpcenv", "activate", "demo"],
    }
    shim = shutil.which("hpcenv", path=os.environ.get("PATH"))
    if shim and "shims" in shim:
        commands["shim"] = [shim, "activate", "demo"]
    runs = fresh(commands, machine, repeat)
    cold = fresh(
        {"nobyte": [sys.executable, "-m", "hpcenv", "activate", "demo"]},
        {**machine, "PYTHONPATH": str(nobyte), "PYTHONDONTWRITEBYTECODE": "1"},
        repeat,
    )
    rows = [
        Row(
            "startup",
            "context: python -m hpcenv activate demo, this machine's python (certifi .pth)",
            runs["module"][0],
            "this python -c pass",
            runs["machine"][0],
            "-",
            None,
        ),
        Row(
            "startup",
            "context: the same without bytecode (PYTHONDONTWRITEBYTECODE, no __pycache__)",
            cold["nobyte"][0],
            "this python -c pass",
            runs["machine"][0],
            "-",
            None,
        ),
    ]
    if "shim" in runs:
        rows.append(
            Row(
                "startup",
                "context: hpcenv activate demo through the pyenv shim on PATH",
                runs["shim"][0],
                "this python -c pass",
                runs["machine"][0],
                "-",
                None,
            )
        )
    return rows
