"""Real conda packages from real artifacts, for the tests and the benchmarks.

Built the way conda-build would build them, into a local `file://` channel:

- `python`: the running CPython's own installation (`sys.base_prefix`), stdlib only. Text
  files that hold the build prefix get `prefix_placeholder` + `file_mode: text`, so the
  installer writes the env's prefix there (and conda-unpack the staged one). Binaries find
  their prefix from the executable's location, except that an `--enable-shared` build links
  `bin/python3.X` and every extension module with `RUNPATH=<build prefix>/lib`: those entries
  are rewritten in place to `$ORIGIN`-relative ones (as conda-build does) instead of being
  declared `file_mode: binary`, whose NUL-padded replacement only fits a prefix no longer than
  the build's. What is left of the prefix in `libpython` is the compiled-in `PREFIX` that
  `getpath` uses only when it cannot find `lib/python3.X/os.py` beside the executable.
  The stdlib's `.pyc` are compiled afresh (those of the installation are for other mtimes).
- `numpy`: a compiled package for this platform from the real PyPI wheel, files under
  `lib/python3.X/site-packages/` (its bundled `numpy.libs/` kept), console scripts as `bin/`
  files whose shebang holds a placeholder prefix, `.pyc` compiled in.
- `tqdm`: a `noarch: python` package from the pure wheel, `site-packages/...` paths and its
  console script declared in `info/link.json`, so the installer writes the entry point.

Wheels are downloaded once (`pip download`) into the cache directory ($HPCENV_TEST_CACHE, else
pytest's cache dir), the built channel is cached there too, keyed by the interpreter, the
wheels and this builder's source: a second run builds nothing and needs no network.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import marshal
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcenv.channel import MTIME, PackageRecipe, build_package

# Pinned so the cache key and every test see the same artifacts. numpy 2.2 has cp310-cp313
# wheels; tqdm is a small pure wheel with a console script.
NUMPY = ("numpy", "2.2.6")
TQDM = ("tqdm", "4.67.1")
BUILD = "h_hpcenv_0"
# The build prefix conda-build would have left in a package's text files (any string works;
# real ones are long so that binary replacement fits most install prefixes).
PLACEHOLDER = "/opt/hpcenv-build/_h_env" + "_placehold" * 12

PYVER = f"{sys.version_info[0]}.{sys.version_info[1]}"
SITE = f"lib/python{PYVER}/site-packages"
# What a python package leaves out of the installation: other packages, tests, Tk/IDLE and
# caches; the static libpython (45 MB here) is a separate package on conda-forge too.
_SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "__pycache__"}
_SKIP_FILES = re.compile(r"libpython[0-9.]+\.a|_tkinter\..*\.so|.*\.py[co]")
_OWN_BIN = re.compile(r"(python|pydoc|2to3)[0-9.]*(-[0-9.]+)?(-config|-gdb\.py)?")


class RealPackagesUnavailable(RuntimeError):
    """A download is needed and failed; the message is the one line to show."""


@dataclass(frozen=True)
class RealChannel:
    path: Path
    url: str
    python_version: str  # e.g. "3.11.7"
    numpy_version: str
    tqdm_version: str


# --------------------------------------------------------------------------- cache and wheels


def cache_root(config: pytest.Config | None = None) -> Path:
    """$HPCENV_TEST_CACHE, else pytest's cache dir, else ~/.cache/hpcenv-tests."""
    if os.environ.get("HPCENV_TEST_CACHE"):
        path = Path(os.environ["HPCENV_TEST_CACHE"]) / "realpkgs"
    elif config is not None and getattr(config, "cache", None) is not None:
        return Path(config.cache.mkdir("realpkgs"))
    else:
        path = Path.home() / ".cache" / "hpcenv-tests" / "realpkgs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(name: str, version: str, cache: Path) -> Path:
    """The wheel of name==version for this interpreter, downloaded once into `cache`."""
    tag = f"{sys.implementation.cache_tag}-{platform.machine()}"
    where = cache / "wheels" / f"{name}-{version}-{tag}"
    found = sorted(where.glob("*.whl"))
    if found:
        return found[0]
    tmp = cache / "wheels" / f".{name}-{version}-{tag}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps"]
    argv += ["--retries", "1", "--timeout", "30", "-q", "-d", str(tmp), f"{name}=={version}"]
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wheels = sorted(tmp.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        shutil.rmtree(tmp, ignore_errors=True)
        last = ([line for line in result.stderr.splitlines() if line.strip()] or ["no wheel"])[-1]
        raise RealPackagesUnavailable(
            f"realpkgs: {name}=={version} is not in the test cache {cache} and `pip download` "
            f"failed ({last.strip()[:200]}); run the tests once with network access"
        )
    _publish(tmp, where)
    return where / wheels[0].name


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished `tmp` dir into place; if another run got there first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- ELF RUNPATH


def _runpath_slots(data: bytes) -> list[tuple[int, int]]:
    """Where the DT_RPATH/DT_RUNPATH strings of an ELF file lie: (start, end) offsets."""
    if data[:4] != b"\x7fELF":
        return []
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    if wide:
        phoff = struct.unpack_from(order + "Q", data, 0x20)[0]
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
    else:
        phoff = struct.unpack_from(order + "I", data, 0x1C)[0]
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x2A)
    loads, dynamic = [], None
    for i in range(phnum):
        at = phoff + i * phentsize
        if wide:
            p_type, _, offset, vaddr, _, filesz = struct.unpack_from(order + "IIQQQQ", data, at)
        else:
            p_type, offset, vaddr, _, filesz = struct.unpack_from(order + "IIIII", data, at)
        if p_type == 1:  # PT_LOAD
            loads.append((vaddr, offset, filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (offset, filesz)
    if dynamic is None:
        return []
    entry = struct.Struct(order + ("qQ" if wide else "iI"))
    tags = []
    for at in range(dynamic[0], dynamic[0] + dynamic[1], entry.size):
        tag, value = entry.unpack_from(data, at)
        if tag == 0:  # DT_NULL
            break
        tags.append((tag, value))
    strtab = next((v for t, v in tags if t == 5), None)  # DT_STRTAB (an address)
    base = next(
        (
            off + strtab - va
            for va, off, size in loads
            if strtab is not None and va <= strtab < va + size
        ),
        None,
    )
    if base is None:
        return []
    slots = []
    for tag, value in tags:
        if tag in (15, 29):  # DT_RPATH, DT_RUNPATH
            start = base + value
            slots.append((start, data.index(b"\0", start)))
    return slots


def runpaths(data: bytes) -> list[str]:
    """The RPATH/RUNPATH entries of an ELF file (none for anything else)."""
    return [e for s, t in _runpath_slots(data) for e in data[s:t].decode().split(":") if e]


def relocate_runpath(data: bytes, rel: str, prefix: str) -> bytes:
    """`data` (an ELF file at `rel` in a package) with each RPATH/RUNPATH entry under `prefix`
    made `$ORIGIN`-relative, rewritten in place (the new string is shorter; the rest is
    NUL-padded). Data without such an entry comes back unchanged."""
    out = bytearray(data)
    here = os.path.dirname(os.path.join(prefix, rel))
    for start, end in _runpath_slots(data):
        old = data[start:end].decode()
        entries = []
        for item in old.split(":"):
            if item == prefix or item.startswith(prefix + "/"):
                up = os.path.relpath(item, here)  # not normpath: "$ORIGIN/.." is no parent
                item = "$ORIGIN" if up == "." else f"$ORIGIN/{up}"
            if item not in entries:
                entries.append(item)
        new = ":".join(entries).encode()
        if len(new) > end - start:
            raise ValueError(f"{rel}: relocated RUNPATH {new!r} is longer than {old!r}")
        out[start:end] = new.ljust(end - start, b"\0")
    return bytes(out)


# --------------------------------------------------------------------------- python


def compiled(files: dict[str, bytes], under: str, origin: str, skip=()) -> dict[str, bytes]:
    """The `__pycache__/*.pyc` of each .py under `under`, as conda-build ships them in a
    package: timestamp pycs for the archive's mtime and the file's size, so they are valid
    as installed (a .py the installer rewrites, like those in `skip`, gets none)."""
    out = {}
    for rel, data in files.items():
        if not (rel.startswith(under + "/") and rel.endswith(".py")) or rel in skip:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                code = compile(data, os.path.join(origin, rel), "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue
        head, name = os.path.split(rel)
        pyc = f"{head}/__pycache__/{name[:-3]}.{sys.implementation.cache_tag}.pyc"
        header = struct.pack("<III", 0, MTIME, len(data) & 0xFFFFFFFF)
        out[pyc] = importlib.util.MAGIC_NUMBER + header + marshal.dumps(code)
    return out


def _glibc() -> str:
    _, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.17").partition(" ")
    return ".".join(version.split(".")[:2])


def python_package(out_dir: Path, subdir: str, base_prefix: str = sys.base_prefix) -> Path:
    """The running CPython's installation as a conda package in `out_dir`."""
    prefix = os.path.realpath(base_prefix)
    needle = prefix.encode()
    files: dict[str, bytes] = {}
    executables, symlinks, prefix_files = set(), {}, {}
    for top in ("bin", "include", "lib", "share"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(prefix, top)):
            reldir = os.path.relpath(dirpath, prefix)
            dirnames[:] = sorted(
                d for d in dirnames if d not in _SKIP_DIRS and _python_owns(f"{reldir}/{d}/")
            )
            for name in sorted(filenames + [d for d in dirnames if _islink(dirpath, d)]):
                path = os.path.join(dirpath, name)
                rel = f"{reldir}/{name}"
                if not _python_owns(rel) or _SKIP_FILES.fullmatch(name):
                    continue
                if os.path.islink(path):
                    target = os.readlink(path)
                    if os.path.isabs(target):
                        if not target.startswith(prefix + "/"):
                            raise ValueError(f"{rel} links outside {prefix}: {target}")
                        target = os.path.relpath(target, os.path.dirname(path))
                    symlinks[rel] = target
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                if os.stat(path).st_mode & 0o111:
                    executables.add(rel)
                if needle in data:
                    data = relocate_runpath(data, rel, prefix)
                    if data[:4] != b"\x7fELF" and b"\0" not in data:
                        prefix_files[rel] = prefix
                    elif data[:4] != b"\x7fELF":
                        raise ValueError(f"{rel} is a non-ELF binary holding {prefix}")
                files[rel] = data
    files.update(compiled(files, f"lib/python{PYVER}", prefix, skip=prefix_files))
    # site-packages itself is part of python (conda-forge ships its README.txt).
    readme = os.path.join(prefix, SITE, "README.txt")
    files[f"{SITE}/README.txt"] = Path(readme).read_bytes() if os.path.exists(readme) else b""
    spec = PackageRecipe(
        "python",
        platform.python_version(),
        build=BUILD,
        depends=(f"__glibc >={_glibc()}",),
        subdir=subdir,
        files=files,
        executables=frozenset(executables),
        symlinks=symlinks,
        prefix_files=prefix_files,
        fmt="conda",
    )
    return build_package(spec, out_dir)


def _python_owns(rel: str) -> bool:
    """Whether `rel` (a dir when it ends in /) belongs to CPython itself, in a prefix that may
    hold other software too (/usr/local): its bin/ entries, include/pythonX.Y, libpython,
    its pkg-config files, lib/pythonX.Y, its man page."""
    parts = rel.rstrip("/").split("/")
    top, rest = parts[0], parts[1:]
    if not rest:
        return True
    if top == "bin":
        return len(rest) == 1 and bool(_OWN_BIN.fullmatch(rest[0]))
    if top == "include":
        return rest[0].startswith(f"python{PYVER}")
    if top == "lib":
        if len(rest) == 1 and not rel.endswith("/"):
            return rest[0].startswith("libpython")
        if rest[0] == "pkgconfig":
            return len(rest) == 1 or rest[1].startswith("python")
        return rest[0] == f"python{PYVER}"
    if top == "share":
        if rest[0] != "man" or (len(rest) > 1 and rest[1] != "man1"):
            return False
        return len(rest) < 3 or rest[2].startswith("python")
    return False


def _islink(dirpath: str, name: str) -> bool:
    return os.path.islink(os.path.join(dirpath, name))


# --------------------------------------------------------------------------- wheels


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    files: dict[str, tuple[bytes, bool]]  # path in the wheel -> (data, executable)
    console_scripts: tuple[str, ...]  # "name = module:func"
    requires_python: str | None
    glibc: str | None  # from a manylinux tag: the oldest glibc it runs on


def read_wheel(path: Path) -> Wheel:
    name, version = path.name.split("-")[:2]
    files = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.is_dir():
                files[info.filename] = (z.read(info), bool((info.external_attr >> 16) & 0o111))
    dist_info = f"{name}-{version}.dist-info"
    scripts, section = [], None
    for line in files.get(f"{dist_info}/entry_points.txt", (b"", False))[0].decode().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and section == "console_scripts":
            key, _, value = line.partition("=")
            scripts.append(f"{key.strip()} = {value.strip()}")
    meta = files[f"{dist_info}/METADATA"][0].decode()
    m = re.search(r"^Requires-Python:\s*(.+)$", meta, re.MULTILINE)
    glibcs = [
        (int(a), int(b))
        for a, b in re.findall(r"manylinux_(\d+)_(\d+)", path.name)
        + [("2", "17")] * ("manylinux2014" in path.name)
        + [("2", "12")] * ("manylinux2010" in path.name)
        + [("2", "5")] * ("manylinux1" in path.name)
    ]
    glibc = "{}.{}".format(*min(glibcs)) if glibcs else None
    return Wheel(name, version, files, tuple(scripts), m.group(1).strip() if m else None, glibc)


_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys

from {module} import {func}

if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({call}())
"""


def _record(files: dict[str, bytes], dist_info: str) -> bytes:
    """A RECORD for the files as installed (paths relative to site-packages)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for rel, data in sorted(files.items()):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([rel, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    return buf.getvalue().encode()


def wheel_package(
    wheel: Wheel, out_dir: Path, *, subdir: str, depends: tuple[str, ...], noarch: bool
) -> Path:
    """A conda package of an unpacked wheel: `noarch: python` (site-packages/..., entry points
    in link.json) or for `subdir` (lib/pythonX.Y/site-packages/..., bin/ scripts)."""
    site = "site-packages" if noarch else SITE
    scripts_dir = "python-scripts" if noarch else "bin"
    dist_info = f"{wheel.name}-{wheel.version}.dist-info"
    data_dir = f"{wheel.name}-{wheel.version}.data"
    placed: dict[str, bytes] = {}
    executables, prefix_files = set(), {}
    installed: dict[str, bytes] = {}  # relative to site-packages, for RECORD
    for name, (data, exe) in wheel.files.items():
        if name == f"{dist_info}/RECORD":
            continue
        if name.startswith(data_dir + "/"):
            kind, _, rest = name[len(data_dir) + 1 :].partition("/")
            if kind in ("purelib", "platlib"):
                target = f"{site}/{rest}"
            elif kind == "scripts":
                target = f"{scripts_dir}/{rest}"
                if data.startswith(b"#!python"):
                    data = b"#!" + f"{PLACEHOLDER}/bin/python{PYVER}".encode() + data[8:]
                    prefix_files[target] = PLACEHOLDER
                exe = True
            elif kind == "data":
                target = rest
            else:
                raise ValueError(f"{wheel.name}: wheel data kind {kind!r} is not supported")
        else:
            target = f"{site}/{name}"
            installed[name] = data
        placed[target] = data
        if exe:
            executables.add(target)
    installed[f"{dist_info}/INSTALLER"] = b"conda\n"
    placed[f"{site}/{dist_info}/INSTALLER"] = b"conda\n"
    placed[f"{site}/{dist_info}/RECORD"] = _record(installed, dist_info)
    entry_points: tuple[str, ...] = ()
    if noarch:
        entry_points = wheel.console_scripts
    else:
        for script in wheel.console_scripts:
            command, _, target = script.partition(" = ")
            module, _, func = target.partition(":")
            text = _SCRIPT.format(
                python=f"{PLACEHOLDER}/bin/python{PYVER}",
                module=module,
                func=func.split(".")[0],
                call=func,
            )
            placed[f"bin/{command}"] = text.encode()
            executables.add(f"bin/{command}")
            prefix_files[f"bin/{command}"] = PLACEHOLDER
    if not noarch:  # noarch: python packages are compiled by the installer
        placed.update(compiled(placed, SITE, PLACEHOLDER))
    tag = "pyh_hpcenv_0" if noarch else f"py{PYVER.replace('.', '')}{BUILD}"
    spec = PackageRecipe(
        wheel.name,
        wheel.version,
        build=tag,
        depends=depends,
        subdir="noarch" if noarch else subdir,
        noarch="python" if noarch else None,
        files=placed,
        executables=frozenset(executables),
        prefix_files=prefix_files,
        entry_points=entry_points,
        fmt="conda",
    )
    return build_package(spec, out_dir)


def _python_bounds(requires_python: str | None) -> str:
    """`Requires-Python: >=3.8` -> `python >=3.8` (the simple forms only)."""
    if not requires_python:
        return "python"
    parts = [p.strip() for p in requires_python.split(",")]
    if not all(re.fullmatch(r"(>=|<|<=|>|!=)\s*[0-9.*]+", p) for p in parts):
        raise ValueError(f"Requires-Python {requires_python!r} is not a simple bound")
    return "python " + ",".join(p.replace(" ", "") for p in parts)


# --------------------------------------------------------------------------- the channel


def _key(wheels: list[Path], subdir: str) -> str:
    h = hashlib.sha256()
    for part in (sys.version, os.path.realpath(sys.base_prefix), subdir, *(w.name for w in wheels)):
        h.update(part.encode() + b"\0")
    import hpcenv.channel

    for source in (Path(__file__), Path(hpcenv.channel.__file__)):
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def build_real_channel(cache: Path) -> RealChannel:
    """The channel of real packages, built into `cache` once (reused while the key matches)."""
    from hpcenv import engine

    subdir = engine.platform()
    numpy_whl = fetch_wheel(*NUMPY, cache)
    tqdm_whl = fetch_wheel(*TQDM, cache)
    key = _key([numpy_whl, tqdm_whl], subdir)
    channel = cache / f"channel-{key}"
    result = RealChannel(channel, channel.as_uri(), platform.python_version(), NUMPY[1], TQDM[1])
    if (channel / subdir / "repodata.json").exists():
        return result
    tmp = cache / f".channel-{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "noarch").mkdir(parents=True)
    python_package(tmp / subdir, subdir)
    numpy = read_wheel(numpy_whl)
    depends = [f"python >={PYVER},<{sys.version_info[0]}.{sys.version_info[1] + 1}"]
    if numpy.glibc:
        depends.append(f"__glibc >={numpy.glibc}")
    wheel_package(numpy, tmp / subdir, subdir=subdir, depends=tuple(depends), noarch=False)
    tqdm = read_wheel(tqdm_whl)
    wheel_package(
        tqdm,
        tmp / "noarch",
        subdir=subdir,
        depends=(_python_bounds(tqdm.requires_python),),
        noarch=True,
    )
    engine.index_channel(tmp)
    _publish(tmp, channel)
    for old in cache.glob("channel-*"):  # other builders' channels, unless maybe in use
        if old != channel and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
    return result


@pytest.fixture(scope="session")
def real_channel(request: pytest.FixtureRequest) -> RealChannel:
    """The channel of real packages (python, numpy, tqdm), from the test cache."""
    try:
        return build_real_channel(cache_root(request.config))
    except RealPackagesUnavailable as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: one line, no chained traceback


def wheel_for_test(request: pytest.FixtureRequest, name: str, version: str) -> Path:
    """fetch_wheel into the test cache; a failed download fails the test in one line."""
    try:
        return fetch_wheel(name, version, cache_root(request.config))
    except RealPackagesUnavailable as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


if __name__ == "__main__":  # python -m tests.realpkgs: build (or find) the channel, print it
    print(build_real_channel(cache_root()).url)
