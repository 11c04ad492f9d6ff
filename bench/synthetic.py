"""A generated channel for benchmarks (not part of hpcenv: only bench/ and its tests use it)."""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
from pathlib import Path

from hpcenv import channel
from hpcenv.channel import PackageRecipe


def synthetic_packages(
    n_packages: int = 200, versions: int = 3, files_per_package: int = 100, seed: int = 0
) -> list[PackageRecipe]:
    """A generated channel for benchmarks: packages depend on a few lower-numbered ones."""
    rng = random.Random(seed)
    specs = []
    for i in range(n_packages):
        deps = tuple(f"pkg{j:03d}" for j in sorted(rng.sample(range(i), min(i, 3))))
        for v in range(versions):
            files = {
                f"share/pkg{i:03d}/f{k:03d}.txt": f"{i} {v} {k}\n" * 20
                for k in range(files_per_package)
            }
            specs.append(PackageRecipe(f"pkg{i:03d}", f"1.{v}", depends=deps, files=files))
    return specs


def synthetic_channel(dest: Path, n_packages: int, versions: int, files_per_package: int) -> str:
    """`synthetic_packages` built into a channel at DEST; its file:// URL.

    Building is setup, not what a section measures, and compressing the archives was a third of
    `--quick`: each channel is built once into the test cache (keyed by its size and by the
    source of hpcenv/channel.py, which writes the archives) and copied to DEST from there."""
    from tests.realpkgs import cache_root

    source = Path(channel.__file__).read_bytes()
    key = hashlib.sha256(
        repr((n_packages, versions, files_per_package)).encode() + source
    ).hexdigest()[:16]
    cached = cache_root().parent / "bench-channels" / key
    if not cached.is_dir():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            channel.build_channel(
                Path(tmp) / "c", synthetic_packages(n_packages, versions, files_per_package)
            )
            try:
                (Path(tmp) / "c").rename(cached)
            except OSError:  # another run built it first
                if not cached.is_dir():
                    raise
    shutil.copytree(cached, dest)
    return Path(dest).resolve().as_uri()
