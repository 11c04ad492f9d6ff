"""`hpcenv selftest`: the whole flow, offline, in a throwaway HOME and storage.

A demo channel of real conda packages is built at run time (`hpcenv.channel.demo_packages`),
then every step runs the real CLI in a subprocess, as a user would: `setup` over pre-existing
caches, `create` (a plain env and a GPU env solved for `--cuda 12.4` on this GPU-less node),
`activate` in bash, `run`, `jobscript` (and `submit --wait` where `sbatch` works), `usage`,
`clean`, `doctor`. Each step is checked by what it produced, not only its exit code.

Test hook: `_HPCENV_TEST_SELFTEST_BREAK=STEP` makes that step run a broken command, to prove a
failing step is named and the exit code is 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass(frozen=True)
class SelftestReport:
    sandbox: str
    kept: bool
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)


class _StepFailed(Exception):
    pass


class _Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.storage = root / "storage"
        self.channel = root / "channel"
        self.home.mkdir()
        self.storage.mkdir()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HPCENV_", "CONDA_"))
            and k not in ("global_storage", "XDG_CONFIG_HOME")
        }
        self.env.update(
            HOME=str(self.home),
            global_storage=str(self.storage),
            HPCENV_SITE_CONFIG=str(root / "site.toml"),
            HPCENV_LIBCUDA="none",  # this is the login node: no GPU, whatever the machine has
            PYTHONNOUSERSITE="1",
        )
        self.broken = os.environ.get("_HPCENV_TEST_SELFTEST_BREAK", "")

    def hpcenv(self, step: str, *args: str, stdin: str | None = None) -> str:
        if step == self.broken:  # the test hook: an option the command does not have
            args = (args[0], "--this-flag-does-not-exist", *args[1:])
        argv = [sys.executable, "-m", "hpcenv", *args]
        return self.sh(argv, stdin=stdin)

    def sh(self, argv: list[str], stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            argv, env=self.env, input=stdin, capture_output=True, text=True, timeout=300
        )
        if check and result.returncode != 0:
            err = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise _StepFailed(
                f"`{' '.join(argv[2:] if argv[0] == sys.executable else argv)}` failed: {err}"
            )
        return result.stdout


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _StepFailed(message)


def run_selftest(
    *, keep: bool = False, on_step: Callable[[StepResult], None] | None = None
) -> SelftestReport:
    root = Path(tempfile.mkdtemp(prefix="hpcenv-selftest-"))
    sb = _Sandbox(root)
    steps: list[StepResult] = []
    try:
        for name, fn in _STEPS:
            t0 = time.perf_counter()
            try:
                detail = fn(sb) or ""
                result = StepResult(name, True, time.perf_counter() - t0, detail)
            except _StepFailed as exc:
                result = StepResult(name, False, time.perf_counter() - t0, str(exc))
            except Exception as exc:  # a bug in a step is still a failed step, named
                result = StepResult(
                    name, False, time.perf_counter() - t0, f"{exc.__class__.__name__}: {exc}"
                )
            steps.append(result)
            if on_step:
                on_step(result)
            if not result.ok and name in _FATAL:
                break
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return SelftestReport(str(root), keep, tuple(steps))


# ------------------------------------------------------------------ the steps


def _channel(sb: _Sandbox) -> str:
    from hpcenv.channel import build_channel, demo_packages

    url = build_channel(sb.channel, demo_packages())
    sb.url = url
    return (
        f"{len(list(sb.channel.rglob('*.tar.bz2')) + list(sb.channel.rglob('*.conda')))} packages"
    )


def _setup(sb: _Sandbox) -> str:
    pip = sb.home / ".cache" / "pip"
    pip.mkdir(parents=True)
    (pip / "selfcheck.json").write_text("{}\n")
    (sb.home / ".conda").mkdir()
    (sb.home / ".conda" / "environments.txt").write_text("")
    sb.hpcenv("setup", "setup", "--yes")
    for name in (".cache", ".conda"):
        _expect((sb.home / name).is_symlink(), f"~/{name} is not a symlink after setup")
    _expect(
        (sb.storage / ".cache/pip/selfcheck.json").is_file(), "the existing pip cache was not moved"
    )
    return "~/.cache and ~/.conda now point into storage"


def _create(sb: _Sandbox) -> str:
    sb.hpcenv("create", "create", "demo", "python", "demo-tool", "hello", "-c", sb.url)
    prefix = sb.home / ".conda" / "envs" / "demo"
    _expect((prefix / "bin" / "demo-tool").exists(), "demo-tool is missing from the env")
    _expect(str(prefix) in (sb.home / ".conda/environments.txt").read_text(), "env not registered")
    return str(prefix)


def _create_gpu(sb: _Sandbox) -> str:
    sb.hpcenv("create-gpu", "create", "gpu", "pytorch", "--gpu", "--cuda", "12.4", "-c", sb.url)
    out = sb.hpcenv("create-gpu", "info", "gpu", "--json")
    import json

    packages = {p["name"]: p["build"] for p in json.loads(out)["result"]["packages"]}
    _expect(
        packages.get("pytorch", "").startswith("cuda"),
        f"pytorch build is {packages.get('pytorch')}",
    )
    return f"pytorch {packages['pytorch']} (solved for __cuda=12.4 on a GPU-less node)"


def _activate(sb: _Sandbox) -> str:
    hpcenv = f"{sys.executable} -m hpcenv"
    script = f'eval "$({hpcenv} activate demo)" && demo-tool && echo "PREFIX=$CONDA_PREFIX" && deactivate && echo "after=${{CONDA_PREFIX:-unset}}"'
    if sb.broken == "activate":
        script = script.replace("activate demo", "activate no-such-env")
    out = sb.sh(["bash", "-c", script])
    _expect("demo-tool 1.0" in out, "demo-tool did not run after activation")
    _expect("after=unset" in out, "deactivate did not restore CONDA_PREFIX")
    return "eval + demo-tool + deactivate in bash"


def _run(sb: _Sandbox) -> str:
    out = sb.hpcenv(
        "run", "run", "demo", "--", "python", "-c", "import hello; print(hello.greet())"
    )
    _expect("hello from hpcenv" in out, "python in the env could not import hello")
    return out.strip()


def _jobscript(sb: _Sandbox) -> str:
    text = sb.hpcenv("jobscript", "jobscript", "demo", "--time", "00:05:00", "--", "demo-tool")
    _expect(
        "#SBATCH" in text and "activate.sh" in text, "the job script lacks #SBATCH or activation"
    )
    sb.sh(["bash", "-n"], stdin=text)
    if shutil.which("sbatch") is None:
        return "rendered and syntax-checked (no sbatch here)"
    probe = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, env=sb.env)
    if probe.returncode != 0 or not probe.stdout.strip():
        return "rendered and syntax-checked (SLURM not answering)"
    sb.hpcenv("jobscript", "submit", "demo", "--wait", "--time", "00:05:00", "--", "demo-tool")
    return "rendered, syntax-checked and run with submit --wait"


def _usage(sb: _Sandbox) -> str:
    out = sb.hpcenv("usage", "usage", "--json")
    _expect('"schema_version"' in out, "usage --json printed no report")
    return "home, storage, caches and envs measured"


def _clean(sb: _Sandbox) -> str:
    sb.hpcenv("clean", "clean", "--yes")
    out = sb.sh(["bash", "-c", f'eval "$({sys.executable} -m hpcenv activate demo)" && demo-tool'])
    _expect("demo-tool 1.0" in out, "the env broke after clean")
    return "caches cleaned; the env still runs"


def _doctor(sb: _Sandbox) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "hpcenv", "doctor", "--json"]
        + (["--this-flag-does-not-exist"] if sb.broken == "doctor" else []),
        env=sb.env,
        capture_output=True,
        text=True,
    )
    import json

    try:
        checks = json.loads(result.stdout)["result"]["checks"]
    except (ValueError, KeyError) as exc:
        raise _StepFailed(f"doctor printed no report ({result.stderr.strip()[-200:]})") from exc
    fails = [c["name"] for c in checks if c["status"] == "FAIL"]
    _expect(not fails, f"doctor FAIL: {', '.join(fails)}")
    return f"{len(checks)} checks, none failed"


_STEPS: list[tuple[str, Callable[[_Sandbox], str]]] = [
    ("channel", _channel),
    ("setup", _setup),
    ("create", _create),
    ("create-gpu", _create_gpu),
    ("activate", _activate),
    ("run", _run),
    ("jobscript", _jobscript),
    ("usage", _usage),
    ("clean", _clean),
    ("doctor", _doctor),
]
_FATAL = {"channel", "setup", "create"}
