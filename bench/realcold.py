"""Section `real-cold`: create on real packages with a cold package cache.

python + numpy + tqdm (tests/realpkgs.py: this CPython packed as a conda package, numpy from
its wheel, tqdm noarch) into a new env, every run with an empty package cache (so each
downloads and extracts the three archives from the file:// channel), `hpcenv create` against
the plain py-rattler script of run.py (RAW_RATTLER, its own empty cache each run),
interleaved run by run. On a tmpfs when root, as the `create` section: on this VM's ext4 the
writeback of ~150 MB of extracted files per run would decide the ratio. The `real` section
times the warm create.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path

from childrun import kit, measured, mib


def bench_real_cold(quick: bool, work: Path) -> list:
    from tests.realpkgs import RealPackagesUnavailable, build_real_channel, cache_root

    try:
        url = build_real_channel(cache_root()).url
    except RealPackagesUnavailable as exc:
        return [kit.Skipped("real-cold", str(exc))]
    if os.geteuid() == 0:
        with kit.tmpfs(work / "fs", "4g") as fs:
            return _bench(quick, fs, url, "on a tmpfs")
    return _bench(quick, work, url, "on this machine's disk (not root: no tmpfs)")


def _bench(quick: bool, work: Path, url: str, where: str) -> list:
    specs = ["python", "numpy", "tqdm"]
    repeat = 1 if quick else 7
    raw = work / "raw.py"
    raw.write_text(kit.RAW_RATTLER)
    home, storage = work / "home", work / "storage"
    env = kit.user_env(work)
    counter = iter(range(10_000))

    def raw_once():
        i = next(counter)
        cache, target = work / f"raw-cache-{i}", work / f"raw-env-{i}"
        result = measured([sys.executable, str(raw), url, str(cache), str(target), *specs])
        shutil.rmtree(target)
        shutil.rmtree(cache)
        return result

    def hpcenv_once():  # a user's first env: no storage, so no package cache, yet
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(storage, ignore_errors=True)
        (home / ".conda").mkdir(parents=True)
        storage.mkdir()
        prefix = storage / f"env{next(counter)}"
        result = measured(kit.hpcenv_cmd("-q", "create", "-p", str(prefix), *specs, "-c", url),
                          env=env)  # fmt: skip
        if not (prefix / "bin" / "python").exists():
            raise RuntimeError(f"hpcenv create left no python in {prefix}")
        return result

    raw_once()  # untimed: the archives into the page cache, for both
    hpcenv_once()
    t_raw, t_h, m_raw, m_h, c_raw, c_h = [], [], [], [], [], []
    for _ in range(repeat):
        r = raw_once()
        t_raw.append(r.seconds)
        m_raw.append(r.peak_bytes)
        c_raw.append(r.cpu_seconds)
        h = hpcenv_once()
        t_h.append(h.seconds)
        m_h.append(h.peak_bytes)
        c_h.append(h.cpu_seconds)
    med = statistics.median
    ratio = med(t_h) / med(t_raw)
    note = (
        f"ratio of the fastest runs {min(t_h) / min(t_raw):.2f}x; CPU time (user + system) "
        f"{med(c_h):.2f} s vs {med(c_raw):.2f} s; {where}; every run extracts the three archives; hpcenv also byte-compiles tqdm (as "
        f"conda); peak memory hpcenv {mib(med(m_h))} vs script {mib(med(m_raw))}"
    )
    return [
        kit.Row(
            "real-cold",
            "create python+numpy+tqdm, cold package cache",
            t_h,
            "py-rattler script",
            t_raw,
            "<= 1.1x",
            ratio <= 1.1,
            note,
        )
    ]
