"""Build real conda packages into a local `file://` channel (tests, selftest, benchmarks).

Each package is a real archive, `.tar.bz2` or `.conda` (a zip holding `metadata.json` and
zstd-compressed `info-` and `pkg-` tarballs), with `info/index.json`, `info/paths.json`
(paths, types, sha256, sizes), `info/files` and its payload. The channel is indexed by the
engine (rattler's `index_fs`), so the same code reads it as it reads conda-forge.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def native_subdir() -> str:
    """conda's name for the platform this runs on (linux-64, linux-aarch64, osx-arm64, ...),
    so the demo channel has packages for it wherever the tests or `selftest` run."""
    import platform

    machine = platform.machine().lower()
    arch = {"x86_64": "64", "amd64": "64", "i686": "32", "arm64": "arm64"}.get(machine, machine)
    system = {"darwin": "osx", "win32": "win"}.get(sys.platform, "linux")
    if system == "linux" and arch == "arm64":
        arch = "aarch64"
    return f"{system}-{arch}"


@dataclass(frozen=True)
class PackageRecipe:
    """How to build one conda package: its metadata, files, links and format (a recipe, not a
    match spec)."""

    name: str
    version: str
    build: str = "0"
    build_number: int = 0
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    subdir: str = field(default_factory=native_subdir)
    noarch: str | None = None
    files: Mapping[str, bytes | str] = field(default_factory=dict)
    executables: frozenset[str] = frozenset()
    symlinks: Mapping[str, str] = field(default_factory=dict)
    fmt: str = "tar.bz2"  # or "conda"
    # Files holding the build prefix, as conda-build records them: path -> that prefix
    # (`prefix_placeholder`, `file_mode: text`); the installer writes the env's prefix there.
    prefix_files: Mapping[str, str] = field(default_factory=dict)
    # The same for binaries (`file_mode: binary`): replaced in place, NUL-padded, so only
    # into a prefix no longer than the placeholder.
    binary_prefix_files: Mapping[str, str] = field(default_factory=dict)
    # noarch: python console scripts ("name = module:func"), written by the installer.
    entry_points: tuple[str, ...] = ()
    modes: Mapping[str, int] = field(default_factory=dict)  # a file's mode in the archive

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


# Every member's mtime: packages are reproducible, and a .pyc in one is valid for its .py.
MTIME = 1_700_000_000


def _tar_bytes(members: list[tuple[str, bytes | None, int, str | None]], mode: str) -> bytes:
    """members: (path, data or None for a symlink, file mode, link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for path, data, fmode, target in members:
            info = tarfile.TarInfo(path)
            info.mtime = MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if target is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = target
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                info.mode = fmode
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


def _payload(spec: PackageRecipe) -> tuple[list, list]:
    members, paths = [], []
    for rel, content in sorted(spec.files.items()):
        data = content.encode() if isinstance(content, str) else content
        mode = spec.modes.get(rel, 0o755 if rel in spec.executables else 0o644)
        members.append((rel, data, mode, None))
        entry = {
            "_path": rel,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        if rel in spec.prefix_files:
            entry.update(file_mode="text", prefix_placeholder=spec.prefix_files[rel])
        elif rel in spec.binary_prefix_files:
            entry.update(file_mode="binary", prefix_placeholder=spec.binary_prefix_files[rel])
        paths.append(entry)
    for rel, target in sorted(spec.symlinks.items()):
        members.append((rel, None, 0o777, target))
        paths.append({"_path": rel, "path_type": "softlink", "size_in_bytes": len(target)})
    return members, paths


_ARCH = {"64": "x86_64", "32": "x86"}  # conda's subdir suffix -> index.json arch


def _info_members(spec: PackageRecipe, paths: list) -> list:
    index = {
        "name": spec.name,
        "version": spec.version,
        "build": spec.build,
        "build_number": spec.build_number,
        "depends": list(spec.depends),
        "constrains": list(spec.constrains),
        "subdir": spec.subdir,
        "license": "BSD-3-Clause",
        "timestamp": 1_700_000_000_000,
    }
    if spec.noarch:
        index["noarch"] = spec.noarch
    if spec.subdir != "noarch":
        plat, arch = spec.subdir.split("-", 1)
        index["platform"], index["arch"] = plat, _ARCH.get(arch, arch)
    files = "".join(p["_path"] + "\n" for p in paths)
    extra = []
    if spec.noarch == "python":  # as conda-build writes it; conda-pack reads it
        noarch = {"type": "python"}
        if spec.entry_points:
            noarch["entry_points"] = list(spec.entry_points)
        link = {"noarch": noarch, "package_metadata_version": 1}
        extra.append(("info/link.json", json.dumps(link).encode(), 0o644, None))
    return extra + [
        ("info/index.json", json.dumps(index, indent=2).encode(), 0o644, None),
        ("info/paths.json", json.dumps({"paths": paths, "paths_version": 1}).encode(), 0o644, None),
        ("info/files", files.encode(), 0o644, None),
    ]


def build_package(spec: PackageRecipe, out_dir: Path) -> Path:
    """Write one real package archive into `out_dir`; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    members, paths = _payload(spec)
    info = _info_members(spec, paths)
    if spec.fmt == "tar.bz2":
        path = out_dir / f"{spec.stem}.tar.bz2"
        path.write_bytes(_tar_bytes(info + members, "w:bz2"))
        return path
    import zstandard

    def zst(data: bytes) -> bytes:
        return zstandard.ZstdCompressor(level=3).compress(data)

    path = out_dir / f"{spec.stem}.conda"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        z.writestr(f"pkg-{spec.stem}.tar.zst", zst(_tar_bytes(members, "w")))
        z.writestr(f"info-{spec.stem}.tar.zst", zst(_tar_bytes(info, "w")))
    return path


def build_channel(channel_dir: Path, specs: Sequence[PackageRecipe]) -> str:
    """Build every package into `channel_dir/<subdir>/`, index it, return its file:// URL."""
    from hpcenv import engine

    channel_dir = Path(channel_dir).resolve()
    (channel_dir / "noarch").mkdir(parents=True, exist_ok=True)
    for spec in specs:
        build_package(spec, channel_dir / spec.subdir)
    engine.index_channel(channel_dir)
    return channel_dir.as_uri()


# --------------------------------------------------------------------------- the demo set


def _tool(name: str, version: str) -> str:
    return f'#!/bin/sh\necho "{name} {version}"\necho "prefix: ${{CONDA_PREFIX:-none}}"\n'


def demo_packages(python_executable: str | None = None) -> list[PackageRecipe]:
    """The packages tests and `hpcenv selftest` use: a venv-style python, a tool with
    activation scripts, noarch python packages in both formats, version constraints, a
    conflict, and pytorch/torchvision with CUDA and CPU builds of the same version."""
    exe = os.path.realpath(python_executable or sys.executable)
    major, minor = sys.version_info[:2]
    if python_executable:
        import subprocess

        out = subprocess.run(
            [exe, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        )
        major, minor = map(int, out.stdout.split())
    pyver = f"{major}.{minor}"
    site = f"lib/python{pyver}/site-packages"
    python = PackageRecipe(
        "python",
        f"{pyver}.0",
        files={
            "pyvenv.cfg": f"home = {os.path.dirname(exe)}\ninclude-system-site-packages = false\n"
            f"version = {pyver}.0\n",
            f"{site}/_hpcenv_demo_python.pth": "",
        },
        symlinks={"bin/python": exe, "bin/python3": "python", f"bin/python{pyver}": "python"},
    )
    activate = {
        "etc/conda/activate.d/demo-tool.sh": "export DEMO_TOOL_ACTIVATED=1\n",
        "etc/conda/deactivate.d/demo-tool.sh": "unset DEMO_TOOL_ACTIVATED\n",
        "etc/conda/activate.d/demo-tool.fish": "set -gx DEMO_TOOL_ACTIVATED 1\n",
        "etc/conda/deactivate.d/demo-tool.fish": "set -e DEMO_TOOL_ACTIVATED\n",
        "etc/conda/activate.d/demo-tool.csh": "setenv DEMO_TOOL_ACTIVATED 1\n",
        "etc/conda/deactivate.d/demo-tool.csh": "unsetenv DEMO_TOOL_ACTIVATED\n",
    }
    specs = [
        python,
        PackageRecipe(
            "demo-tool",
            "1.0",
            files={
                "bin/demo-tool": _tool("demo-tool", "1.0"),
                "share/demo-tool/data.txt": "data\n" * 50,
                **activate,
            },
            executables=frozenset({"bin/demo-tool"}),
        ),
        PackageRecipe(
            "hello",
            "1.0",
            subdir="noarch",
            noarch="python",
            depends=("python >=3.10",),
            files={
                "site-packages/hello/__init__.py": 'def greet():\n    return "hello from hpcenv"\n'
            },
            fmt="conda",
        ),
        PackageRecipe(
            "hello",
            "2.0",
            subdir="noarch",
            noarch="python",
            depends=("python >=3.10",),
            files={
                "site-packages/hello/__init__.py": 'def greet():\n    return "hello from hpcenv 2"\n'
            },
        ),
        PackageRecipe("libnum", "1.0", files={"lib/libnum.txt": "libnum 1.0\n"}),
        PackageRecipe("libnum", "2.0", files={"lib/libnum.txt": "libnum 2.0\n"}),
        PackageRecipe(
            "numtool",
            "1.0",
            depends=("libnum <2",),
            files={"bin/numtool": _tool("numtool", "1.0")},
            executables=frozenset({"bin/numtool"}),
        ),
        PackageRecipe(
            "clash-a", "1.0", depends=("libnum >=2",), files={"share/clash-a.txt": "a\n"}
        ),
        PackageRecipe(
            "cuda-version",
            "12.6",
            subdir="noarch",
            noarch="generic",
            constrains=("__cuda >=12",),
            files={"share/cuda-version.txt": "12.6\n"},
        ),
    ]
    for name, version, extra in (
        ("pytorch", "2.5.1", ()),
        ("torchvision", "0.20.1", ("pytorch 2.5.1",)),
    ):
        for kind in ("cuda126", "cpu"):
            deps = list(extra)
            if kind == "cuda126":
                deps += ["__cuda >=12", "cuda-version >=12,<13"]
                deps = [d + " cuda*" if d.startswith("pytorch") else d for d in deps]
            else:
                deps = [d + " cpu*" if d.startswith("pytorch") else d for d in deps]
            specs.append(
                PackageRecipe(
                    name,
                    version,
                    build=f"{kind}_0",
                    build_number=0,
                    depends=tuple(deps),
                    files={f"share/{name}/build.txt": f"{name} {version} {kind}\n"},
                    fmt="conda" if kind == "cpu" else "tar.bz2",
                )
            )
    return specs
