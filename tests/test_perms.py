"""File modes of envs and caches: the umask rule after installs, and walks that never follow
a symlink."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpcenv.channel import PackageSpec, build_channel
from hpcenv.perms import apply_umask
from tests.fs import cli_env, hpcenv


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def loose_channel(tmp_path_factory) -> str:
    """A package whose archive holds a 0666 file, a 0777 tool and a setuid one."""
    loose = PackageSpec(
        "loose",
        "1.0",
        files={"share/loose.txt": "anyone may write me\n", "bin/loose": "#!/bin/sh\n"},
        modes={"share/loose.txt": 0o666, "bin/loose": 0o777},
    )
    suid = PackageSpec("suid", "1.0", files={"bin/suid": "#!/bin/sh\n"}, modes={"bin/suid": 0o4755})
    plain = PackageSpec("plain", "1.0", files={"share/plain.txt": "plain\n"})
    return build_channel(tmp_path_factory.mktemp("loose-channel"), [loose, suid, plain])


@pytest.fixture
def home(fake_home):
    env = cli_env(fake_home["home"], fake_home["storage"])
    assert hpcenv("setup", "--yes", env=env).returncode == 0
    return {**fake_home, "env": env}


@pytest.mark.parametrize(
    ("umask", "file_mode", "exe_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_archive_modes_never_exceed_the_umask_in_the_env_and_the_cache(
    home, loose_channel, umask, file_mode, exe_mode
):
    env = home["env"]
    r = hpcenv("create", "e", "loose", "-c", loose_channel, env=env, umask=umask)
    assert r.returncode == 0, r.stderr
    prefix = home["home"] / ".conda" / "envs" / "e"
    cache = home["storage"] / ".cache" / "rattler" / "pkgs" / "loose-1.0-0"
    for root in (prefix, cache):
        assert _mode(root / "share" / "loose.txt") == file_mode
        assert _mode(root / "bin" / "loose") == exe_mode
        assert _mode(root / "share") & umask == 0


def test_install_into_an_env_applies_the_umask_too_and_drops_setuid(home, loose_channel):
    env = home["env"]
    assert hpcenv("create", "e", "plain", "-c", loose_channel, env=env).returncode == 0
    r = hpcenv("install", "e", "loose", "suid", env=env, umask=0o022)
    assert r.returncode == 0, r.stderr
    prefix = home["home"] / ".conda" / "envs" / "e"
    assert _mode(prefix / "share" / "loose.txt") == 0o644
    assert _mode(prefix / "bin" / "suid") == 0o755


def test_apply_umask_never_follows_a_symlink_out_of_the_tree(tmp_path):
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "target").write_text("not mine to change")
    (tree / "sub" / "own").write_text("mine")
    for p in (outside / "target", tree / "sub" / "own", outside):
        p.chmod(0o666 if p.is_file() else 0o777)
    os.symlink(outside / "target", tree / "link-to-file")
    os.symlink(outside, tree / "sub" / "link-to-dir")
    changed = apply_umask(tree, umask=0o022)
    assert changed == 1
    assert _mode(tree / "sub" / "own") == 0o644
    assert _mode(outside / "target") == 0o666 and _mode(outside) == 0o777


def test_apply_umask_keeps_the_bits_it_is_told_to_keep(tmp_path):
    f = tmp_path / "shared-file"
    f.write_text("x")
    f.chmod(0o664)
    assert apply_umask(tmp_path, umask=0o022, keep=0o070) == 0
    assert _mode(f) == 0o664
    assert apply_umask(tmp_path, umask=0o022) == 1
    assert _mode(f) == 0o644
