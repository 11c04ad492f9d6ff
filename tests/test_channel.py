"""The channel builder writes real conda packages: consistent metadata, right hashes, both
archive formats, an indexed channel that rattler installs from."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard
from bench.synthetic import synthetic_packages

from hpcenv import engine
from hpcenv.channel import PackageRecipe, build_package, demo_packages, native_subdir


def read_archive(path: Path) -> dict[str, tarfile.TarInfo | bytes]:
    """Every member of a .tar.bz2 or .conda package: path -> bytes (files) or TarInfo."""
    tars: list[bytes] = []
    if path.name.endswith(".tar.bz2"):
        tars.append(path.read_bytes())
        mode = "r:bz2"
    else:
        with zipfile.ZipFile(path) as z:
            stem = path.name.removesuffix(".conda")
            names = set(z.namelist())
            assert names == {"metadata.json", f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"}
            assert json.loads(z.read("metadata.json"))["conda_pkg_format_version"] == 2
            dctx = zstandard.ZstdDecompressor()
            tars += [dctx.decompress(z.read(n)) for n in sorted(names - {"metadata.json"})]
        mode = "r:"
    members: dict[str, tarfile.TarInfo | bytes] = {}
    for data in tars:
        with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:
            for info in tar.getmembers():
                members[info.name] = info
                if info.isfile():
                    members[info.name + "#data"] = tar.extractfile(info).read()
    return members


def channel_archives(channel: Path) -> list[Path]:
    return sorted([*channel.glob("*/*.tar.bz2"), *channel.glob("*/*.conda")])


def test_every_demo_package_has_index_paths_and_files_that_agree_with_its_payload(
    demo_channel,
):
    archives = channel_archives(demo_channel.path)
    specs = {f"{s.stem}.{s.fmt}": s for s in demo_packages()}
    assert {a.name for a in archives} == set(specs)
    for archive in archives:
        spec = specs[archive.name]
        members = read_archive(archive)
        index = json.loads(members["info/index.json#data"])
        assert (index["name"], index["version"], index["build"]) == (
            spec.name,
            spec.version,
            spec.build,
        )
        assert index["subdir"] == archive.parent.name == spec.subdir
        assert index["depends"] == list(spec.depends)
        paths = json.loads(members["info/paths.json#data"])["paths"]
        listed = members["info/files#data"].decode().splitlines()
        assert listed == [p["_path"] for p in paths]
        payload = {m for m in members if not m.startswith("info/") and not m.endswith("#data")}
        assert payload == set(listed), archive.name
        for entry in paths:
            info = members[entry["_path"]]
            if entry["path_type"] == "softlink":
                assert info.issym() and info.linkname == spec.symlinks[entry["_path"]]
                continue
            data = members[entry["_path"] + "#data"]
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert entry["size_in_bytes"] == len(data)
            executable = entry["_path"] in spec.executables
            assert (info.mode & 0o777) == (0o755 if executable else 0o644)


def test_the_index_lists_every_package_with_its_real_sha256(demo_channel):
    for subdir in (native_subdir(), "noarch"):
        repodata = json.loads((demo_channel.path / subdir / "repodata.json").read_text())
        records = {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}
        on_disk = {p.name: p for p in (demo_channel.path / subdir).iterdir() if "-" in p.name}
        archives = {n: p for n, p in on_disk.items() if n.endswith((".tar.bz2", ".conda"))}
        assert set(records) == set(archives)
        for name, record in records.items():
            data = archives[name].read_bytes()
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
            assert record["size"] == len(data)


def test_the_demo_set_has_both_formats_and_tied_cuda_and_cpu_builds():
    specs = demo_packages()
    hello = {s.version: s.fmt for s in specs if s.name == "hello"}
    assert hello == {"1.0": "conda", "2.0": "tar.bz2"}
    for name in ("pytorch", "torchvision"):
        builds = {s.build: s for s in specs if s.name == name}
        assert set(builds) == {"cuda126_0", "cpu_0"}
        cuda, cpu = builds["cuda126_0"], builds["cpu_0"]
        assert (cuda.version, cuda.build_number) == (cpu.version, cpu.build_number)
        assert "__cuda >=12" in cuda.depends
        assert not any(d.startswith("__cuda") for d in cpu.depends)


def test_demo_python_links_to_the_given_interpreter_with_a_venv_config():
    python = next(s for s in demo_packages(sys.executable) if s.name == "python")
    exe = os.path.realpath(sys.executable)
    assert python.symlinks["bin/python"] == exe
    assert python.version.startswith("{}.{}.".format(*sys.version_info[:2]))
    cfg = python.files["pyvenv.cfg"]
    assert f"home = {os.path.dirname(exe)}" in cfg
    assert "include-system-site-packages = false" in cfg
    short = "{}.{}".format(*sys.version_info[:2])
    assert any(p.startswith(f"lib/python{short}/site-packages/") for p in python.files)


@pytest.mark.parametrize("fmt", ["tar.bz2", "conda"])
def test_both_formats_install_with_rattler_including_modes_and_symlinks(tmp_path, fmt):
    spec = PackageRecipe(
        "fmt-check",
        "1.0",
        files={"bin/fmt-check": "#!/bin/sh\necho ok\n", "share/fmt-check/a.txt": "a\n"},
        executables=frozenset({"bin/fmt-check"}),
        symlinks={"bin/fmt-check-link": "fmt-check"},
        fmt=fmt,
    )
    channel = tmp_path / "channel"
    build_package(spec, channel / native_subdir())
    (channel / "noarch").mkdir()
    engine.index_channel(channel)
    cache, prefix = tmp_path / "cache", tmp_path / "env"
    engine.install(
        engine.solve([channel.as_uri()], ["fmt-check"], cache_dir=cache), prefix, cache_dir=cache
    )
    assert (prefix / "share/fmt-check/a.txt").read_text() == "a\n"
    assert os.readlink(prefix / "bin/fmt-check-link") == "fmt-check"
    out = subprocess.run([prefix / "bin/fmt-check-link"], capture_output=True, text=True)
    assert out.stdout == "ok\n"


def test_the_same_spec_builds_the_same_bytes(tmp_path):
    spec = PackageRecipe("same", "1.0", files={"share/same.txt": "x\n"})
    first = build_package(spec, tmp_path / "a").read_bytes()
    assert build_package(spec, tmp_path / "b").read_bytes() == first


def test_synthetic_packages_depend_only_on_lower_numbered_ones():
    specs = synthetic_packages(n_packages=20, versions=2, files_per_package=3, seed=1)
    assert len(specs) == 40
    assert specs == synthetic_packages(n_packages=20, versions=2, files_per_package=3, seed=1)
    for spec in specs:
        number = int(spec.name.removeprefix("pkg"))
        assert all(int(d.removeprefix("pkg")) < number for d in spec.depends)
        assert len(spec.files) == 3
