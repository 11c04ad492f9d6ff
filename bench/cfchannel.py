#!/usr/bin/env python3
"""A generated conda channel of conda-forge's size and shape: repodata only, no packages.

    python bench/cfchannel.py OUT                       # 30,000 names, ~500,000 records
    python bench/cfchannel.py OUT --names 3000 --records 50000

What it holds (seeded, so the same arguments give the same bytes):
- a core of 178 real conda-forge names, the data-science and JupyterLab stack with its C
  libraries (python 3.6-3.13 with `python_abi`, numpy, scipy, pandas, matplotlib, scikit-learn,
  jupyterlab and their dependencies), each with 1 to 200 versions x its builds;
- a tail of generated names up to `names`: most with 1-5 versions, a head with hundreds to
  1,500 versions x builds (versions per name drawn from a power law);
- compiled Python packages (linux-64) built per Python of their time: `py310h1a2b3c4_0` ...
  `py313...`, older versions for py36-py39, each depending on `python >=3.12,<3.13.0a0` and
  `python_abi 3.12.* *_cp312`; pure Python packages as `noarch: python` (`pyhd8ed1ab_0`);
  C libraries with conda-forge's run-export pins (`libzlib >=1.3.1,<2.0a0`) and, through
  `libgcc`, `__glibc >=2.17,<3.0.a0`;
- a dependency fan-out of a few names per package, toward more popular names, with version
  ranges taken from the dependency's versions of the same time (older versions pin older
  ones), and some old versions of the core depending on small tail packages since dropped
  (the six-era backports), through which a request reaches part of the tail;
- `.tar.bz2` entries before a cut-off date, `.conda` after, as conda-forge's repodata.

The records total about `records` (versions per name are scaled to it), split into
linux-64/repodata.json and noarch/repodata.json (compact JSON). The archives are absent: a
solve reads repodata only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GENERATOR = 1  # bump when the output changes: cached channels are keyed on it

# Python minor -> (first, last) time its builds were made, on a 0 (2017) .. 1 (2025) scale
PY_WINDOWS = {
    6: (0.00, 0.30),
    7: (0.00, 0.50),
    8: (0.10, 0.70),
    9: (0.20, 0.85),
    10: (0.40, 1.00),
    11: (0.55, 1.00),
    12: (0.70, 1.00),
    13: (0.88, 1.00),
}
PY_PATCHES = {6: 15, 7: 12, 8: 20, 9: 21, 10: 16, 11: 11, 12: 8, 13: 2}
EPOCH_MS, SPAN_MS = 1_483_228_800_000, 8 * 365 * 86_400_000  # 2017-01-01, 8 years
CONDA_FROM = 0.55  # entries made after this time are .conda, before .tar.bz2
GLIBC = "__glibc >=2.17,<3.0.a0"
LICENSES = ["MIT", "BSD-3-Clause", "Apache-2.0", "GPL-3.0-or-later", "LGPL-2.1-or-later", "PSF-2.0"]

# kinds: c = compiled Python extension (linux-64, per Python), n = noarch: python,
# l = C/C++ library (linux-64), g = noarch: generic
# name: (kind, versions, dependencies)
CORE: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "_libgcc_mutex": ("l", 1, ()),
    "_openmp_mutex": ("l", 3, ("_libgcc_mutex", "libgomp")),
    "libgomp": ("l", 25, ()),
    "libgcc": ("l", 12, ("_openmp_mutex",)),
    "libgcc-ng": ("l", 25, ("libgcc",)),
    "libstdcxx": ("l", 12, ("libgcc",)),
    "libstdcxx-ng": ("l", 25, ("libstdcxx",)),
    "libgfortran5": ("l", 15, ("libgcc",)),
    "libgfortran": ("l", 12, ("libgfortran5",)),
    "libgfortran-ng": ("l", 20, ("libgfortran",)),
    "ld_impl_linux-64": ("l", 18, ()),
    "libzlib": ("l", 8, ("libgcc",)),
    "bzip2": ("l", 4, ("libgcc",)),
    "liblzma": ("l", 14, ("libgcc",)),
    "libffi": ("l", 8, ("libgcc",)),
    "ncurses": ("l", 22, ("libgcc",)),
    "readline": ("l", 6, ("libgcc", "ncurses")),
    "libsqlite": ("l", 28, ("libgcc", "libzlib")),
    "tk": ("l", 7, ("libgcc", "libzlib")),
    "openssl": ("l", 70, ("ca-certificates", "libgcc")),
    "ca-certificates": ("g", 40, ()),
    "tzdata": ("g", 25, ()),
    "libuuid": ("l", 4, ("libgcc",)),
    "libnsl": ("l", 3, ("libgcc",)),
    "libxcrypt": ("l", 4, ("libgcc",)),
    "libexpat": ("l", 10, ("libgcc",)),
    "libopenblas": ("l", 28, ("libgcc", "libgfortran", "libgfortran5")),
    "libblas": ("l", 30, ("libopenblas",)),
    "libcblas": ("l", 30, ("libblas",)),
    "liblapack": ("l", 30, ("libblas",)),
    "libpng": ("l", 16, ("libgcc", "libzlib")),
    "freetype": ("l", 10, ("libgcc", "libpng", "libzlib")),
    "libjpeg-turbo": ("l", 8, ("libgcc",)),
    "libwebp-base": ("l", 9, ("libgcc",)),
    "zstd": ("l", 12, ("libgcc", "libstdcxx", "libzlib")),
    "lerc": ("l", 4, ("libgcc", "libstdcxx")),
    "libdeflate": ("l", 10, ("libgcc",)),
    "libtiff": (
        "l",
        14,
        ("libgcc", "libjpeg-turbo", "libwebp-base", "libzlib", "zstd", "lerc", "libdeflate"),
    ),
    "lcms2": ("l", 8, ("libgcc", "libjpeg-turbo", "libtiff")),
    "openjpeg": ("l", 8, ("libgcc", "libpng", "libtiff", "libzlib")),
    "pthread-stubs": ("l", 1, ()),
    "xorg-libxau": ("l", 4, ("libgcc",)),
    "xorg-libxdmcp": ("l", 4, ("libgcc",)),
    "libxcb": ("l", 8, ("libgcc", "pthread-stubs", "xorg-libxau", "xorg-libxdmcp")),
    "qhull": ("l", 4, ("libgcc", "libstdcxx")),
    "libsodium": ("l", 6, ("libgcc",)),
    "keyutils": ("l", 3, ("libgcc",)),
    "libedit": ("l", 5, ("libgcc", "ncurses")),
    "krb5": ("l", 12, ("libgcc", "libstdcxx", "openssl", "keyutils", "libedit")),
    "zeromq": ("l", 10, ("libgcc", "libstdcxx", "libsodium", "krb5")),
    "yaml": ("l", 4, ("libgcc",)),
    "icu": ("l", 7, ("libgcc", "libstdcxx")),
    "python": ("python", 0, ()),  # versions from PY_PATCHES
    "python_abi": ("abi", 0, ()),
    # compiled Python packages
    "numpy": ("c", 90, ("libblas", "libcblas", "liblapack", "libgcc", "libstdcxx")),
    "scipy": (
        "c",
        50,
        ("libblas", "libcblas", "liblapack", "libgcc", "libgfortran", "libstdcxx", "numpy"),
    ),
    "pandas": ("c", 60, ("numpy", "python-dateutil", "python-tzdata", "pytz", "libstdcxx")),
    "matplotlib": ("c", 45, ("matplotlib-base", "tornado")),
    "matplotlib-base": (
        "c",
        50,
        (
            "contourpy",
            "cycler",
            "fonttools",
            "freetype",
            "kiwisolver",
            "numpy",
            "packaging",
            "pillow",
            "pyparsing",
            "python-dateutil",
            "qhull",
            "libstdcxx",
        ),
    ),
    "contourpy": ("c", 14, ("numpy", "libstdcxx")),
    "kiwisolver": ("c", 12, ("libstdcxx",)),
    "fonttools": ("c", 70, ("brotli-python", "munkres", "unicodedata2")),
    "unicodedata2": ("c", 12, ("libgcc",)),
    "brotli-python": ("c", 8, ("libstdcxx",)),
    "pillow": (
        "c",
        40,
        ("freetype", "lcms2", "libjpeg-turbo", "libtiff", "libwebp-base", "libxcb", "openjpeg"),
    ),
    "scikit-learn": ("c", 40, ("joblib", "numpy", "scipy", "threadpoolctl", "_openmp_mutex")),
    "statsmodels": ("c", 20, ("numpy", "scipy", "pandas", "patsy", "packaging")),
    "markupsafe": ("c", 15, ("libgcc",)),
    "pyzmq": ("c", 40, ("zeromq", "libsodium", "libstdcxx")),
    "tornado": ("c", 25, ("libgcc",)),
    "psutil": ("c", 35, ("libgcc",)),
    "debugpy": ("c", 30, ("libstdcxx",)),
    "pyyaml": ("c", 12, ("yaml",)),
    "rpds-py": ("c", 30, ("libgcc",)),
    "cffi": ("c", 15, ("libffi", "pycparser")),
    "argon2-cffi-bindings": ("c", 4, ("cffi",)),
    # pure Python packages
    "pip": ("n", 80, ("setuptools", "wheel")),
    "setuptools": ("n", 200, ()),
    "wheel": ("n", 30, ()),
    "packaging": ("n", 20, ()),
    "tomli": ("n", 12, ()),
    "six": ("n", 10, ()),
    "python-dateutil": ("n", 15, ("six",)),
    "python-tzdata": ("n", 20, ()),
    "pytz": ("n", 40, ()),
    "joblib": ("n", 30, ()),
    "threadpoolctl": ("n", 10, ()),
    "cycler": ("n", 5, ()),
    "pyparsing": ("n", 25, ()),
    "munkres": ("n", 3, ()),
    "pycparser": ("n", 8, ()),
    "patsy": ("n", 12, ("numpy", "six")),
    "seaborn": ("n", 15, ("seaborn-base", "statsmodels")),
    "seaborn-base": ("n", 15, ("matplotlib-base", "numpy", "pandas", "scipy")),
    "jupyterlab": (
        "n",
        150,
        (
            "async-lru",
            "httpx",
            "ipykernel",
            "jinja2",
            "jupyter-lsp",
            "jupyter_core",
            "jupyter_server",
            "jupyterlab_server",
            "notebook-shim",
            "packaging",
            "setuptools",
            "tomli",
            "tornado",
            "traitlets",
        ),
    ),
    "ipykernel": (
        "n",
        70,
        (
            "comm",
            "debugpy",
            "ipython",
            "jupyter_client",
            "jupyter_core",
            "matplotlib-inline",
            "nest-asyncio",
            "packaging",
            "psutil",
            "pyzmq",
            "tornado",
            "traitlets",
        ),
    ),
    "ipython": (
        "n",
        90,
        (
            "decorator",
            "jedi",
            "matplotlib-inline",
            "pexpect",
            "pickleshare",
            "prompt-toolkit",
            "pygments",
            "stack_data",
            "traitlets",
            "typing_extensions",
        ),
    ),
    "pickleshare": ("n", 2, ()),
    "jedi": ("n", 20, ("parso",)),
    "parso": ("n", 15, ()),
    "decorator": ("n", 12, ()),
    "pexpect": ("n", 6, ("ptyprocess",)),
    "ptyprocess": ("n", 3, ()),
    "prompt-toolkit": ("n", 50, ("wcwidth",)),
    "wcwidth": ("n", 12, ()),
    "pygments": ("n", 35, ()),
    "stack_data": ("n", 8, ("asttokens", "executing", "pure_eval")),
    "asttokens": ("n", 8, ("six",)),
    "executing": ("n", 12, ()),
    "pure_eval": ("n", 4, ()),
    "traitlets": ("n", 25, ()),
    "typing_extensions": ("n", 30, ()),
    "matplotlib-inline": ("n", 8, ("traitlets",)),
    "comm": ("n", 6, ("traitlets",)),
    "nest-asyncio": ("n", 8, ()),
    "jupyter_client": (
        "n",
        45,
        ("jupyter_core", "python-dateutil", "pyzmq", "tornado", "traitlets"),
    ),
    "jupyter_core": ("n", 30, ("platformdirs", "traitlets")),
    "platformdirs": ("n", 30, ()),
    "jupyter_server": (
        "n",
        50,
        (
            "anyio",
            "argon2-cffi",
            "jinja2",
            "jupyter_client",
            "jupyter_core",
            "jupyter_events",
            "jupyter_server_terminals",
            "nbconvert-core",
            "nbformat",
            "overrides",
            "packaging",
            "prometheus_client",
            "pyzmq",
            "send2trash",
            "terminado",
            "tornado",
            "traitlets",
            "websocket-client",
        ),
    ),
    "anyio": ("n", 30, ("idna", "sniffio", "exceptiongroup", "typing_extensions")),
    "idna": ("n", 12, ()),
    "sniffio": ("n", 4, ()),
    "exceptiongroup": ("n", 6, ()),
    "argon2-cffi": ("n", 6, ("argon2-cffi-bindings",)),
    "jinja2": ("n", 25, ("markupsafe",)),
    "jupyter_events": (
        "n",
        10,
        (
            "jsonschema-with-format-nongpl",
            "python-json-logger",
            "pyyaml",
            "referencing",
            "rfc3339-validator",
            "rfc3986-validator",
            "traitlets",
        ),
    ),
    "jsonschema-with-format-nongpl": (
        "n",
        20,
        (
            "fqdn",
            "idna",
            "isoduration",
            "jsonpointer",
            "jsonschema",
            "rfc3339-validator",
            "rfc3986-validator",
            "uri-template",
            "webcolors",
        ),
    ),
    "jsonschema": ("n", 40, ("attrs", "jsonschema-specifications", "referencing", "rpds-py")),
    "attrs": ("n", 15, ()),
    "jsonschema-specifications": ("n", 6, ("referencing",)),
    "referencing": ("n", 12, ("attrs", "rpds-py")),
    "fqdn": ("n", 2, ()),
    "isoduration": ("n", 2, ("arrow",)),
    "arrow": ("n", 25, ("python-dateutil", "types-python-dateutil")),
    "types-python-dateutil": ("n", 40, ()),
    "jsonpointer": ("n", 6, ()),
    "uri-template": ("n", 3, ()),
    "webcolors": ("n", 6, ()),
    "rfc3339-validator": ("n", 2, ("six",)),
    "rfc3986-validator": ("n", 2, ()),
    "python-json-logger": ("n", 8, ()),
    "jupyter_server_terminals": ("n", 5, ("terminado",)),
    "terminado": ("n", 12, ("ptyprocess", "tornado")),
    "nbconvert-core": (
        "n",
        40,
        (
            "beautifulsoup4",
            "bleach",
            "defusedxml",
            "jinja2",
            "jupyter_core",
            "jupyterlab_pygments",
            "markupsafe",
            "mistune",
            "nbclient",
            "nbformat",
            "packaging",
            "pandocfilters",
            "pygments",
            "tinycss2",
            "traitlets",
        ),
    ),
    "beautifulsoup4": ("n", 20, ("soupsieve",)),
    "soupsieve": ("n", 10, ()),
    "bleach": ("n", 15, ("six", "webencodings")),
    "webencodings": ("n", 2, ()),
    "defusedxml": ("n", 3, ()),
    "jupyterlab_pygments": ("n", 6, ()),
    "mistune": ("n", 12, ()),
    "nbclient": ("n", 20, ("jupyter_client", "jupyter_core", "nbformat", "traitlets")),
    "nbformat": ("n", 20, ("fastjsonschema", "jsonschema", "jupyter_core", "traitlets")),
    "fastjsonschema": ("n", 10, ()),
    "pandocfilters": ("n", 3, ()),
    "tinycss2": ("n", 6, ("webencodings",)),
    "overrides": ("n", 8, ("typing_utils",)),
    "typing_utils": ("n", 2, ()),
    "prometheus_client": ("n", 20, ()),
    "send2trash": ("n", 8, ()),
    "websocket-client": ("n", 15, ()),
    "async-lru": ("n", 4, ("typing_extensions",)),
    "httpx": ("n", 30, ("anyio", "certifi", "httpcore", "idna", "sniffio")),
    "certifi": ("n", 40, ()),
    "httpcore": ("n", 25, ("h11", "h2", "anyio", "certifi", "sniffio")),
    "h11": ("n", 8, ()),
    "h2": ("n", 6, ("hpack", "hyperframe")),
    "hpack": ("n", 2, ()),
    "hyperframe": ("n", 3, ()),
    "jupyter-lsp": ("n", 12, ("jupyter_server",)),
    "jupyterlab_server": (
        "n",
        30,
        ("babel", "jinja2", "json5", "jsonschema", "jupyter_server", "packaging", "requests"),
    ),
    "babel": ("n", 15, ("pytz",)),
    "json5": ("n", 10, ()),
    "requests": ("n", 30, ("certifi", "charset-normalizer", "idna", "urllib3")),
    "charset-normalizer": ("n", 25, ()),
    "urllib3": ("n", 40, ("brotli-python", "h2", "pysocks")),
    "pysocks": ("n", 3, ()),
    "notebook-shim": ("n", 4, ("jupyter_server",)),
}
PYTHON_DEPS = (
    "bzip2",
    "ld_impl_linux-64",
    "libexpat",
    "libffi",
    "libgcc",
    "liblzma",
    "libnsl",
    "libsqlite",
    "libuuid",
    "libxcrypt",
    "libzlib",
    "ncurses",
    "openssl",
    "readline",
    "tk",
    "tzdata",
    "pip",
)
# records per version, on average, by kind (to scale the tail's versions to `records`)
PER_VERSION = {"c": 4.9, "n": 1.31, "l": 1.31, "g": 1.31}
MAX_VERSIONS = 1500
SYLLABLES = (
    "ab ac ad al am an ar as at ba be bi bo ca ce ci co cu da de di do du el em en er es et "
    "fa fe fi fo ga ge gi go ha he hi ho hu ka ke ki ko la le li lo lu ma me mi mo mu na ne "
    "ni no nu or os pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo "
    "xa xe xi za ze zi zo"
).split()
PREFIXES = ("", "", "", "py", "lib", "r-", "perl-", "ros-", "jupyter-", "pytest-", "types-")


@dataclass
class Package:
    name: str
    kind: str
    versions: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    extra: dict[int, str] = field(default_factory=dict)  # version index -> one more dependency


@dataclass(frozen=True)
class Generated:
    path: Path
    url: str
    names: int
    records: int
    linux_records: int
    noarch_records: int
    bytes: int
    seconds: float  # how long generating it took (when it was generated)
    from_cache: bool


def _versions(rng: random.Random, n: int, major: int) -> list[str]:
    out, minor, patch = [], rng.randint(0, 9), rng.randint(0, 3)
    for _ in range(n):
        out.append(f"{major}.{minor}.{patch}")
        r = rng.random()
        if r < 0.70:
            patch += 1
        elif r < 0.96:
            minor, patch = minor + 1, 0
        else:
            major, minor, patch = major + 1, 0, 0
    return out


def _times(rng: random.Random, n: int, start: float) -> list[float]:
    """Release times of n versions between start and 1; the newest is at 1."""
    if n == 1:
        return [rng.uniform(start, 1.0)]
    cuts = sorted(rng.uniform(start, 1.0) for _ in range(n - 1))
    return [*cuts, 1.0]


def _at(pkg: Package, t: float) -> int:
    """Index of the newest version of pkg made at or before t (the first if none)."""
    lo, hi = 0, len(pkg.times)
    while lo < hi:
        mid = (lo + hi) // 2
        if pkg.times[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return max(lo - 1, 0)


def _next_major(version: str) -> str:
    return f"{int(version.split('.')[0]) + 1}.0a0"


def _next_minor(version: str) -> str:
    major, minor = version.split(".")[:2]
    return f"{major}.{int(minor) + 1}.0a0"


def _spec(rng: random.Random, dep: Package, dep_kind: str, t: float) -> str:
    if dep.kind in ("python", "abi"):
        raise ValueError(dep.name)
    j = _at(dep, t)
    current = dep.versions[j]
    if dep_kind in ("l",):  # a C library: the run-export pin of the version built against
        upper = _next_minor(current) if rng.random() < 0.3 else _next_major(current)
        return f"{dep.name} >={current},<{upper}"
    lower = dep.versions[max(0, j - rng.randint(0, 12))]
    r = rng.random()
    if r < 0.25:
        return dep.name
    if r < 0.75:
        return f"{dep.name} >={lower}"
    return f"{dep.name} >={lower},<{_next_major(current)}"


def _tail_names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3, 3, 4))))
        if rng.random() < 0.25:
            word += "-" + "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2))))
        name = rng.choice(PREFIXES) + word
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def plan(names: int, records: int, seed: int) -> list[Package]:
    """The packages, their versions, times and dependencies (no records yet)."""
    rng = random.Random(seed)
    core: list[Package] = []
    for name, (kind, n, deps) in CORE.items():
        pkg = Package(name, kind, deps=list(deps))
        if kind == "python":
            for minor, patches in PY_PATCHES.items():
                first, last = PY_WINDOWS[minor]
                for p in range(patches):
                    pkg.versions.append(f"3.{minor}.{p}")
                    pkg.times.append(first + (last - first) * p / max(patches - 1, 1))
            pkg.deps = list(PYTHON_DEPS)
        elif kind == "abi":
            pkg.versions = [f"3.{m}" for m in PY_PATCHES]
            pkg.times = [PY_WINDOWS[m][0] for m in PY_PATCHES]
        else:
            pkg.versions = _versions(rng, n, rng.randint(0, 3))
            pkg.times = _times(rng, n, rng.uniform(0.0, 0.3))
        core.append(pkg)

    n_tail = max(0, names - len(core))
    tail_names = _tail_names(rng, n_tail, set(CORE))
    kinds = rng.choices("nclg", weights=(40, 25, 25, 10), k=n_tail)
    draws = [rng.random() for _ in range(n_tail)]
    core_records = 400 + sum(  # 400: python and python_abi, about
        len(p.versions) * PER_VERSION[p.kind] for p in core if p.kind in PER_VERSION
    )
    want = max(records - core_records, n_tail)

    def versions_per_name(power: float) -> list[int]:  # a power law: most 1-5, a few hundreds
        return sorted((min(MAX_VERSIONS, int(1 / u**power)) for u in draws), reverse=True)

    lo, hi = 0.05, 1.5  # the power that gives the wanted number of records
    for _ in range(40):
        mid = (lo + hi) / 2
        got = sum(n * PER_VERSION[k] for n, k in zip(versions_per_name(mid), kinds, strict=True))
        lo, hi = (mid, hi) if got < want else (lo, mid)
    counts = versions_per_name((lo + hi) / 2)
    tail: list[Package] = []
    for name, kind, n in zip(tail_names, kinds, counts, strict=True):
        start = rng.uniform(0.0, 0.95) if n < 5 else rng.uniform(0.0, 0.5)
        pkg = Package(name, kind, _versions(rng, n, rng.choice((0, 0, 1, 1, 2, 5))))
        pkg.times = _times(rng, n, start)
        tail.append(pkg)

    # fan-out: a few dependencies each, to the core (numpy, libgcc, six, ...) and to tail
    # names more popular than the package. Popularity is only loosely tied to the number of
    # versions (the names with a thousand versions are boto3-like leaves, not what all depend on)
    everyone = core + tail
    by_popularity = sorted(tail, key=lambda p: -(len(p.versions) ** 0.5) * rng.lognormvariate(0, 1))
    targets = {
        kinds: [p for p in core if p.kind in kinds and p.name not in ("python", "python_abi")]
        for kinds in ("ncg", "nclg", "lg", "g")
    }
    allowed = {"n": "ncg", "c": "nclg", "l": "lg", "g": "g"}
    for rank, pkg in enumerate(by_popularity):
        k = rng.choices((0, 1, 2, 3, 4, 5, 6, 8), weights=(12, 18, 22, 18, 12, 8, 6, 4))[0]
        chosen: set[str] = set()
        for _ in range(k * 4):
            if len(chosen) >= k:
                break
            if rank == 0 or rng.random() < 0.4:
                dep = rng.choice(targets[allowed[pkg.kind]])
            else:
                dep = by_popularity[int(rank * rng.random() ** 2.5)]
            if dep.kind in allowed[pkg.kind] and dep.name != pkg.name:
                chosen.add(dep.name)
        if pkg.kind in ("c", "l") and rng.random() < 0.9:
            chosen.add("libgcc")
        pkg.deps = sorted(chosen)
    # old versions of the core depended on packages since dropped (six-era backports)
    backports = [p for p in tail if p.kind == "n" and len(p.versions) <= 5][:500]
    for pkg in core:
        if pkg.kind in ("c", "n") and backports:
            for i, t in enumerate(pkg.times):
                if t < 0.5 and rng.random() < 0.05:
                    pkg.extra[i] = rng.choice(backports).name
    return everyone


def _hash(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def records_of(pkg: Package, by_name: dict[str, Package], seed: int) -> list[tuple[str, dict]]:
    """(subdir, record) for every build of every version of pkg."""
    rng = random.Random(f"{seed}:{pkg.name}")
    out: list[tuple[str, dict]] = []
    license_ = rng.choice(LICENSES)
    for i, (version, t) in enumerate(zip(pkg.versions, pkg.times, strict=True)):
        # (build string without its build number, depends, constrains)
        builds: list[tuple[str, list[str], list[str]]] = []
        deps = list(pkg.deps) + ([pkg.extra[i]] if i in pkg.extra else [])
        if pkg.kind == "python":
            minor = int(version.split(".")[1])
            depends = [
                _spec(rng, by_name[d], "l" if by_name[d].kind == "l" else "n", t) for d in deps
            ]
            depends.append(GLIBC)
            for _ in range(rng.choice((1, 1, 2, 3, 4))):
                builds.append(
                    (f"h{_hash(rng, 28)}", depends, [f"python_abi 3.{minor}.* *_cp3{minor}"])
                )
        elif pkg.kind == "abi":
            minor = int(version.split(".")[1])
            for bn in range(1, 6):
                builds.append((f"{bn}_cp3{minor}", [], [f"python 3.{minor}.* *_cpython"]))
        elif pkg.kind == "c":
            pys = [m for m, (a, b) in PY_WINDOWS.items() if a <= t <= b] or [10]
            common = [_spec(rng, by_name[d], by_name[d].kind, t) for d in deps]
            for m in pys:
                depends = [*common, GLIBC, f"python >=3.{m},<3.{m + 1}.0a0"]
                depends.append(f"python_abi 3.{m}.* *_cp3{m}")
                constrains = [f"{pkg.name}-base <0a0"] if pkg.name == "numpy" else []
                builds.append((f"py3{m}h{_hash(rng, 28)}", sorted(depends), constrains))
        elif pkg.kind == "n":
            floor = 6 if t < 0.3 else 7 if t < 0.6 else 8 if t < 0.8 else 9
            depends = [_spec(rng, by_name[d], by_name[d].kind, t) for d in deps]
            builds.append(("pyhd8ed1ab", sorted([*depends, f"python >=3.{floor}"]), []))
        else:  # l, g
            depends = [_spec(rng, by_name[d], by_name[d].kind, t) for d in deps]
            if pkg.kind == "l" and pkg.name in ("libgcc", "libgomp", "ld_impl_linux-64"):
                depends.append(GLIBC)
            builds.append((f"h{_hash(rng, 28)}", sorted(depends), []))
        n_builds = 1 + (rng.random() < 0.25) + (rng.random() < 0.06)
        for stem, depends, constrains in builds:
            for bn in range(n_builds if pkg.kind != "abi" else 1):
                build = stem if pkg.kind == "abi" else f"{stem}_{bn}"
                if pkg.kind == "python":
                    build += "_cpython"
                subdir = "noarch" if pkg.kind in ("n", "g") else "linux-64"
                when = min(1.0, t + 0.002 * bn)
                record = {
                    "build": build,
                    "build_number": bn if pkg.kind != "abi" else int(stem.split("_")[0]),
                    "depends": depends,
                    "license": license_,
                    "md5": _hash(rng, 128),
                    "name": pkg.name,
                    "sha256": _hash(rng, 256),
                    "size": int(rng.lognormvariate(11.5, 1.6)) + 2_000,
                    "subdir": subdir,
                    "timestamp": EPOCH_MS + int(when * SPAN_MS),
                    "version": version,
                }
                if constrains:
                    record["constrains"] = constrains
                if pkg.kind in ("n", "g"):
                    record["noarch"] = "python" if pkg.kind == "n" else "generic"
                out.append((subdir, record))
    return out


def _write(directory: Path, subdir: str, entries: list[dict]) -> int:
    packages, conda = {}, {}
    cut = EPOCH_MS + int(CONDA_FROM * SPAN_MS)
    for record in entries:
        stem = f"{record['name']}-{record['version']}-{record['build']}"
        if record["timestamp"] < cut:
            packages[stem + ".tar.bz2"] = record
        else:
            conda[stem + ".conda"] = record
    doc = {
        "info": {"subdir": subdir},
        "packages": dict(sorted(packages.items())),
        "packages.conda": dict(sorted(conda.items())),
        "removed": [],
        "repodata_version": 1,
    }
    (directory / subdir).mkdir(parents=True)
    path = directory / subdir / "repodata.json"
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path.stat().st_size


def generate(out: Path, names: int = 30_000, records: int = 500_000, seed: int = 25) -> Generated:
    """Write the channel into out (replaced whole, through a temporary sibling), with a
    generated.json that says what it holds."""
    t0 = time.perf_counter()
    packages = plan(names, records, seed)
    by_name = {p.name: p for p in packages}
    per_subdir: dict[str, list[dict]] = {"linux-64": [], "noarch": []}
    for pkg in packages:
        for subdir, record in records_of(pkg, by_name, seed):
            per_subdir[subdir].append(record)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    size = sum(_write(tmp, subdir, entries) for subdir, entries in per_subdir.items())
    linux, noarch = len(per_subdir["linux-64"]), len(per_subdir["noarch"])
    made = Generated(
        out, out.as_uri(), len(packages), linux + noarch, linux, noarch, size,
        round(time.perf_counter() - t0, 1), from_cache=False,
    )  # fmt: skip
    meta = {k: getattr(made, k) for k in _META}
    (tmp / "generated.json").write_text(json.dumps(meta))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return made


_META = ("names", "records", "linux_records", "noarch_records", "bytes", "seconds")


def cached(root: Path, names: int, records: int, seed: int = 25) -> Generated:
    """The channel for these arguments under root, generated on the first call only, in a
    child process: generating holds ~1 GB for the full size, and a process that big would
    leave its peak memory on every child it starts later (Linux hands the parent's resident
    high-water mark to a vfork()ed child at exec)."""
    out = root / f"cfscale-g{GENERATOR}-{names}-{records}-s{seed}"
    meta = out / "generated.json"
    fresh = not meta.exists()
    if fresh:
        root.mkdir(parents=True, exist_ok=True)
        args = [str(out), "--names", str(names), "--records", str(records), "--seed", str(seed)]
        subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True)
    data = json.loads(meta.read_text())
    return Generated(out, out.as_uri(), **{k: data[k] for k in _META}, from_cache=not fresh)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--names", type=int, default=30_000)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=25)
    args = parser.parse_args()
    made = generate(args.out, args.names, args.records, args.seed)
    print(
        f"{made.path}: {made.names:,} names, {made.records:,} records "
        f"({made.linux_records:,} linux-64, {made.noarch_records:,} noarch), "
        f"{made.bytes / 1e6:.0f} MB of repodata.json, {made.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
