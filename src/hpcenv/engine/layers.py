"""Site package caches as read-only layers under the user's own package cache.

rattler 0.28 reads a layered cache (`PackageCache.from_layers`) but opens every entry's
`<entry>.lock` (revision + sha256) for writing even to validate it, and takes its global
`.cache.lock` in the first layer whose directory has a write bit: a layer the user cannot
write fails the install with EACCES (checked as a real non-root user). So the user's own
`cache_dir/site/` stands in for the site's layers: for each package served from a layer it
holds a symlink to the layer's entry and a `.lock` of its own, and is given to rattler as
the first layer, filtered to exactly those packages; `cache_dir/pkgs` follows for the rest.
rattler links the files through the symlink (reflink, else hardlink, else copy), and never
writes into the layer. A record's `extracted_package_dir` names the symlink; its real path
is the layer's entry.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import rattler

from hpcenv.engine.seam import PackageInfo, package_cache_dir
from hpcenv.pkgcache import cached_sha256, check_cache_entry, entry_name, write_cache_metadata
from hpcenv.storage import CACHE_TRASH

SITE_VIEW = "site"


def site_view_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / SITE_VIEW


def from_layers(
    layers: Sequence[Path], packages: Sequence[PackageInfo], owners: Collection[int]
) -> tuple[dict[str, tuple[PackageInfo, Path]], list[str]]:
    """{entry name: (package, the layer's entry)} for the packages a layer holds whole, in
    the order the layers are given; and a warning for each entry skipped (damaged, changeable
    by others, or another build under the same name)."""
    served: dict[str, tuple[PackageInfo, Path]] = {}
    warnings: list[str] = []
    for package in packages:
        name = entry_name(package)
        for layer in layers:
            entry = Path(layer) / name
            try:
                if not stat.S_ISDIR(os.lstat(entry).st_mode):
                    continue
            except OSError:
                continue
            why = check_cache_entry(entry, owners)
            site_sha = cached_sha256(entry)
            if why is None and package.sha256 and site_sha and site_sha != package.sha256:
                why = "it is another build of that name (its sha256 differs)"
            if why is not None:
                warnings.append(
                    f"skipped {name} in the site package cache {layer}: {why}; "
                    "using your own cache (tell the site admins)"
                )
                continue
            served[name] = (package, entry)
            break
    return served, warnings


def site_view(cache_dir: Path, served: dict[str, tuple[PackageInfo, Path]]):
    """The PackageCache for an install that links `served` from site layers (see above)."""
    view = site_view_dir(cache_dir)
    view.mkdir(parents=True, exist_ok=True)
    for name, (package, entry) in served.items():
        link = view / name
        try:
            current = os.readlink(link)
        except FileNotFoundError:
            current = None
        except OSError:  # not a link: what rattler extracted here once; set it aside
            trash = Path(cache_dir) / CACHE_TRASH
            trash.mkdir(mode=0o700, exist_ok=True)
            os.rename(link, trash / f"{name}-site-{os.getpid()}-{time.time_ns()}")
            current = None
        if current != str(entry):
            tmp = view / f".{name}.link-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(entry, tmp)
            os.replace(tmp, link)
        write_cache_metadata(link, package.sha256)
    first = rattler.PackageCacheLayer(view)
    for package, _entry in served.values():
        first = first.with_filter(rattler.MatchSpec(package.pin))
    own = rattler.PackageCacheLayer(package_cache_dir(cache_dir))
    return rattler.PackageCache.from_layers([first, own])
