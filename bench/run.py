#!/usr/bin/env python3
"""hpcenv benchmarks: each section times hpcenv against a baseline in the same run.

    python bench/run.py --quick          # smoke run: small sizes, each row once, < 2 minutes
                                         # (as root its scratch is a tmpfs); prints the table
    python bench/run.py                  # full sizes; writes bench/RESULTS.md
    python bench/run.py --only migration,usage

Timings are medians over repeated runs (min-max shown) with time.perf_counter; ratios are
hpcenv / baseline on the same machine in the same process tree. No timing is asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))


@dataclass
class Row:
    section: str
    case: str
    hpcenv: list[float]
    baseline_name: str
    baseline: list[float]
    goal: str
    met: bool | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.hpcenv or not self.baseline:
            return None
        return statistics.median(self.hpcenv) / statistics.median(self.baseline)


@dataclass
class Skipped:
    section: str
    reason: str


def timeit(
    fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None
) -> list[float]:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def fmt(times: list[float]) -> str:
    if not times:
        return "-"
    med = statistics.median(times)
    unit, scale = ("ms", 1e3) if med < 1 else ("s", 1)
    return f"{med * scale:.1f} {unit} ({min(times) * scale:.1f}-{max(times) * scale:.1f})"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, **kw)
    if result.returncode != 0:
        err = (
            result.stderr.decode(errors="replace")
            if isinstance(result.stderr, bytes)
            else result.stderr
        )
        raise RuntimeError(
            f"{' '.join(map(str, cmd[:4]))} ... exited {result.returncode}: {err.strip()[-300:]}"
        )
    return result


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def make_tree(root: Path, files: int, size: int = 200) -> None:
    payload = b"x" * size
    per_dir = 500
    for d in range((files + per_dir - 1) // per_dir):
        sub = root / f"d{d:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_dir, files - d * per_dir)):
            (sub / f"f{i:04d}").write_bytes(payload)


def hpcenv_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcenv", *args]


# ------------------------------------------------------------------ sections


def bench_migration(quick: bool, work: Path) -> list[Row | Skipped]:
    """setup across filesystems vs `cp -a` of the same tree; same filesystem: rename."""
    out: list[Row | Skipped] = []
    # quick: a smoke run, once each (deletes are slow on a discard-mounted disk)
    files, repeat = (1_000, 1) if quick else (100_000, 3)
    env_base = {**os.environ, "HPCENV_SITE_CONFIG": str(work / "none.toml")}
    src_template = work / "template"
    make_tree(src_template / ".cache" / "pip", files)

    def fresh_home(home: Path) -> None:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        run(["cp", "-a", str(src_template / ".cache"), str(home / ".cache")])
        (home / ".conda").mkdir()

    if os.geteuid() != 0:
        out.append(Skipped("migration (cross-fs)", "mounting a tmpfs needs root"))
    else:
        with tmpfs(work / "fs2", "2g") as fs2:
            home = work / "home"

            def clear_fs2() -> None:
                for p in fs2.iterdir():
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

            def setup_cp():
                fresh_home(home)
                clear_fs2()

            cp = timeit(
                lambda: run(["cp", "-a", str(home / ".cache"), str(fs2 / ".cache")]),
                repeat,
                setup_cp,
            )
            storage = fs2 / "st"

            def setup_h():
                fresh_home(home)
                clear_fs2()
                storage.mkdir()

            env = {**env_base, "HOME": str(home), "HPCENV_STORAGE": str(storage)}
            h = timeit(lambda: run(hpcenv_cmd("-q", "setup", "--yes"), env=env), repeat, setup_h)
            # what users do by hand, and what GNU mv does across filesystems: copy, then delete
            mv = timeit(
                lambda: run(["mv", str(home / ".cache"), str(fs2 / ".cache")]), repeat, setup_cp
            )
            ratio = statistics.median(cp) / statistics.median(h)
            ratio_mv = statistics.median(mv) / statistics.median(h)
            out.append(
                Row(
                    "migration",
                    f"setup across filesystems, {files:,} files",
                    h,
                    "cp -a",
                    cp,
                    "throughput >= 0.8 x cp -a",
                    ratio >= 0.8,
                    f"throughput ratio {ratio:.2f} (copy + merge + checked removal of the source)",
                )
            )
            out.append(
                Row(
                    "migration",
                    f"setup across filesystems, {files:,} files",
                    h,
                    "mv (copy + delete)",
                    mv,
                    "(context: the same work)",
                    None,
                    f"throughput ratio {ratio_mv:.2f}",
                )
            )
    # same filesystem: constant time whatever the size
    home, storage = work / "home-same", work / "storage-same"
    rows = []
    for n in sorted({1_000, files}):
        tmpl = work / f"tmpl-{n}"
        make_tree(tmpl / ".cache" / "pip", n)

        def prep(tmpl=tmpl):
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(storage, ignore_errors=True)
            home.mkdir()
            storage.mkdir()
            run(["cp", "-a", str(tmpl / ".cache"), str(home / ".cache")])

        env = {**env_base, "HOME": str(home), "HPCENV_STORAGE": str(storage)}
        h = timeit(lambda env=env: run(hpcenv_cmd("-q", "setup", "--yes"), env=env), repeat, prep)
        mv = timeit(
            lambda: run(["mv", str(home / ".cache"), str(storage / ".cache")]), repeat, prep
        )
        rows.append(
            Row(
                "migration",
                f"setup on one filesystem, {n:,} files",
                h,
                "mv",
                mv,
                "< 1 s for any size",
                statistics.median(h) < 1.0,
            )
        )
    out.extend(rows)
    return out


RAW_RATTLER = """
import asyncio, sys
from pathlib import Path
import rattler
channel, cache, prefix, *specs = sys.argv[1:]
async def main():
    gateway = rattler.Gateway(cache_dir=Path(cache) / "repodata")
    records = await rattler.solve(sources=[rattler.Channel(channel)], specs=specs, gateway=gateway,
                                  platforms=[str(rattler.Subdir.current()), "noarch"],
                                  virtual_packages=[v.into_generic() for v in rattler.VirtualPackage.detect()])
    await rattler.install(records, target_prefix=prefix, cache_dir=Path(cache) / "pkgs", show_progress=False)
asyncio.run(main())
import time; time.sleep(0.002)  # as hpcenv's engine: rattler may crash an instant exit
"""


def user_env(work: Path) -> dict[str, str]:
    """The environment of a user whose home is WORK/home and storage WORK/storage, with no
    site config, outside any SLURM job (the directories are the caller's to make)."""
    env = {
        **os.environ,
        "HOME": str(work / "home"),
        "HPCENV_STORAGE": str(work / "storage"),
        "HPCENV_SITE_CONFIG": str(work / "none.toml"),
        "HPCENV_ALLOW_HOME": "1",
    }
    env.pop("SLURM_JOB_ID", None)
    return env


def warm_creates(work: Path, url: str, specs: list[str], runs: int) -> tuple[list, list]:
    """`hpcenv create` and the plain py-rattler script of the same SPECS from URL, both with a
    warm package cache (one untimed run of each fills it), interleaved run by run; the user's
    directories are WORK/home and WORK/storage (`user_env`). (hpcenv times, script times)."""
    raw = work / "raw.py"
    raw.write_text(RAW_RATTLER)
    (work / "home" / ".conda").mkdir(parents=True, exist_ok=True)
    (work / "storage").mkdir(exist_ok=True)
    env = user_env(work)
    counter = iter(range(10_000))

    def raw_once() -> None:
        target = work / f"raw-env-{next(counter)}"
        run([sys.executable, str(raw), url, str(work / "raw-cache"), str(target), *specs])
        shutil.rmtree(target)

    def hpcenv_once() -> None:
        prefix = work / "storage" / f"env{next(counter)}"
        run(hpcenv_cmd("-q", "create", "-p", str(prefix), *specs, "-c", url), env=env)
        shutil.rmtree(prefix)

    raw_once()
    hpcenv_once()
    t_raw, t_h = [], []
    for _ in range(runs):
        t_raw += timeit(raw_once, 1)
        t_h += timeit(hpcenv_once, 1)
    return t_h, t_raw


def bench_create(quick: bool, work: Path) -> list[Row | Skipped]:
    """hpcenv create vs a plain py-rattler script: same channel, same specs, cold and warm.

    Runs on a tmpfs when root: on this VM's ext4 the same install varies 0.4-2.3 s with
    writeback, which drowns a 50 ms difference. The two are interleaved run by run.
    """
    if os.geteuid() == 0:
        with tmpfs(work / "create-fs", "6g") as fs:
            rows = _bench_create(quick, fs)
        for row in rows:
            if isinstance(row, Row):
                row.note = "on a tmpfs (disk writeback noise removed)"
        return rows
    return _bench_create(quick, work)


def _bench_create(quick: bool, work: Path) -> list[Row | Skipped]:
    from bench.synthetic import synthetic_channel

    n = 50 if quick else 200
    repeat = 1 if quick else 7
    url = synthetic_channel(work / "chan", n, versions=3, files_per_package=100)
    specs = [f"pkg{i:03d}" for i in range(n - 10, n)]  # the top ones pull in most of the rest
    raw = work / "raw.py"
    raw.write_text(RAW_RATTLER)
    rows: list[Row | Skipped] = []
    home, storage = work / "home", work / "storage"
    env = {
        **os.environ,
        "HOME": str(home),
        "HPCENV_STORAGE": str(storage),
        "HPCENV_SITE_CONFIG": str(work / "none.toml"),
        "HPCENV_ALLOW_HOME": "1",
    }
    counter = iter(range(10_000))

    def raw_once(warm: bool) -> float:
        i = next(counter)
        cache = work / "raw-cache" if warm else work / f"raw-cache-{i}"
        t0 = time.perf_counter()
        run([sys.executable, str(raw), url, str(cache), str(work / f"raw-env-{i}"), *specs])
        elapsed = time.perf_counter() - t0
        shutil.rmtree(work / f"raw-env-{i}")
        if not warm:
            shutil.rmtree(cache)
        return elapsed

    def hpcenv_once(warm: bool) -> float:
        i = next(counter)
        shutil.rmtree(home, ignore_errors=True)
        (home / ".conda").mkdir(parents=True)
        if not warm:
            shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(exist_ok=True)
        prefix = storage / f"env{i}"
        t0 = time.perf_counter()
        run(hpcenv_cmd("-q", "create", "-p", str(prefix), *specs, "-c", url), env=env)
        elapsed = time.perf_counter() - t0
        shutil.rmtree(prefix)
        return elapsed

    for warm in (False, True):
        if warm:  # one untimed run of each fills its cache
            raw_once(True)
            hpcenv_once(True)
        t_raw, t_h = [], []
        for _ in range(repeat):
            t_raw.append(raw_once(warm))
            t_h.append(hpcenv_once(warm))
        ratio = statistics.median(t_h) / statistics.median(t_raw)
        rows.append(
            Row(
                "create",
                f"{'warm' if warm else 'cold'} cache, {n * 3} packages x 100 files",
                t_h,
                "py-rattler script",
                t_raw,
                "<= 1.2x",
                ratio <= 1.2,
            )
        )
    return rows


def _demo_env(work: Path) -> tuple[dict, Path]:
    from hpcenv.channel import build_channel, demo_packages

    url = build_channel(work / "chan", demo_packages())
    home, storage = work / "home", work / "storage"
    home.mkdir()
    storage.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "HPCENV_STORAGE": str(storage),
        "HPCENV_SITE_CONFIG": str(work / "none.toml"),
    }
    run(hpcenv_cmd("-q", "setup", "--yes"), env=env)
    run(hpcenv_cmd("-q", "create", "demo", "python", "demo-tool", "-c", url), env=env)
    return env, home / ".conda" / "envs" / "demo"


def bench_activation(quick: bool, work: Path) -> list[Row | Skipped]:
    """Sourcing the static script and eval of `hpcenv activate` vs `bash -c true`;
    `hpcenv --version` vs `python3 -c pass`."""
    repeat = 10 if quick else 30
    env, prefix = _demo_env(work)
    static = prefix / "etc/hpcenv/activate.sh"
    bash_true = timeit(lambda: run(["bash", "-c", "true"], env=env), repeat)
    t_static = timeit(lambda: run(["bash", "-c", f". '{static}'"], env=env), repeat)
    # the console script beside this interpreter (not a pyenv shim, which costs ~100 ms)
    exe = Path(sys.executable).parent / "hpcenv"
    hp = str(exe) if exe.exists() else " ".join(hpcenv_cmd())
    t_eval = timeit(lambda: run(["bash", "-c", f'eval "$({hp} activate demo)"'], env=env), repeat)
    py_pass = timeit(lambda: run([sys.executable, "-c", "pass"], env=env), repeat)
    version_cmd = [str(exe), "--version"] if exe.exists() else hpcenv_cmd("--version")
    t_version = timeit(lambda: run(version_cmd, env=env), repeat)
    med = statistics.median
    return [
        Row(
            "activation",
            "source PREFIX/etc/hpcenv/activate.sh",
            t_static,
            "bash -c true",
            bash_true,
            "< 10 ms",
            med(t_static) < 0.010,
        ),
        Row(
            "activation",
            'eval "$(hpcenv activate demo)"',
            t_eval,
            "bash -c true",
            bash_true,
            "< 150 ms",
            med(t_eval) < 0.150,
        ),
        Row(
            "startup",
            "hpcenv --version",
            t_version,
            "python3 -c pass",
            py_pass,
            "< 150 ms",
            med(t_version) < 0.150,
        ),
    ]


def bench_usage(quick: bool, work: Path) -> list[Row | Skipped]:
    """The usage scan vs `du -s` on the same tree, both warm."""
    files = 20_000 if quick else 200_000
    tree = work / "tree"
    make_tree(tree, files, size=10)
    repeat = 1 if quick else 5
    code = "import sys; from hpcenv.treescan import scan; scan(sys.argv[1])"
    run(["du", "-s", str(tree)])  # warm the dentry and inode caches
    du = timeit(lambda: run(["du", "-s", str(tree)]), repeat)
    h = timeit(lambda: run([sys.executable, "-c", code, str(tree)]), repeat)
    ratio = statistics.median(h) / statistics.median(du)
    return [
        Row(
            "usage",
            f"scan of {files:,} files (hardlinks once, parallel scandir)",
            h,
            "du -s",
            du,
            "<= 1.0x",
            ratio <= 1.0,
        )
    ]


def bench_verify(quick: bool, work: Path) -> list[Row | Skipped]:
    """verify of one env (stat only; then --full) vs `du -s` (and sha256sum) of the same env,
    both warm, interleaved run by run. The env: synthetic packages of 1,000 files each."""
    from bench.synthetic import synthetic_channel

    from hpcenv import engine

    n = 20 if quick else 100
    url = synthetic_channel(work / "chan", n, versions=1, files_per_package=1000)
    prefix = work / "env"
    solution = engine.solve([url], [f"pkg{i:03d}" for i in range(n)], cache_dir=work / "cache")
    engine.install(solution, prefix, cache_dir=work / "cache")
    files = n * 1000
    repeat = 1 if quick else 7
    code = (
        "import sys; from pathlib import Path; from hpcenv.verify import check_prefix; "
        "c = check_prefix(Path(sys.argv[1]), full=sys.argv[2] == 'full'); "
        "sys.exit(1 if c.broken or c.files != int(sys.argv[3]) else 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    quick_check = [sys.executable, "-c", code, str(prefix), "quick", str(files)]
    full_check = [sys.executable, "-c", code, str(prefix), "full", str(files)]
    sha = [
        "sh",
        "-c",
        'find "$1" -type f -print0 | xargs -0 sha256sum > /dev/null',
        "_",
        str(prefix),
    ]
    run(["du", "-s", str(prefix)])  # warm the dentry and inode caches
    run(quick_check, env=env)
    t_du, t_h, t_sha, t_full = [], [], [], []
    for _ in range(repeat):
        t_du += timeit(lambda: run(["du", "-s", str(prefix)]), 1)
        t_h += timeit(lambda: run(quick_check, env=env), 1)
    for _ in range(max(1, repeat // 2)):
        t_sha += timeit(lambda: run(sha), 1)
        t_full += timeit(lambda: run(full_check, env=env), 1)
    ratio = statistics.median(t_h) / statistics.median(t_du)
    return [
        Row(
            "verify",
            f"stat check of a {files:,}-file env ({n} packages; sizes, types, modes, extras)",
            t_h,
            "du -s",
            t_du,
            "<= 1.5x",
            ratio <= 1.5,
        ),
        Row(
            "verify", "--full (sha256 of every file)", t_full, "find + sha256sum", t_sha, "-", None
        ),
    ]


def bench_submit(quick: bool, work: Path) -> list[Row | Skipped]:
    """hpcenv submit --wait vs sbatch --wait of the same script, on a real SLURM."""
    if shutil.which("sbatch") is None:
        return [Skipped("submit", "no sbatch on this machine")]
    cluster = None
    probe = subprocess.run(["sinfo", "-h"], capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.strip():
        if os.geteuid() != 0:
            return [Skipped("submit", "SLURM is not answering and starting it needs root")]
        from tests.slurm import start_slurm

        cluster = start_slurm()
        os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        env, prefix = _demo_env(work)
        pairs = 1 if quick else 7
        script = subprocess.run(
            hpcenv_cmd("jobscript", "demo", "--", "demo-tool"),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (work / "storage" / "hpcenv-logs").mkdir(exist_ok=True)
        # interleaved, and compared by their fastest run: sbatch --wait polls the job 2 s after
        # submitting, then at longer steps, so the same ~2 s job ends up at 2 s or 4 s by luck;
        # the minimum is the run both caught at the first poll (medians only sort the luck)
        # A pair takes ~6 s and locks onto slurmctld's own cycle, so one side can lose every
        # time: a pause that differs from run to run spreads the phases.
        t_s, t_h = [], []
        for i in range(pairs):
            time.sleep((i * 0.7) % 2.0)
            t_s += timeit(
                lambda: run(["sbatch", "--wait", "--parsable"], input=script.encode(), env=env), 1
            )
            time.sleep((i * 1.3) % 2.0)
            t_h += timeit(
                lambda: run(
                    hpcenv_cmd("-q", "submit", "demo", "--wait", "--", "demo-tool"), env=env
                ),
                1,
            )
        ratio = min(t_h) / min(t_s)
        return [
            Row(
                "submit",
                "submit --wait to job end (single-node SLURM on loopback)",
                t_h,
                "sbatch --wait",
                t_s,
                "< 1.1x",
                ratio < 1.1,
                f"ratio of the fastest runs {ratio:.2f}x (sbatch --wait polls at 2 s steps)",
            )
        ]
    finally:
        if cluster is not None:
            from tests.slurm import stop_slurm

            stop_slurm(cluster)


def bench_pack(quick: bool, work: Path) -> list[Row | Skipped]:
    """pack + stage of a 20,000-file env (stage = unpack + conda-unpack)."""
    from bench.synthetic import synthetic_channel

    n = 50 if quick else 200
    url = synthetic_channel(work / "chan", n, versions=1, files_per_package=100)
    home, storage = work / "home", work / "storage"
    (home / ".conda").mkdir(parents=True)
    storage.mkdir()
    env = user_env(work)
    prefix = storage / "big"
    run(
        hpcenv_cmd(
            "-q", "create", "-p", str(prefix), *[f"pkg{i:03d}" for i in range(n)], "-c", url
        ),
        env=env,
    )
    files = sum(len(f) for _, _, f in os.walk(prefix))
    t_pack = timeit(lambda: run(hpcenv_cmd("pack", str(prefix)), env=env), 1)
    t_reuse = timeit(lambda: run(hpcenv_cmd("pack", str(prefix)), env=env), 3)
    counter = iter(range(100))
    t_stage = timeit(
        lambda: run(
            hpcenv_cmd("stage", str(prefix), "--to", str(work / f"st{next(counter)}")), env=env
        ),
        3,
    )
    t_tar = timeit(lambda: run(["tar", "-cf", str(work / "plain.tar"), "-C", str(prefix), "."]), 3)
    return [
        Row(
            "pack",
            f"first pack of a {files:,}-file env",
            t_pack,
            "tar -cf (no compression)",
            t_tar,
            "-",
            None,
        ),
        Row("pack", "pack again, env unchanged (cache hit)", t_reuse, "tar -cf", t_tar, "-", None),
        Row("stage", "stage (unpack + conda-unpack)", t_stage, "tar -cf", t_tar, "-", None),
    ]


def bench_real(quick: bool, work: Path) -> list[Row | Skipped]:
    """create + stage on real packages (tests/realpkgs.py: this CPython, numpy from its wheel,
    tqdm noarch): against the raw py-rattler script (which compiles no .pyc) and tar."""
    from tests.realpkgs import RealPackagesUnavailable, build_real_channel, cache_root

    try:
        url = build_real_channel(cache_root()).url
    except RealPackagesUnavailable as exc:
        return [Skipped("real", str(exc))]
    specs = ["python", "numpy", "tqdm"]
    repeat = 1 if quick else 7
    t_h, t_raw = warm_creates(work, url, specs, repeat)
    env, storage = user_env(work), work / "storage"
    counter = iter(range(10_000))
    prefix = storage / "sci"
    run(hpcenv_cmd("-q", "create", "-p", str(prefix), *specs, "-c", url), env=env)
    files = sum(len(f) for _, _, f in os.walk(prefix))
    t_pack = timeit(lambda: run(hpcenv_cmd("pack", str(prefix)), env=env), 1)
    t_stage = timeit(
        lambda: run(
            hpcenv_cmd("stage", str(prefix), "--to", str(work / f"st{next(counter)}")), env=env
        ),
        repeat,
    )
    t_tar = timeit(lambda: run(["tar", "-cf", str(work / "plain.tar"), "-C", str(prefix), "."]), 3)
    return [
        Row(
            "real",
            "create python+numpy+tqdm, warm cache (hpcenv also byte-compiles tqdm, as conda)",
            t_h,
            "py-rattler script",
            t_raw,
            "-",
            None,
        ),
        Row("real", f"first pack of the {files:,}-file env", t_pack, "tar -cf", t_tar, "-", None),
        Row("real", "stage (unpack + conda-unpack)", t_stage, "tar -cf", t_tar, "-", None),
    ]


def bench_stage(quick: bool, work: Path) -> list[Row | Skipped]:
    """`hpcenv stage` inside a 3-node allocation vs `sbcast` of the same pack plus `tar -x` on
    each node, on the test cluster (three slurmd, each with its own tmpfs as node-local
    disk). Timed inside one job, so scheduling and `sbatch --wait` polling are left out."""
    if os.geteuid() != 0 or shutil.which("slurmd") is None or shutil.which("sbcast") is None:
        return [Skipped("stage", "needs root and SLURM (slurmd, sbcast) to start 3 nodes")]
    from bench.synthetic import synthetic_channel
    from tests.slurm import NODE_LOCAL, start_slurm, stop_slurm

    n = 20 if quick else 200
    repeat = 1 if quick else 5
    url = synthetic_channel(work / "chan", n, versions=1, files_per_package=100)
    home, storage = work / "home", work / "storage"
    (home / ".conda").mkdir(parents=True)
    storage.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "HPCENV_STORAGE": str(storage),
        "HPCENV_SITE_CONFIG": str(work / "none.toml"),
        "HPCENV_ALLOW_HOME": "1",
        "PYTHONPATH": str(REPO / "src"),
    }
    prefix = storage / "big"
    pkgs = [f"pkg{i:03d}" for i in range(n)]
    run(hpcenv_cmd("-q", "create", "-p", str(prefix), *pkgs, "-c", url), env=env)
    files = sum(len(f) for _, _, f in os.walk(prefix))
    pack = run(hpcenv_cmd("pack", str(prefix)), env=env, text=True).stdout.strip()
    hpcenv = " ".join(shlex.quote(w) for w in hpcenv_cmd("-q", "stage", str(prefix)))
    # the same env as an image env: its image file, mounted on each node as its jobs do
    image_line = "t3=$t2"
    if shutil.which("squashfuse") and os.path.exists("/dev/fuse"):
        from hpcenv import images

        env["HPCENV_IMAGES_MOUNT_ROOT"] = str(work / "mr")
        (work / "mr").mkdir()
        run(hpcenv_cmd("-q", "create", "-p", str(storage / "bigimg"), *pkgs, "-c", url,
                       "--image"), env=env)  # fmt: skip
        img = shlex.quote(str(images.current_ref(storage / "bigimg").image))
        mount_each = (
            'mkdir -p "$2" && squashfuse "$1" "$2" && test -d "$2/conda-meta" '
            '&& fusermount3 -u "$2" && rmdir "$2"'
        )
        image_line = (
            f"srun --nodes=3 --ntasks-per-node=1 bash -c {shlex.quote(mount_each)} _ {img} "
            f"{shlex.quote(str(NODE_LOCAL))}/m$i\n  t3=$(now)"
        )
    nl = shlex.quote(str(NODE_LOCAL))
    each = "srun --nodes=3 --ntasks-per-node=1"
    script = f"""#!/bin/bash
#SBATCH --nodes=3
#SBATCH --output={work}/stage.log
set -e
now() {{ date +%s.%N; }}
for i in $(seq {repeat}); do
  t0=$(now)
  {hpcenv} --to {nl}/h$i/env >/dev/null
  t1=$(now)
  sbcast --force {shlex.quote(pack)} {nl}/b$i.tar.gz
  {each} bash -c 'mkdir -p "$1" && tar -xzf "$1.tar.gz" -C "$1"' _ {nl}/b$i
  t2=$(now)
  {image_line}
  {each} test -x {nl}/h$i/env/bin/conda-unpack
  {each} rm -rf {nl}/h$i {nl}/b$i {nl}/b$i.tar.gz
  echo "TIMES $t0 $t1 $t2 $t3"
done
"""
    cluster = start_slurm()
    try:
        env["SLURM_CONF"] = str(cluster.conf)
        run(["sbatch", "--wait", "--parsable"], input=script.encode(), env=env)
    finally:
        stop_slurm(cluster)
    t_h, t_b, t_m = [], [], []
    for line in (work / "stage.log").read_text().splitlines():
        if line.startswith("TIMES "):
            t0, t1, t2, t3 = map(float, line.split()[1:])
            t_h.append(t1 - t0)
            t_b.append(t2 - t1)
            if t3 > t2:
                t_m.append(t3 - t2)
    size = os.path.getsize(pack) / 1e6
    ratio = statistics.median(t_h) / statistics.median(t_b)
    rows: list[Row | Skipped] = [
        Row(
            "stage",
            f"stage on 3 nodes: {files:,}-file env, {size:.1f} MB pack (node-local tmpfs)",
            t_h,
            "sbcast + tar -x on each node",
            t_b,
            "<= 1.3x",
            ratio <= 1.3,
            "hpcenv also starts Python, checks the pack, makes a private dir per node and "
            "runs conda-unpack",
        )
    ]
    if t_m:
        rows.append(
            Row(
                "stage",
                "the same env as an image: squashfuse of its image on each node (mount, look, "
                "unmount), what an image env's job does instead of staging",
                t_m,
                "sbcast + tar -x on each node",
                t_b,
                "-",
                None,
            )
        )
    else:
        rows.append(Skipped("stage", "image mount per node: needs squashfuse and /dev/fuse"))
    return rows


def bench_startup(quick: bool, work: Path) -> list[Row | Skipped]:
    """Start-up as users get it (bench/startup.py): fresh processes of a pip-like install."""
    from bench.startup import bench_startup as run_startup

    return run_startup(quick, work, Row, _demo_env)


def bench_kernel(quick: bool, work: Path) -> list[Row | Skipped]:
    """Jupyter kernel start, from the kernelspec to the first execute reply (jupyter_client,
    as a Jupyter server starts it): `hpcenv kernel` (bash launcher: activation with two
    activate.d scripts, then exec python) against `python -m ipykernel install --prefix`
    (python directly, no activation), for the same env (the real CPython, ipykernel from PyPI)."""
    from tests.hooked import hooked_packages
    from tests.jupyter import client_env, fetch_ipykernel_wheels, pip_section, start_kernel
    from tests.realpkgs import RealPackagesUnavailable, build_real_channel, cache_root

    from hpcenv.channel import build_channel

    try:
        url = build_real_channel(cache_root()).url
        wheels = fetch_ipykernel_wheels(cache_root())
    except RealPackagesUnavailable as exc:
        return [Skipped("kernel", str(exc))]
    hooks = build_channel(work / "hooks", hooked_packages())
    home, storage, jd = work / "home", work / "storage", work / "jupyter"
    for d in (home, storage):
        d.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "HPCENV_STORAGE": str(storage),
        "HPCENV_SITE_CONFIG": str(work / "none.toml"),
        "JUPYTER_DATA_DIR": str(jd),
    }
    run(hpcenv_cmd("-q", "setup", "--yes"), env=env)
    yml = work / "nb.yml"
    yml.write_text(
        f"name: nb\nchannels:\n  - {url}\n  - {hooks}\ndependencies:\n  - python\n"
        "  - gdal-like\n  - late-hook\n" + pip_section(wheels)
    )
    run(hpcenv_cmd("-q", "create", "-f", str(yml)), env=env)
    run(hpcenv_cmd("-q", "kernel", "nb"), env=env)
    python = home / ".conda" / "envs" / "nb" / "bin" / "python"
    plain = work / "plain"
    run([str(python), "-m", "ipykernel", "install", "--prefix", str(plain), "--name", "plain"],
        env=client_env())  # fmt: skip
    server = client_env(HOME=str(home))

    def once(data_dir: Path, name: str) -> float:
        result = start_kernel(data_dir, name, "1", env=server)
        if result["status"] != "ok":
            raise RuntimeError(f"kernel {name} did not start: {result}")
        return result["seconds"]

    if not quick:  # warm the page cache for both
        once(jd, "hpcenv-nb")
        once(plain / "share" / "jupyter", "plain")
    t_h, t_plain = [], []
    for _ in range(1 if quick else 15):
        t_h.append(once(jd, "hpcenv-nb"))
        t_plain.append(once(plain / "share" / "jupyter", "plain"))
    ratio = statistics.median(t_h) / statistics.median(t_plain)
    # the launcher up to its exec (module lines, --env, activation, hooks): what hpcenv adds
    launcher = (jd / "kernels" / "hpcenv-nb" / "launch.sh").read_text().rstrip("\n")
    before_exec = work / "before-exec.sh"
    before_exec.write_text(launcher.rsplit("\n", 1)[0] + "\n")
    launches = 5 if quick else 20
    t_launch = timeit(lambda: run(["/bin/bash", str(before_exec)], env=server), launches)
    note = (
        f"ratio of the fastest runs {min(t_h) / min(t_plain):.2f}x; the launcher itself, up to "
        f"its exec: {statistics.median(t_launch) * 1e3:.1f} ms"
    )
    return [
        Row(
            "kernel",
            "Jupyter kernel start, spec to first execute reply (activation + 2 activate.d scripts)",
            t_h,
            "ipykernel install --prefix",
            t_plain,
            "<= 1.1x",
            ratio <= 1.1,
            note,
        )
    ]


def bench_sitecache(quick: bool, work: Path) -> list[Row | Skipped]:
    """A user's create from a warm site package cache vs from their own warm cache, and the
    user's disk use after a first env either way. As root: root fills the layer, hpcalice
    creates (tests/users.py), on an XFS loop filesystem with reflink=1 when xfsprogs is
    there (else on this machine's filesystem, noted). The two are interleaved run by run."""
    if os.geteuid() != 0:
        return [Skipped("sitecache", "needs root (a loop XFS and a second, real user)")]
    from tests.fs import xfs_reflink

    if shutil.which("mkfs.xfs"):
        with xfs_reflink(work / "xfs", work / "xfs.img", "3G") as fs:
            fs.chmod(0o755)
            return _bench_sitecache(quick, work, fs, "on an XFS loop filesystem (reflink=1)")
    plain = work / "plain"
    plain.mkdir(mode=0o755)
    return _bench_sitecache(quick, work, plain, "no xfsprogs: on this machine's filesystem")


def _bench_sitecache(quick: bool, work: Path, fs: Path, where: str) -> list[Row | Skipped]:
    from tests.users import chown_tree, ensure_users, hpcenv_as, readable_copy

    from hpcenv.channel import PackageRecipe, build_channel

    ensure_users()
    # the bench's temporary directories (and the quick run's tmpfs): hpcalice must pass through
    top = Path(tempfile.gettempdir())
    for d in [work, *work.parents]:
        if d == top or not d.is_relative_to(top):
            break
        d.chmod(0o755)
    n, files, size = (20, 40, 32 * 1024) if quick else (60, 60, 48 * 1024)
    repeat = 1 if quick else 7
    specs = [
        PackageRecipe(
            f"big{i:02d}",
            "1.0",
            depends=(f"big{i - 1:02d}",) if i else (),
            files={
                f"share/big{i:02d}/f{k:03d}": bytes([i, k % 256]) * (size // 2)
                for k in range(files)
            },
        )
        for i in range(n)
    ]
    url = readable_copy(
        Path(build_channel(work / "chan-build", specs).removeprefix("file://")), work / "chan"
    ).as_uri()
    top = f"big{n - 1:02d}"
    layer = fs / "site" / "pkgs"
    layer.parent.mkdir(mode=0o755)
    config = work / "site.toml"
    config.write_text(f'package_caches = ["{layer}"]\n')
    config.chmod(0o644)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HPCENV_")}
    base_env["PYTHONPATH"] = str(REPO / "src")
    run(
        hpcenv_cmd("-q", "cache", "fill", top, "-c", url),
        env={**base_env, "HPCENV_SITE_CONFIG": str(config)},
    )

    homes = work / "homes"
    homes.mkdir(mode=0o755)

    def user_env(tag: str, site: bool) -> dict[str, str]:
        home, storage = homes / tag, fs / f"storage-{tag}"
        for d in (home, storage):
            d.mkdir(exist_ok=True)
            chown_tree(d, "hpcalice")
        return {
            **base_env, "HOME": str(home), "HPCENV_STORAGE": str(storage),
            "HPCENV_SITE_CONFIG": str(config if site else work / "none.toml"),
        }  # fmt: skip

    own, from_site = user_env("own", False), user_env("site", True)

    def create(env: dict[str, str], i: int) -> float:
        prefix = Path(env["HPCENV_STORAGE"]) / f"env{i}"
        t0 = time.perf_counter()
        result = hpcenv_as("hpcalice", "-q", "create", "-p", str(prefix), top, "-c", url, env=env)
        elapsed = time.perf_counter() - t0
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip())
        shutil.rmtree(prefix)
        return elapsed

    def reset(env: dict[str, str]) -> None:  # a user who has never used the layer
        cache = Path(env["HPCENV_STORAGE"]) / ".cache"
        shutil.rmtree(cache, ignore_errors=True)

    def free() -> int:
        subprocess.run(["sync"], check=False)
        st = os.statvfs(fs)
        return st.f_bfree * st.f_frsize

    # disk use of a first env, each way (own cache: download + extract + link)
    before = free()
    create_keep = Path(own["HPCENV_STORAGE"]) / "first"
    first = hpcenv_as("hpcalice", "-q", "create", "-p", str(create_keep), top, "-c", url, env=own)
    if first.returncode != 0:
        raise RuntimeError(first.stderr.strip())
    own_bytes = before - free()
    before = free()
    site_keep = Path(from_site["HPCENV_STORAGE"]) / "first"
    out = hpcenv_as(
        "hpcalice", "create", "-p", str(site_keep), top, "-c", url, "--json", env=from_site
    )
    site_bytes = before - free()
    import json as _json

    method = (
        _json.loads(out.stdout)["result"]["site"]["method"] if out.returncode == 0 else "failed"
    )
    data_mib = n * files * size / 2**20
    t_own, t_site = [], []
    for i in range(repeat):
        t_own.append(create(own, i))
        reset(from_site)
        t_site.append(create(from_site, i))
    ratio = statistics.median(t_site) / statistics.median(t_own)
    note = (
        f"{where}; files linked by {method}. The user's disk use after a first env "
        f"({data_mib:.0f} MiB of package files): {own_bytes / 2**20:.1f} MiB from the own "
        f"cache (download + unpack + env), {site_bytes / 2**20:.1f} MiB from the layer"
    )
    return [
        Row(
            "sitecache",
            f"create as a user, {n} packages x {files} files of {size // 1024} KiB, from a warm "
            "site layer (own cache empty)",
            t_site,
            "create from a warm own cache",
            t_own,
            "<= 1.1x",
            ratio <= 1.1,
            note,
        )
    ]


def _storage_calls(cmd: list[str], trees: list[Path], env: dict, out: Path) -> tuple[int, int]:
    """Run `cmd` under `strace -f` (every process it starts): (calls that name a path in one
    of `trees`, all file-name calls), from `-e trace=%file`."""
    run(["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(out), *cmd], env=env)
    lines = out.read_text(errors="replace").splitlines()
    marks = [m for t in trees for m in (f'"{t}/', f'"{t}"')]
    return sum(any(m in line for m in marks) for line in lines), len(lines)


def _strace_total(cmd: list[str], env: dict, out: Path) -> int:
    """All syscalls of `cmd` and its children, as `strace -f -c` sums them."""
    run(["strace", "-f", "-c", "-o", str(out), *cmd], env=env)
    fields = (
        out.read_text().strip().splitlines()[-1].split()
    )  # "100.00 s us/call CALLS [err] total"
    return int(fields[3])


def bench_images(quick: bool, work: Path) -> list[Row | Skipped]:
    """Image envs (issue 22) on real packages (python, numpy, tqdm): files in storage, the
    storage tree's filesystem calls during `import numpy`, build time against `mksquashfs` of
    the same tree plus the create, import time from the mount against a local directory."""
    tools = ("mksquashfs", "squashfuse", "strace")
    if missing := [t for t in tools if shutil.which(t) is None]:
        return [Skipped("images", f"needs {', '.join(missing)} (squashfs-tools squashfuse strace)")]
    if not os.path.exists("/dev/fuse"):
        return [Skipped("images", "needs /dev/fuse (the fuse kernel module)")]
    from tests.realpkgs import RealPackagesUnavailable, build_real_channel, cache_root

    from hpcenv import images

    try:
        url = build_real_channel(cache_root()).url
    except RealPackagesUnavailable as exc:
        return [Skipped("images", str(exc))]
    specs = ["python", "numpy", "tqdm"]
    repeat = 1 if quick else 5
    home, storage, local = work / "home", work / "storage", work / "local"
    mount_root = work / "mr"
    for d in (home / ".conda", storage, local, mount_root):
        d.mkdir(parents=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "HPCENV_STORAGE": str(storage),
        "HPCENV_SITE_CONFIG": str(work / "none.toml"),
        "HPCENV_IMAGES_MOUNT_ROOT": str(mount_root),
        "PYTHONPATH": str(REPO / "src"),
    }
    env.pop("SLURM_JOB_ID", None)
    run(hpcenv_cmd("-q", "setup", "--yes"), env=env)
    envs = storage / ".conda" / "envs"
    counter = iter(range(10_000))

    def create(*extra: str) -> Path:
        name = f"e{next(counter)}"
        run(hpcenv_cmd("-q", "create", name, *specs, "-c", url, *extra), env=env)
        return envs / name

    def files_in(tree: Path) -> int:
        return sum(len(d) + len(f) for _, d, f in os.walk(tree))

    def squash(tree: Path, target: Path) -> None:  # as hpcenv calls it (`images._mksquashfs`)
        run(["mksquashfs", str(tree), str(target), "-noappend", "-comp", "zstd",
             "-Xcompression-level", str(images.ZSTD_LEVEL), "-processors",
             str(images.processors()), "-no-xattrs", "-quiet", "-no-progress"])  # fmt: skip
        target.unlink()

    try:
        create()  # fill the package cache: every row below is a warm create
        # build: `create --image` vs a plain create plus mksquashfs of its tree (same options)
        t_image, t_plain, t_squash = [], [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            image = create("--image")
            t_image.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain = create()
            t_plain.append(time.perf_counter() - t0)
            t_squash += timeit(functools.partial(squash, plain, work / "plain.sqfs"), 1)
        plus = [p + q for p, q in zip(t_plain, t_squash, strict=True)]
        # the last image env and plain env of the loop are the ones measured below
        plain_files, image_files = files_in(plain), files_in(image)
        # the same env as a plain directory on local disk (outside storage)
        run(hpcenv_cmd("-q", "create", "-p", str(local / "sci"), *specs, "-c", url), env=env)
        run(hpcenv_cmd("-q", "run", image.name, "--", "true"), env=env)  # mounted once
        mount = Path(images.read_image(image).version.mount)
        code = "import numpy"
        on_mount = timeit(lambda: run([str(mount / "bin/python"), "-c", code]), 3)  # warm
        on_mount = timeit(lambda: run([str(mount / "bin/python"), "-c", code]), 5 * repeat)
        on_local = timeit(lambda: run([str(local / "sci/bin/python"), "-c", code]), 3)
        on_local = timeit(lambda: run([str(local / "sci/bin/python"), "-c", code]), 5 * repeat)

        # the storage tree, and the links in home that `setup` pointed into it (~/.conda)
        trees = [storage] + [
            p for p in home.iterdir() if p.is_symlink() and p.resolve().is_relative_to(storage)
        ]
        py = ["python", "-c", code]
        img_cmd = hpcenv_cmd("run", image.name, "--", *py)
        img_calls, img_all = _storage_calls(img_cmd, trees, env, work / "img.strace")
        plain_cmd = hpcenv_cmd("run", plain.name, "--", *py)
        plain_calls, plain_all = _storage_calls(plain_cmd, trees, env, work / "plain.strace")
        py_calls, _ = _storage_calls([str(mount / "bin/python"), "-c", code], trees, env,
                                     work / "py.strace")  # fmt: skip
        plain_py, _ = _storage_calls([str(plain / "bin/python"), "-c", code], trees, env,
                                     work / "plain-py.strace")  # fmt: skip
        img_total = _strace_total(img_cmd, env, work / "img.c")
        plain_total = _strace_total(plain_cmd, env, work / "plain.c")
        run(hpcenv_cmd("-q", "umount"), env=env)
    finally:
        subprocess.run(hpcenv_cmd("-q", "umount"), env=env, capture_output=True)
    med = statistics.median
    build_ratio = med(t_image) / med(plus)
    import_ratio = med(on_mount) / med(on_local)
    return [
        Row(
            "images",
            f"files in storage per env: image env {image_files}, plain env {plain_files:,}",
            [],
            "-",
            [],
            "<= 5 files",
            image_files <= 5,
        ),
        Row(
            "images",
            "file-name calls on the storage tree during `python -c 'import numpy'` (strace -f, "
            f"-e trace=%file): the image env's python, on its mount: {py_calls}; the plain "
            f"env's python: {plain_py:,}",
            [],
            "-",
            [],
            "<= 5 calls",
            py_calls <= 5,
            f"through `hpcenv run ENV -- python ...`: image env {img_calls} (the trust check "
            f"and the record: {img_all:,} file-name calls in all), plain env {plain_calls:,} "
            f"(of {plain_all:,}); strace -f -c, syscalls of every kind: image env "
            f"{img_total:,}, plain env {plain_total:,}",
        ),
        Row(
            "images",
            "create --image python+numpy+tqdm, warm cache",
            t_image,
            "create + mksquashfs of its tree",
            plus,
            "<= 1.2x",
            build_ratio <= 1.2,
            f"create alone {fmt(t_plain)}, mksquashfs alone {fmt(t_squash)}",
        ),
        Row(
            "images",
            "python -c 'import numpy' from the mounted image (warm)",
            on_mount,
            "from a plain local directory",
            on_local,
            "<= 1.2x",
            import_ratio <= 1.2,
        ),
    ]


def bench_fixed(quick: bool, work: Path) -> list[Row | Skipped]:
    """create's fixed cost: a warm create of one small package (one file) from a one-package
    channel, hpcenv against the plain py-rattler script; the difference of the medians is
    what hpcenv adds per command (start-up, checks, history, records, registry, scripts)."""
    from hpcenv.channel import PackageRecipe, build_channel

    url = build_channel(work / "chan", [PackageRecipe("tiny", "1.0", files={"share/t": "t\n"})])
    t_h, t_raw = warm_creates(work, url, ["tiny"], 3 if quick else 21)
    extra = (statistics.median(t_h) - statistics.median(t_raw)) * 1e3
    return [
        Row(
            "fixed",
            f"create of one one-file package, warm cache: hpcenv's fixed cost {extra:.0f} ms",
            t_h,
            "py-rattler script",
            t_raw,
            "<= +20 ms",
            extra <= 20,
        )
    ]


SECTIONS: dict[str, Callable[[bool, Path], list[Row | Skipped]]] = {
    "create": bench_create,
    "activation": bench_activation,
    "startup": bench_startup,
    "fixed": bench_fixed,
    "migration": bench_migration,
    "usage": bench_usage,
    "verify": bench_verify,
    "submit": bench_submit,
    "pack": bench_pack,
    "stage": bench_stage,
    "real": bench_real,
    "kernel": bench_kernel,
    "sitecache": bench_sitecache,
    "solve": lambda quick, work: __import__("cfscale").bench_solve(quick, work),
    "real-cold": lambda quick, work: __import__("realcold").bench_real_cold(quick, work),
    "images": bench_images,
}


def machine() -> str:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()} · {cpu} · {os.cpu_count()} CPUs · Linux {platform.release()} · Python {platform.python_version()}"


def commit() -> str:
    try:
        return run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], text=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def render(results: list[Row | Skipped]) -> str:
    lines = [
        "| section | case | hpcenv | baseline | baseline time | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if isinstance(r, Skipped):
            lines.append(f"| {r.section} | skipped: {r.reason} | | | | | | |")
            continue
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        case = r.case + (f" — {r.note}" if r.note else "")
        lines.append(
            f"| {r.section} | {case} | {fmt(r.hpcenv)} | {r.baseline_name} | {fmt(r.baseline)} | {ratio} | {r.goal} | {met} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    parser.add_argument(
        "--only", default="", help="comma-separated sections: " + ", ".join(SECTIONS)
    )
    parser.add_argument("--results", type=Path, default=None, help="write the markdown here")
    args = parser.parse_args()
    # as installed by pip: byte-compiled (this machine sets PYTHONDONTWRITEBYTECODE)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src")], capture_output=True
    )
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    results: list[Row | Skipped] = []
    with (
        tempfile.TemporaryDirectory(prefix="hpcenv-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        if args.quick and os.geteuid() == 0:
            # a smoke run: scratch in memory, so no section waits on the writeback and the
            # (discard-mounted) deletes of the one before it; the full run stays on disk
            root = stack.enter_context(tmpfs(root / "ram", "12g"))
        for name in chosen:
            work = root / name
            work.mkdir()
            t0 = time.perf_counter()
            try:
                results.extend(SECTIONS[name](args.quick, work))
            except Exception as exc:  # a broken section is reported, the others still run
                results.append(Skipped(name, f"failed: {exc.__class__.__name__}: {exc}"))
            print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    table = render(results)
    print(table)
    if not args.quick or args.results:
        path = args.results or (REPO / "bench" / "RESULTS.md")
        header = (
            "# hpcenv benchmark results\n\n"
            f"- machine: {machine()}\n- date: {datetime.date.today().isoformat()}\n"
            f"- commit: {commit()}\n- command: `python bench/run.py{' --quick' if args.quick else ''}`\n\n"
        )
        footer = (
            "\nEach goal not met is explained, with the profile behind it and what was done, "
            "in [GAPS.md](GAPS.md).\n"
        )
        path.write_text(header + table + "\n" + footer)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
