#!/usr/bin/env python3
"""hpcenv.treescan.scan() against `du -s` on the same tree, warm cache.

    python bench/bench_scan.py            # 200,000 files
    python bench/bench_scan.py --quick    # 20,000 files
    python bench/bench_scan.py --fuse     # also on a FUSE view (bindfs; root): a slow filesystem
    python bench/bench_scan.py --no-env   # skip the package cache + hardlinked env case

The tree (in a temp dir, built once) looks like a package cache: nested package directories
of small files (0-8 KiB), about 10% of them extra hard links to files elsewhere in the tree.
Each case runs once to warm the cache, then `--repeat` times, the cases interleaved so a
change in the machine's load hits them alike. Wall time: median (min-max); CPU: median
user+sys seconds of the process and its children. No timing is asserted anywhere.

A second case is what `hpcenv usage` does: the tree's pkgs/ plus env/, a `cp -al` copy (every
file a hard link into pkgs/), measured together with scan_many() against `du -s pkgs env`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hpcenv.treescan import scan, scan_many  # noqa: E402


def build_tree(root: Path, files: int, hardlink_share: float = 0.1, seed: int = 1) -> None:
    """`files` entries under root/pkgs/<pkg>/<sub>/<mod>/, ~hardlink_share of them links."""
    rng = random.Random(seed)
    made: list[str] = []
    payload = b"x" * 8192
    pkg = 0
    while len(made) < files:
        for sub in range(rng.randint(1, 4)):
            for mod in range(rng.randint(1, 6)):
                d = root / "pkgs" / f"pkg{pkg:05d}" / f"sub{sub}" / f"mod{mod}"
                d.mkdir(parents=True)
                for i in range(min(rng.randint(5, 60), files - len(made))):
                    path = os.path.join(d, f"f{i:03d}.py")
                    if made and rng.random() < hardlink_share:
                        os.link(made[rng.randrange(len(made))], path)
                    else:
                        with open(path, "wb") as out:
                            out.write(payload[: rng.randint(0, 8192)])
                    made.append(path)
                if len(made) >= files:
                    return
        pkg += 1


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    before = os.times()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = sum(getattr(after, f) - getattr(before, f) for f in ("user", "system"))
    cpu += sum(getattr(after, f) - getattr(before, f) for f in ("children_user", "children_system"))
    return wall, cpu


def run_cases(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, list]:
    for fn in cases.values():  # warm the cache (and Python's)
        fn()
    times: dict[str, list] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            times[name].append(measure(fn))
    return times


def du_cmd(root: Path) -> Callable[[], object]:
    return lambda: subprocess.run(["du", "-s", str(root)], check=True, capture_output=True)


def table(title: str, times: dict[str, list], baseline: str) -> str:
    """A markdown table; the ratio is wall time over the baseline's, both medians."""
    base = statistics.median(w for w, _ in times[baseline])
    lines = [
        f"### {title}",
        "",
        "| case | wall median (min-max) | CPU median | wall / baseline |",
        "|---|---|---|---|",
    ]
    for name, runs in times.items():
        walls = [w for w, _ in runs]
        med = statistics.median(walls)
        cpu = statistics.median(c for _, c in runs)
        lines.append(
            f"| {name} | {med * 1e3:.0f} ms ({min(walls) * 1e3:.0f}-{max(walls) * 1e3:.0f}) "
            f"| {cpu * 1e3:.0f} ms | {med / base:.2f}x |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.node()} · {cpu} · {os.cpu_count()} CPUs · Linux {platform.release()} · "
        f"Python {platform.python_version()} · load {os.getloadavg()[0]:.1f}"
    )


@contextlib.contextmanager
def fuse_view(source: Path, mountpoint: Path) -> Iterator[Path | None]:
    """A bindfs (FUSE) view of `source` with kernel caching off: every lstat is a round trip
    to a user-space server, like NFS or Lustre. None when bindfs or root is missing."""
    if shutil.which("bindfs") is None or os.geteuid() != 0:
        yield None
        return
    mountpoint.mkdir()
    cache_off = "attr_timeout=0,entry_timeout=0,negative_timeout=0"
    subprocess.run(
        ["bindfs", "--multithreaded", "-o", cache_off, str(source), str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 files instead of 200,000")
    parser.add_argument("--files", type=int, help="tree size (overrides --quick)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", default="1,4", help="extra fixed thread counts to time")
    parser.add_argument("--no-env", action="store_true", help="skip the pkgs + env case")
    parser.add_argument("--fuse", action="store_true", help="also time on a bindfs view")
    parser.add_argument("--fuse-files", type=int, default=20_000)
    args = parser.parse_args()
    files = args.files or (20_000 if args.quick else 200_000)
    fixed = [int(t) for t in args.threads.split(",") if t]

    print(machine())
    with tempfile.TemporaryDirectory(prefix="hpcenv-bench-scan-") as tmp:
        root = Path(tmp) / "tree"
        t0 = time.perf_counter()
        build_tree(root, files)
        print(f"built {files:,} files in {time.perf_counter() - t0:.1f} s under {root}")
        got = scan(root)
        du_b1 = subprocess.run(["du", "-sB1", str(root)], capture_output=True, text=True)
        print(
            f"scan: {got.files:,} files, {got.dirs:,} dirs, {got.inodes:,} inodes, "
            f"disk {got.disk_bytes:,} B (du -sB1: {du_b1.stdout.split()[0]} B)"
        )
        cases = {"du -s": du_cmd(root), "scan() (threads=None)": lambda: scan(root)}
        for n in fixed:
            cases[f"scan(threads={n})"] = lambda n=n: scan(root, threads=n)
        print()
        title = f"local filesystem, warm, {files:,} files"
        print(table(title, run_cases(cases, args.repeat), "du -s"))

        if not args.no_env:
            pkgs, env = root / "pkgs", root / "env"
            subprocess.run(["cp", "-al", str(pkgs), str(env)], check=True)
            many = scan_many([pkgs, env])
            print(
                f"\nscan_many: env {many[env].apparent_bytes:,} B apparent, "
                f"{many[env].unique_bytes:,} B unique, {many[env].shared_bytes:,} B shared"
            )
            pair = {
                "du -s pkgs env": lambda: subprocess.run(
                    ["du", "-s", str(pkgs), str(env)], check=True, capture_output=True
                ),
                "scan_many([pkgs, env])": lambda: scan_many([pkgs, env]),
                "scan_many(threads=1)": lambda: scan_many([pkgs, env], threads=1),
            }
            title = f"package cache + hardlinked env, {2 * files:,} entries"
            print(table(title, run_cases(pair, args.repeat), "du -s pkgs env"))

        if args.fuse:
            small = Path(tmp) / "small"
            build_tree(small, args.fuse_files)
            with fuse_view(small, Path(tmp) / "fuse") as view:
                print()
                if view is None:
                    print("FUSE: skipped (needs root and bindfs)")
                else:
                    slow = {
                        "du -s": du_cmd(view),
                        "scan() (threads=None)": lambda: scan(view),
                        "scan(threads=1)": lambda: scan(view, threads=1),
                    }
                    title = f"FUSE (bindfs, no kernel cache), {args.fuse_files:,} files"
                    print(table(title, run_cases(slow, max(3, args.repeat // 2)), "du -s"))
    print()
    print(f"load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
