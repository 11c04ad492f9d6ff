"""Section `solve`: a data-science solve on a channel of conda-forge's size and shape.

`hpcenv create --dry-run -p PREFIX python=3.12 numpy ... -c file://CHANNEL`, as a user types
it (a fresh process, its table on stdout), against a plain py-rattler script doing the same
solve (Gateway + solve, a fresh process), interleaved run by run: wall time and peak resident
memory of each child. The channel (bench/cfchannel.py: repodata only, no package files) is
generated once per size and kept under ~/.cache/hpcenv-tests; a dry run reads no archive.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import cfchannel
from childrun import kit, measured, mib, test_cache

REQUEST = [
    "python=3.12",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "scikit-learn",
    "jupyterlab",
    "seaborn",
]

SOLVE_RATTLER = """
import asyncio, sys
from pathlib import Path
import rattler
channel, cache, *specs = sys.argv[1:]
async def main():
    gateway = rattler.Gateway(cache_dir=Path(cache) / "repodata")
    records = await rattler.solve(sources=[rattler.Channel(channel)], specs=specs, gateway=gateway,
                                  platforms=[str(rattler.Subdir.current()), "noarch"],
                                  virtual_packages=[v.into_generic() for v in rattler.VirtualPackage.detect()])
    for r in records:
        print(r.name.normalized, r.version, r.build)
asyncio.run(main())
import time; time.sleep(0.002)  # as hpcenv's engine: rattler may crash an instant exit
"""

# what the solve has to read: the records of every name reachable from the request
CLOSURE = """
import asyncio, sys
import rattler
channel, *specs = sys.argv[1:]
async def main():
    found = await rattler.Gateway().query([rattler.Channel(channel)], [str(rattler.Subdir.current()), "noarch"], specs, recursive=True)
    records = [r for subdir in found for r in subdir]
    print(len(records), len({r.name.normalized for r in records}))
asyncio.run(main())
import time; time.sleep(0.002)
"""


def bench_solve(quick: bool, work: Path) -> list:
    names, records = (3_000, 50_000) if quick else (30_000, 500_000)
    repeat = 1 if quick else 7
    chan = cfchannel.cached(test_cache() / "cfscale", names, records)
    script = work / "solve.py"
    script.write_text(SOLVE_RATTLER)
    home, storage = work / "home", work / "storage"
    (home / ".conda").mkdir(parents=True)
    storage.mkdir()
    env = kit.user_env(work)
    raw_cmd = [sys.executable, str(script), chan.url, str(work / "raw-cache"), *REQUEST]
    prefix = str(storage / "ds")
    hpcenv_cmd = kit.hpcenv_cmd("create", "--dry-run", "-p", prefix, *REQUEST, "-c", chan.url)

    # untimed: the two agree on the solution (and the repodata is in the page cache)
    raw_pkgs = set(measured(raw_cmd).stdout.decode().splitlines())
    out = measured(kit.hpcenv_cmd("create", "--dry-run", "--json", "-p", prefix, *REQUEST,
                                  "-c", chan.url), env=env)  # fmt: skip
    h_pkgs = {
        f"{p['name']} {p['version']} {p['build']}"
        for p in json.loads(out.stdout)["result"]["packages"]
    }
    same = "the same" if h_pkgs == raw_pkgs else f"DIFFERENT ({len(h_pkgs ^ raw_pkgs)} differ)"
    if os.path.lexists(prefix) or any(storage.iterdir()):
        raise RuntimeError(f"the dry run wrote into {storage}")
    closure = measured([sys.executable, "-c", CLOSURE, chan.url, *REQUEST]).stdout.split()
    loaded, loaded_names = int(closure[0]), int(closure[1])

    t_raw, t_h, m_raw, m_h, c_raw, c_h = [], [], [], [], [], []
    for _ in range(repeat):
        r = measured(raw_cmd)
        t_raw.append(r.seconds)
        m_raw.append(r.peak_bytes)
        c_raw.append(r.cpu_seconds)
        h = measured(hpcenv_cmd, env=env)
        t_h.append(h.seconds)
        m_h.append(h.peak_bytes)
        c_h.append(h.cpu_seconds)
    med = statistics.median
    ratio, mem_ratio = med(t_h) / med(t_raw), med(m_h) / med(m_raw)
    made = "cached" if chan.from_cache else "generated now"
    note = (
        f"ratio of the fastest runs {min(t_h) / min(t_raw):.2f}x; CPU time (user + system) "
        f"{med(c_h):.2f} s vs {med(c_raw):.2f} s; "
        f"channel: {chan.names:,} names, {chan.records:,} records ({chan.linux_records:,} "
        f"linux-64 + {chan.noarch_records:,} noarch), {chan.bytes / 1e6:.0f} MB of repodata.json "
        f"(generated in {chan.seconds:.0f} s, {made}); the request reaches {loaded:,} records of "
        f"{loaded_names:,} names; {len(raw_pkgs)} packages, {same} on both sides; peak memory hpcenv {mib(med(m_h))} ({mib(min(m_h))}-{mib(max(m_h))}) vs script "
        f"{mib(med(m_raw))} ({mib(min(m_raw))}-{mib(max(m_raw))}): {mem_ratio:.2f}x"
    )
    return [
        kit.Row(
            "solve",
            "create --dry-run python=3.12 numpy scipy pandas matplotlib scikit-learn jupyterlab "
            "seaborn, conda-forge-sized channel",
            t_h,
            "py-rattler solve script",
            t_raw,
            "<= 1.1x time and peak memory",
            ratio <= 1.1 and mem_ratio <= 1.1,
            note,
        )
    ]
