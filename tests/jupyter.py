"""Jupyter for the kernel tests and the bench: ipykernel with everything it needs as wheels for
this interpreter (downloaded once into the test cache, so a warm cache needs no network), and
a real `jupyter_client` that starts a kernel from its kernelspec and runs code in it.

The client runs in a process of its own (`start_kernel`), as a Jupyter server would: with the
environment it is given (no PYTHONPATH of the test run leaks into the kernel), and as another
user when asked (tests/users.py).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realpkgs import RealPackagesUnavailable, _publish, cache_root

IPYKERNEL = ("ipykernel", "6.29.5")

# python -c CLIENT DATA_DIR KERNEL_NAME CODE: start the kernel through jupyter_client from the
# kernelspec in DATA_DIR/kernels, run CODE, print one JSON line: what CODE printed, the reply's
# status, the pid of the process jupyter_client started, and the seconds from the spec to the
# first execute reply.
CLIENT = r"""
import json, sys, time
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
data_dir, name, code = sys.argv[1:4]
t0 = time.perf_counter()
specs = KernelSpecManager(data_dir=data_dir, kernel_dirs=[data_dir + "/kernels"])
km = KernelManager(kernel_name=name, kernel_spec_manager=specs)
out, result = [], {}
try:
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=90)
        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))
        reply = kc.execute_interactive(code, output_hook=hook, timeout=90)
        result = {"status": reply["content"]["status"], "seconds": time.perf_counter() - t0}
    finally:
        kc.stop_channels()
    result["pid"] = km.provisioner.process.pid
except Exception as exc:
    result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
finally:
    if km.has_kernel:
        km.shutdown_kernel(now=False)
result["stdout"] = "".join(out)
print(json.dumps(result))
"""


def fetch_ipykernel_wheels(cache: Path) -> Path:
    """A directory of wheels: ipykernel and all its dependencies for this interpreter."""
    name, version = IPYKERNEL
    tag = f"{sys.implementation.cache_tag}-{platform.machine()}"
    where = cache / "wheels" / f"{name}-{version}-with-deps-{tag}"
    if any(where.glob(f"{name}-{version}-*.whl")):
        return where
    tmp = cache / "wheels" / f".{name}-{version}-with-deps-{tag}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--retries", "1"]
    argv += ["--timeout", "30", "-q", "-d", str(tmp), f"{name}=={version}"]
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not any(tmp.glob(f"{name}-*.whl")):
        shutil.rmtree(tmp, ignore_errors=True)
        last = ([line for line in result.stderr.splitlines() if line.strip()] or ["no wheel"])[-1]
        raise RealPackagesUnavailable(
            f"jupyter: {name}=={version} and its dependencies are not in the test cache {cache} "
            f"and `pip download` failed ({last.strip()[:200]}); run the tests once with network"
        )
    (cache / "wheels").mkdir(parents=True, exist_ok=True)
    _publish(tmp, where)
    return where


def ipykernel_wheels(request: pytest.FixtureRequest) -> Path:
    try:
        return fetch_ipykernel_wheels(cache_root(request.config))
    except RealPackagesUnavailable as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def pip_section(wheels: Path) -> str:
    """The `pip:` lines of an environment.yml that install ipykernel offline from `wheels`."""
    return (
        "  - pip:\n"
        "    - --no-index\n"
        f"    - --find-links {wheels}\n"
        f"    - {IPYKERNEL[0]}=={IPYKERNEL[1]}\n"
    )


def client_env(**extra: str) -> dict[str, str]:
    """The environment of a Jupyter server: this one, less the test run's Python settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def start_kernel(
    data_dir: Path, name: str, code: str, *, env: dict[str, str], user: str | None = None
) -> dict:
    """Start kernel `name` from DATA_DIR's kernelspec, run `code`, shut it down: the result."""
    argv = [sys.executable, "-c", CLIENT, str(data_dir), name, code]
    if user is None:
        r = subprocess.run(
            argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
        )
    else:
        from tests.users import as_user

        r = as_user(user, argv, env=env, timeout=300)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and lines, r.stderr
    result = json.loads(lines[-1])
    result["stderr"] = r.stderr
    return result
