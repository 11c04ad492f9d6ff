"""File modes of envs and caches: the umask rule after installs, and walks that never follow
a symlink."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from hpcenv.channel import PackageRecipe, build_channel
from hpcenv.perms import apply_umask, copy_to_temp
from tests.conftest import IS_ROOT, need
from tests.fs import cli_env, hpcenv, xfs_reflink


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def loose_channel(tmp_path_factory) -> str:
    """A package whose archive holds a 0666 file, a 0777 tool and a setuid one."""
    loose = PackageRecipe(
        "loose",
        "1.0",
        files={"share/loose.txt": "anyone may write me\n", "bin/loose": "#!/bin/sh\n"},
        modes={"share/loose.txt": 0o666, "bin/loose": 0o777},
    )
    suid = PackageRecipe(
        "suid", "1.0", files={"bin/suid": "#!/bin/sh\n"}, modes={"bin/suid": 0o4755}
    )
    plain = PackageRecipe("plain", "1.0", files={"share/plain.txt": "plain\n"})
    return build_channel(tmp_path_factory.mktemp("loose-channel"), [loose, suid, plain])


@pytest.fixture
def home(fake_home):
    env = cli_env(fake_home["home"], fake_home["storage"])
    assert hpcenv("setup", "--yes", env=env).returncode == 0
    return {**fake_home, "env": env}


@pytest.mark.parametrize(
    ("umask", "file_mode", "exe_mode"),
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)],
    ids=["umask-022", "umask-077"],
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


def _copy(directory: Path, name: str, temp: str, mode: int) -> Path:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy_to_temp(fd, name, temp, mode, os.getgid())
    finally:
        os.close(fd)
    return directory / temp


def test_a_copy_has_its_own_inode_the_same_content_and_times_and_the_new_mode(tmp_path):
    original = tmp_path / "tool"
    original.write_bytes(os.urandom(300_000))
    original.chmod(0o755)
    os.link(original, tmp_path / "cache-link")
    os.utime(original, ns=(1_000_000_000, 2_000_000_000))
    copy = _copy(tmp_path, "tool", ".hpcenv-copy-1-1", 0o775)
    st, ost = os.stat(copy), os.stat(original)
    assert copy.read_bytes() == original.read_bytes()
    assert st.st_ino != ost.st_ino and st.st_nlink == 1 and ost.st_nlink == 2
    assert st.st_mtime_ns == 2_000_000_000 and _mode(copy) == 0o775 and _mode(original) == 0o755


def test_a_copy_is_a_reflink_where_the_filesystem_shares_blocks(tmp_path):
    need("root", IS_ROOT, "a loop mount needs root")
    need("xfsprogs", shutil.which("mkfs.xfs") is not None, "mkfs.xfs missing (Debian xfsprogs)")
    with xfs_reflink(tmp_path / "xfs", tmp_path / "xfs.img") as fs:
        (fs / "big").write_bytes(os.urandom(4 << 20))
        copy = _copy(fs, "big", ".hpcenv-copy-1-1", 0o644)
        extents = subprocess.run(["filefrag", "-v", str(copy)], capture_output=True, text=True)
        assert "shared" in extents.stdout, extents.stdout
        assert copy.read_bytes() == (fs / "big").read_bytes()
