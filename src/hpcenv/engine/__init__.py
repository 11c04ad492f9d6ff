"""The engine seam: the only package that imports `rattler` (py-rattler 0.28).

A small synchronous API over rattler's async calls. One `cache_dir` (the caller passes
`STORAGE/.cache/rattler`) holds both caches:

    cache_dir/repodata/   the Gateway's repodata cache
    cache_dir/pkgs/       downloaded archives and extracted packages (hardlinked into envs)
    cache_dir/site/       links to the packages of site package caches (`layers`)

`__cuda` is never detected here: the caller (envs, through gpu.py) decides it and passes
`cuda=` ("12.4" adds `__cuda=12.4`, None means no `__cuda`), so one detector is the truth.

The modules: `seam` (rattler's exceptions, its async calls, `PackageInfo`), `specs` (match
specs), `solve` (solve, install, index a channel), `prefix` (what is installed), `lockfile`,
`layers` (site package caches under the user's own), `fetch` (into the cache, no env).
Callers use this package's names: `engine.solve(...)`, `engine.read_prefix(...)`.
"""

from hpcenv.engine.fetch import FetchError, fetch, fetch_package
from hpcenv.engine.layers import site_view_dir
from hpcenv.engine.lockfile import lock_channels, read_lock, read_lock_pypi, write_lock
from hpcenv.engine.prefix import installed_packages, linked_files, read_prefix
from hpcenv.engine.seam import (
    DamagedRecord,
    PackageInfo,
    PrefixState,
    Solution,
    package_cache_dir,
    platform,
    repodata_cache_dir,
)
from hpcenv.engine.solve import index_channel, install, solve, virtual_packages
from hpcenv.engine.specs import (
    SpecParts,
    check_specs,
    compare_versions,
    conda_spec,
    parse_spec,
    spec_matches,
    spec_name,
    spec_name_or_none,
)

__all__ = [
    "DamagedRecord",
    "FetchError",
    "fetch",
    "fetch_package",
    "read_lock_pypi",
    "site_view_dir",
    "PackageInfo",
    "PrefixState",
    "SpecParts",
    "Solution",
    "check_specs",
    "compare_versions",
    "conda_spec",
    "index_channel",
    "install",
    "installed_packages",
    "linked_files",
    "lock_channels",
    "package_cache_dir",
    "parse_spec",
    "platform",
    "read_lock",
    "read_prefix",
    "repodata_cache_dir",
    "solve",
    "spec_matches",
    "spec_name",
    "spec_name_or_none",
    "virtual_packages",
    "write_lock",
]
