#!/usr/bin/env python3
"""Where the time of a cross-filesystem `hpcenv setup` goes, phase by phase, beside cp -a and
rm -rf of the same tree (the profile behind the migration row of bench/RESULTS.md).

    python bench/migration_phases.py            # 100,000 files of 200 B (root: mounts a tmpfs)
    python bench/migration_phases.py --files 10000

Each phase is the library function `hpcenv setup` runs, timed in this process: survey (the
plan's walk: sizes, blocks, what this user may move), copy_tree (copy preserving modes, times,
links, holes), drain of the staging copy into place (renames), and drain of the home copy
(each file removed once checked identical to its copy, under a write lease).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hpcenv.setup import copy, drain, survey  # noqa: E402


def timed(label: str, fn) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"  {label:28s} {dt * 1000:8.0f} ms")
    return dt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root to mount a second (tmpfs) filesystem", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hpcenv-phases-") as tmp:
        work = Path(tmp)
        src, fs2 = work / "src", work / "fs2"
        payload = b"x" * 200
        for d in range((args.files + 499) // 500):
            sub = src / f"d{d:04d}"
            sub.mkdir(parents=True)
            for i in range(min(500, args.files - d * 500)):
                (sub / f"f{i:04d}").write_bytes(payload)
        fs2.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(fs2)], check=True)
        try:
            for rep in range(args.repeat):
                print(f"run {rep + 1}, {args.files:,} files")
                for p in fs2.iterdir():
                    shutil.rmtree(p)
                cp = timed("cp -a", lambda: subprocess.run(["cp", "-a", src, fs2 / "cp"]))
                rm = timed("rm -rf (the copy)", lambda: subprocess.run(["rm", "-rf", fs2 / "cp"]))
                n = timed(
                    "survey (plan)",
                    lambda: survey.survey(src, None, copy=True, count=True),
                )
                clock = time.time_ns()  # as the run takes it: before the copy begins
                c = timed("copy_tree", lambda: copy.copy_tree(src, fs2 / "staging"))
                (fs2 / "dst" / "x").mkdir(parents=True)
                tmp = {os.lstat(fs2).st_dev: fs2 / "tmp", os.lstat(work).st_dev: work / "tmp"}
                m = timed(
                    "drain staging (merge)",
                    lambda tmp=tmp: drain.Mover(tmp).drain(
                        fs2 / "staging", fs2 / "dst" / "x", fs2 / "c"
                    ),
                )
                r = timed(
                    "drain home (checked removal)",
                    lambda tmp=tmp, clock=clock: drain.Mover(tmp, clock=clock).drain(
                        src, fs2 / "dst" / "x", fs2 / "c"
                    ),
                )
                shutil.copytree(fs2 / "dst" / "x", src, symlinks=True)  # for the next run
                total = n + c + m + r
                print(
                    f"  phases {total * 1000:.0f} ms; throughput vs cp -a {cp / total:.2f}, "
                    f"vs cp -a + rm -rf {(cp + rm) / total:.2f}"
                )
        finally:
            subprocess.run(["umount", "-l", str(fs2)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
