"""A generated channel for benchmarks (not part of hpcenv: only bench/ and its tests use it)."""

from __future__ import annotations

import random

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
