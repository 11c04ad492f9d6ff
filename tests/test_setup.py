"""`hpcenv setup` and `--undo` on real files and real filesystems, with fault injection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcenv.errors import RefusedError, UsageError
from hpcenv.setup import plan_setup
from hpcenv.storage import Layout, check_storage
from tests.conftest import run_as_user
from tests.fs import cli_env, file_digests, hpcenv, make_caches, snapshot, tmpfs
from tests.paused import Paused, Started


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    return home, storage


def setup(home: Path, storage: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return hpcenv("setup", "--yes", *args, env=cli_env(home, storage, **env))


def test_setup_on_fresh_home_creates_storage_dirs_and_links(dirs):
    home, storage = dirs
    result = setup(home, storage)
    assert result.returncode == 0, result.stderr
    for name in (".cache", ".conda"):
        assert os.readlink(home / name) == str(storage / name)
        assert (storage / name).is_dir()
    assert oct((storage / ".hpcenv").stat().st_mode & 0o777) == "0o700"


def test_setup_moves_existing_caches_and_loses_nothing(dirs):
    home, storage = dirs
    make_caches(home, storage)
    before_home = file_digests(home / ".cache")
    result = setup(home, storage)
    assert result.returncode == 0, result.stderr
    after = file_digests(storage / ".cache")
    conflicts = list((storage / ".hpcenv" / "conflicts").glob("*/cache"))
    assert len(conflicts) == 1
    kept_aside = file_digests(conflicts[0])
    for rel, digest in before_home.items():
        assert after.get(rel) == digest or kept_aside.get(rel) == digest, rel
    # storage's own files survive, and the conflict did not overwrite storage's copy
    assert (storage / ".cache/kept/storage-only.txt").read_text() == "mine\n"
    assert (storage / ".cache/pip/selfcheck.json").read_text() == '{"storage": true}\n'
    assert (conflicts[0] / "pip/selfcheck.json").read_text() == '{"home": true}\n'
    # hardlinks, symlinks (dangling too), modes and odd names arrive as they were
    moved = storage / ".cache"
    assert os.path.samefile(moved / "pip/hardlink-to-blob", moved / "pip/http/a b/blob")
    assert os.readlink(moved / "pip/relative-link") == "http/a b/blob"
    assert os.readlink(moved / "dangling-link") == "/nonexistent/target"
    assert (moved / "secret").stat().st_mode & 0o777 == 0o600
    assert (moved / "empty/deeper").is_dir()
    assert os.path.exists(os.path.join(os.fsencode(moved), b"caf\xe9-latin1"))
    assert "conflicts" in result.stdout.lower()


def test_setup_is_idempotent_when_already_linked(dirs):
    home, storage = dirs
    make_caches(home, storage)
    assert setup(home, storage).returncode == 0
    before = snapshot(home, storage)
    again = setup(home, storage, "--json")
    assert again.returncode == 0
    assert snapshot(home, storage) == before
    import json

    report = json.loads(again.stdout)["result"]
    assert [d["action"] for d in report["dirs"]] == ["none", "none"]


@pytest.mark.parametrize(
    "make_link, fragment",
    [
        (lambda home, other: os.symlink(other, home / ".cache"), "is a symlink to"),
        (lambda home, other: os.symlink(other / "gone", home / ".cache"), "dangling symlink"),
        (lambda home, other: (home / ".cache").write_text("a file"), "not a directory"),
    ],
    ids=["symlink-elsewhere", "dangling-symlink", "regular-file"],
)
def test_setup_refuses_what_it_did_not_make_and_changes_nothing(dirs, make_link, fragment):
    home, storage = dirs
    other = home.parent / "elsewhere"
    other.mkdir()
    (home / ".conda").mkdir()
    (home / ".conda" / "keep").write_text("x")
    make_link(home, other)
    before = snapshot(home, storage, other)
    result = setup(home, storage)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "hint:" in lines[0]
    assert snapshot(home, storage, other) == before


@pytest.mark.parametrize(
    "storage_of, fragment",
    [
        (lambda home, tmp: tmp / "missing", "does not exist"),
        (lambda home, tmp: home, "is your home directory"),
        (lambda home, tmp: home / "inside", "inside your home"),
        (lambda home, tmp: tmp / "a-file", "not a directory"),
    ],
    ids=["missing", "equal-to-home", "inside-home", "a-file"],
)
def test_setup_refuses_bad_storage_and_changes_nothing(dirs, storage_of, fragment):
    home, _ = dirs
    (home / "inside").mkdir()
    (home.parent / "a-file").write_text("")
    make_caches(home, home.parent / "storage")
    storage = storage_of(home, home.parent)
    before = snapshot(home.parent)
    result = setup(home, storage)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(home.parent) == before


@pytest.mark.root("needs root to act as another user")
def test_setup_refuses_storage_not_writable_by_the_user(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="hpcenv-nw-"))  # pytest's tmp_path is 0700: not for nobody
    home, storage = base / "home", base / "storage"
    home.mkdir(parents=True)
    storage.mkdir()
    base.chmod(0o755)
    storage.chmod(0o755)  # owned by root: not writable by nobody
    os.chown(home, 65534, 65534)
    try:
        with pytest.raises(UsageError, match="not writable"):
            run_as_user("nobody", check_storage, Layout(home=home, root=storage))
    finally:
        import shutil

        shutil.rmtree(base)


def test_dry_run_prints_the_plan_and_changes_nothing(dirs):
    home, storage = dirs
    make_caches(home, storage)
    before = snapshot(home, storage)
    result = setup(home, storage, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "move" in result.stdout and ".cache" in result.stdout
    assert snapshot(home, storage) == before
    assert not (storage / ".hpcenv").exists()


def test_plan_counts_files_and_bytes_for_dry_run(dirs):
    home, storage = dirs
    make_caches(home, storage)
    plan = plan_setup(Layout(home=home, root=storage), count=True)
    cache = next(d for d in plan.dirs if d.name == ".cache")
    assert cache.action == "move" and cache.files == 11 and cache.bytes > 3000


def test_undo_moves_everything_back_and_removes_links(dirs):
    home, storage = dirs
    make_caches(home, storage)
    assert setup(home, storage).returncode == 0
    in_storage = file_digests(storage / ".cache")
    result = setup(home, storage, "--undo")
    assert result.returncode == 0, result.stderr
    assert not (home / ".cache").is_symlink() and (home / ".cache").is_dir()
    assert file_digests(home / ".cache") == in_storage
    assert not (storage / ".cache").exists() and not (storage / ".conda").exists()
    assert os.path.samefile(home / ".cache/pip/hardlink-to-blob", home / ".cache/pip/http/a b/blob")


def test_condarc_dirs_in_home_are_reported_not_changed(dirs):
    home, storage = dirs
    condarc = home / ".condarc"
    condarc.write_text(f"envs_dirs:\n  - {home}/my-envs\npkgs_dirs:\n  - ~/pkgs\n")
    before = condarc.read_text()
    result = setup(home, storage)
    assert result.returncode == 0
    assert result.stderr.count("points into home") == 2
    assert condarc.read_text() == before


# ------------------------------------------------------------------ fault injection
# Killing setup and undo after every step (with a concurrent writer, and an I/O error at each
# step) is tested in test_setup_world.py; here, the CLI end to end in a real subprocess.


def test_setup_killed_then_re_run_through_the_cli_ends_as_an_uninterrupted_run(tmp_path):
    def prepare(base: Path) -> tuple[Path, Path]:
        home, storage = base / "home", base / "storage"
        home.mkdir(parents=True)
        storage.mkdir()
        make_caches(home, storage)
        return home, storage

    home, storage = prepare(tmp_path / "ref")
    assert setup(home, storage).returncode == 0
    expected = snapshot(home, storage)
    home, storage = prepare(tmp_path / "run")
    killed = setup(home, storage, _HPCENV_TEST_KILL_AFTER="5")
    assert killed.returncode == -9
    again = setup(home, storage)
    assert again.returncode == 0, again.stderr
    assert "resumed an interrupted run" in again.stderr
    assert _rebase(snapshot(home, storage), tmp_path / "run") == _rebase(expected, tmp_path / "ref")


def _rebase(snap: dict, base: Path) -> dict:
    """Symlink targets are absolute paths of that run's storage: make them comparable."""
    b = os.fsencode(base)
    return {
        k: tuple(x.replace(b, b"BASE") if isinstance(x, bytes) else x for x in v)
        for k, v in snap.items()
    }


# ------------------------------------------------------------------ concurrency


def test_two_concurrent_setups_one_waits_and_the_result_is_correct(dirs):
    home, storage = dirs
    make_caches(home, storage)
    env = cli_env(home, storage)
    first = Paused(["setup", "--yes"], env, storage.parent)  # held with both locks
    second = Started(["setup", "--yes"], env)
    second.stderr_until("waiting for another hpcenv")
    first.resume()
    done, then = first.finish(), second.finish()
    assert done.returncode == 0, done.stderr
    assert then.returncode == 0, then.stderr
    for name in (".cache", ".conda"):
        assert os.readlink(home / name) == str(storage / name)
    assert (storage / ".cache/pip/http/a b/blob").exists()


def test_lock_timeout_refuses_with_exit_2(dirs):
    home, storage = dirs
    make_caches(home, storage)
    env = cli_env(home, storage)
    first = Paused(["setup", "--yes"], env, storage.parent)
    second = subprocess.run(
        [sys.executable, "-m", "hpcenv", "setup", "--yes"],
        env={**env, "HPCENV_LOCK_TIMEOUT": "0.2"},
        capture_output=True,
        text=True,
    )
    first.resume()
    assert first.finish().returncode == 0
    assert second.returncode == 2
    assert "another hpcenv" in second.stderr.splitlines()[-1]


# ------------------------------------------------------------------ across filesystems (root)

needs_root = pytest.mark.root("mounting a tmpfs needs root")


@needs_root
def test_setup_across_filesystems_keeps_every_checksum(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with tmpfs(tmp_path / "fs2", "64m") as storage:
        make_caches(home, storage, bulk=500)
        before = file_digests(home / ".cache")
        result = setup(home, storage)
        assert result.returncode == 0, result.stderr
        after = file_digests(storage / ".cache")
        kept = file_digests(next((storage / ".hpcenv/conflicts").glob("*/cache")))
        for rel, digest in before.items():
            assert after.get(rel) == digest or kept.get(rel) == digest, rel
        moved = storage / ".cache"
        assert os.path.samefile(moved / "pip/hardlink-to-blob", moved / "pip/http/a b/blob")
        assert os.readlink(moved / "dangling-link") == "/nonexistent/target"
        assert (moved / "secret").stat().st_mode & 0o777 == 0o600
        assert not (storage / ".hpcenv/staging/.cache").exists()
        # and back again, across the same boundary
        undo = setup(home, storage, "--undo")
        assert undo.returncode == 0, undo.stderr
        assert file_digests(home / ".cache") == after


@needs_root
def test_setup_refuses_when_storage_is_too_small_before_touching_anything(tmp_path):
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".cache" / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    with tmpfs(tmp_path / "tiny", "1m") as storage:
        before = snapshot(home, storage)
        result = setup(home, storage)
        assert result.returncode == 2
        assert "not enough space" in result.stderr
        assert snapshot(home, storage) == before


def test_refusals_are_usage_errors_with_exit_code_2():
    assert RefusedError("x").exit_code == 2 and UsageError("x").exit_code == 2
