#!/usr/bin/env python3
"""hpcenv benchmarks: each section times hpcenv against a baseline in the same run.

    python bench/run.py --quick          # small sizes, < 2 minutes, prints the table
    python bench/run.py                  # full sizes; writes bench/RESULTS.md
    python bench/run.py --only migration,usage

Timings are medians over repeated runs (min-max shown) with time.perf_counter; ratios are
hpcenv / baseline on the same machine in the same process tree. No timing is asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
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
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


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
    files = 10_000 if quick else 100_000
    repeat = 3
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
            ratio = statistics.median(cp) / statistics.median(h)
            out.append(
                Row(
                    "migration",
                    f"setup across filesystems, {files:,} files",
                    h,
                    "cp -a",
                    cp,
                    "throughput >= 0.8 x cp -a",
                    ratio >= 0.8,
                    f"throughput ratio {ratio:.2f} (copy + verify + merge + remove source)",
                )
            )
    # same filesystem: constant time whatever the size
    home, storage = work / "home-same", work / "storage-same"
    rows = []
    for n in [1_000, files] if not quick else [1_000, files]:
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


SECTIONS: dict[str, Callable[[bool, Path], list[Row | Skipped]]] = {
    "migration": bench_migration,
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
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    results: list[Row | Skipped] = []
    with tempfile.TemporaryDirectory(prefix="hpcenv-bench-") as tmp:
        for name in chosen:
            work = Path(tmp) / name
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
        path.write_text(header + table + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
