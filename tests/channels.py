"""Fixtures that build real conda channels (real .tar.bz2 and .conda packages, indexed)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcenv.channel import PackageRecipe, build_channel, demo_packages


@dataclass(frozen=True)
class Channel:
    path: Path
    url: str


@pytest.fixture(scope="session")
def demo_channel(tmp_path_factory) -> Channel:
    path = tmp_path_factory.mktemp("demo-channel")
    return Channel(path, build_channel(path, demo_packages()))


def many_files_package(name: str, files: int, size: int = 1000) -> PackageRecipe:
    """A package whose unpacked size is far larger than its archive (for ENOSPC tests)."""
    return PackageRecipe(
        name, "1.0", files={f"share/{name}/{i:05d}": "x" * size for i in range(files)}
    )


@pytest.fixture
def ready_home(fake_home, demo_channel):
    """HOME and storage with `hpcenv setup` done, and the demo channel's URL."""
    from tests.fs import cli_env, hpcenv

    env = cli_env(fake_home["home"], fake_home["storage"])
    result = hpcenv("setup", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    return {**fake_home, "env": env, "url": demo_channel.url}


def result_of(completed: subprocess.CompletedProcess) -> dict:
    """The `result` of a command's --json output."""
    return json.loads(completed.stdout)["result"]


def pkgs(h) -> Path:
    """The package cache's package directory of a prepared home."""
    return h["storage"] / ".cache" / "rattler" / "pkgs"


def prefix(h, name: str) -> Path:
    return h["home"] / ".conda" / "envs" / name


@pytest.fixture
def two_envs(ready_home):
    """e1 and e2 share demo-tool; libnum 2.0 was installed into e1 and removed again, so its
    extracted package is in the cache with nothing linking it."""
    from tests.fs import hpcenv_ok as ok

    h = ready_home
    ok(h, "create", "e1", "demo-tool", "hello", "python", "-c", h["url"])
    ok(h, "create", "e2", "demo-tool", "numtool", "-c", h["url"])
    ok(h, "install", "e1", "libnum=2.0")
    ok(h, "remove", "e1", "libnum")
    assert (pkgs(h) / "libnum-2.0-0").is_dir()
    return h
