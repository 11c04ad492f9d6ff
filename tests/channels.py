"""Fixtures that build real conda channels (real .tar.bz2 and .conda packages, indexed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcenv.channel import PackageSpec, build_channel, demo_packages


@dataclass(frozen=True)
class Channel:
    path: Path
    url: str


@pytest.fixture(scope="session")
def demo_channel(tmp_path_factory) -> Channel:
    path = tmp_path_factory.mktemp("demo-channel")
    return Channel(path, build_channel(path, demo_packages()))


def many_files_package(name: str, files: int, size: int = 1000) -> PackageSpec:
    """A package whose unpacked size is far larger than its archive (for ENOSPC tests)."""
    return PackageSpec(
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
