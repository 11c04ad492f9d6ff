"""`hpcenv setup` with the entries real caches hold: sockets, FIFOs, devices, odd modes, other
users' files, sparse files; as a non-root user; with too little space or too few inodes. Each
either moves exactly or is refused (exit 2, naming it and the fix) before anything moves."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from hpcenv.errors import HpcenvError, OperationError
from hpcenv.setup import drain, execute, plan_setup
from hpcenv.storage import Layout
from tests.conftest import IS_ROOT, run_as_user
from tests.fs import make_caches, snapshot, tmpfs
from tests.moving import assert_finished, assert_nothing_lost, regular_files, run_setup

needs_root = pytest.mark.root("needs root (tmpfs, other users)")
NOBODY = 65534


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    return home, storage


# ------------------------------------------------------------------ conflicts and modes


def test_identical_content_with_another_mode_is_a_conflict_not_a_duplicate(dirs):
    home, storage = dirs
    make_caches(home, storage)  # home's tool.sh is 755
    (storage / ".cache" / "tool.sh").write_text("#!/bin/sh\necho hi\n")  # same bytes, 644
    (storage / ".cache" / "tool.sh").chmod(0o644)
    done = run_setup(home, storage)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((storage / ".cache" / "tool.sh").stat().st_mode) == 0o644
    kept = next((storage / ".hpcenv" / "conflicts").glob("*/cache/tool.sh"))
    assert stat.S_IMODE(kept.stat().st_mode) == 0o755  # the executable bit is not lost


@pytest.mark.parametrize("cross", [False, pytest.param(True, marks=needs_root)])
def test_dry_run_reports_the_conflicts_the_real_run_finds(tmp_path, cross):
    home = tmp_path / "home"
    home.mkdir()
    with tmpfs(tmp_path / "fs2", "16m") if cross else _plain(tmp_path / "storage") as storage:
        make_caches(home, storage)
        (storage / ".cache" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
        (storage / ".conda" / "pkgs").mkdir(parents=True)
        (storage / ".conda" / "pkgs" / "urls.txt").write_text("another\n")
        planned = run_setup(home, storage, "--dry-run", "--json")
        assert planned.returncode == 0, planned.stderr
        done = run_setup(home, storage, "--json")
        assert done.returncode == 0, done.stderr
        predicted = {
            d["name"]: d["conflicts"] for d in json.loads(planned.stdout)["result"]["dirs"]
        }
        found = {d["name"]: d["conflicts"] for d in json.loads(done.stdout)["result"]["dirs"]}
        assert predicted == found
        assert sorted(found[".cache"]) == ["pip/selfcheck.json", "tool.sh"]
        assert found[".conda"] == ["pkgs/urls.txt"]


class _plain:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.mkdir()
        return self.path

    def __exit__(self, *exc: object) -> None:
        pass


# ------------------------------------------------------------------ special files


@pytest.mark.parametrize("cross", [False, pytest.param(True, marks=needs_root)])
def test_sockets_fifos_and_devices_move_or_are_recreated_and_undo_brings_them_back(tmp_path, cross):
    home = tmp_path / "home"
    (home / ".cache" / "ssh").mkdir(parents=True)
    (home / ".conda").mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(home / ".cache" / "ssh" / "control"))  # an ssh ControlPath, in use
    listener.listen(1)
    os.mkfifo(home / ".cache" / "pipe", 0o640)
    if IS_ROOT:
        os.mknod(home / ".cache" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    try:
        with tmpfs(tmp_path / "fs2", "16m") if cross else _plain(tmp_path / "st") as storage:
            done = run_setup(home, storage)
            assert done.returncode == 0, done.stderr
            moved = storage / ".cache"
            assert stat.S_ISSOCK(os.lstat(moved / "ssh" / "control").st_mode)
            assert stat.S_ISFIFO(os.lstat(moved / "pipe").st_mode)
            assert stat.S_IMODE(os.lstat(moved / "pipe").st_mode) == 0o640
            if IS_ROOT:
                assert os.lstat(moved / "null").st_rdev == os.makedev(1, 3)
            if not cross:  # renamed, not recreated: the socket still answers
                client = socket.socket(socket.AF_UNIX)
                client.connect(str(home / ".cache" / "ssh" / "control"))
                client.close()
            back = run_setup(home, storage, "--undo")
            assert back.returncode == 0, back.stderr
            assert stat.S_ISSOCK(os.lstat(home / ".cache" / "ssh" / "control").st_mode)
            assert stat.S_ISFIFO(os.lstat(home / ".cache" / "pipe").st_mode)
            assert_finished("undo", home, storage)
    finally:
        listener.close()


# ------------------------------------------------------------------ as a non-root user


def _home_of_nobody(base: Path) -> Path:
    """A home of user nobody (pytest's tmp dirs are 0700: not usable by another user)."""
    home = base / "home"
    (home / ".cache" / "pip").mkdir(parents=True)
    (home / ".cache" / "pip" / "wheel").write_text("wheel\n")
    (home / ".conda").mkdir()
    for path in (home, *home.rglob("*")):
        os.lchown(path, NOBODY, NOBODY)
    return home


def _odd(kind: str, cache: Path) -> Path:
    path = cache / kind
    if kind == "file-000":
        path.write_text("secret\n")
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o000)
    elif kind == "root-file-600":
        path.write_text("root's\n")
        path.chmod(0o600)  # owned by root
    elif kind in ("dir-555", "dir-000"):
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "f").write_text("x\n")
        for p in (path, path / "inner", path / "inner" / "f"):
            os.chown(p, NOBODY, NOBODY)
        path.chmod(0o555 if kind == "dir-555" else 0o000)
    return path


def _plan_as_nobody(home: Path, storage: Path, count: bool):
    def plan():
        try:
            plan_setup(Layout(home=home, root=storage), count=count)
        except HpcenvError as exc:
            return exc.exit_code, exc.one_line()
        return 0, ""

    return run_as_user("nobody", plan)


def _setup_as_nobody(home: Path, storage: Path):
    def setup():
        layout = Layout(home=home, root=storage)
        report = execute(plan_setup(layout), lock_timeout=5)
        return [(d.name, d.after, d.skipped) for d in report.dirs]

    return run_as_user("nobody", setup)


# On one filesystem entries move by rename: a directory that changes parent must be writable
# itself, a file need not be readable. Across two every file is read and every directory
# emptied. (root bypasses all of it, so these run as nobody.)
MOVABLE = {
    (False, "file-000"): True,
    (False, "root-file-600"): True,
    (False, "dir-555"): False,
    (False, "dir-000"): False,
    (True, "file-000"): False,
    (True, "root-file-600"): False,
    (True, "dir-555"): False,
    (True, "dir-000"): False,
}


@needs_root
@pytest.mark.parametrize("cross", [False, True], ids=["same-fs", "cross-fs"])
@pytest.mark.parametrize("kind", ["file-000", "root-file-600", "dir-555", "dir-000"])
def test_non_root_entries_are_moved_or_refused_before_anything_moves(kind, cross):
    base = Path(tempfile.mkdtemp(prefix="hpcenv-odd-"))
    base.chmod(0o755)
    try:
        with tmpfs(base / "fs2", "16m") if cross else _plain(base / "st") as storage:
            os.chown(storage, NOBODY, NOBODY)
            home = _home_of_nobody(base)
            odd = _odd(kind, home / ".cache")
            before = snapshot(home, storage)
            for count in (True, False):  # --dry-run plans the same, and does not crash
                code, message = _plan_as_nobody(home, storage, count)
                if MOVABLE[cross, kind]:
                    assert code == 0, message
                else:
                    assert code == 2 and str(odd) in message, message
                    assert f"chmod -R u+rwX {home / '.cache'}" in message
            assert snapshot(home, storage) == before
            if MOVABLE[cross, kind]:
                dirs = _setup_as_nobody(home, storage)
                assert [after for _, after, _ in dirs] == ["linked", "linked"]
                assert os.path.lexists(storage / ".cache" / kind)
                assert (storage / ".cache" / "pip" / "wheel").read_text() == "wheel\n"
            elif kind != "root-file-600":  # the hint's fix works for the user's own entries
                run_as_user("nobody", os.system, f"chmod -R u+rwX {home / '.cache'}")
                assert _plan_as_nobody(home, storage, False) == (0, "")
    finally:
        for p in base.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_non_root_device_files_across_filesystems_are_reported_not_a_reason_to_fail():
    base = Path(tempfile.mkdtemp(prefix="hpcenv-dev-"))
    base.chmod(0o755)
    try:
        with tmpfs(base / "fs2", "16m") as storage:
            os.chown(storage, NOBODY, NOBODY)
            home = _home_of_nobody(base)
            os.mknod(home / ".cache" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            dirs = _setup_as_nobody(home, storage)
            assert dirs[0] == (".cache", "linked", ("null",))
            assert (storage / ".cache" / "pip" / "wheel").read_text() == "wheel\n"
            assert not (home / ".cache.hpcenv-moving").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_read_only_home_is_refused_before_anything_moves():
    base = Path(tempfile.mkdtemp(prefix="hpcenv-ro-"))
    base.chmod(0o755)
    try:
        home, storage = _home_of_nobody(base), base / "storage"
        storage.mkdir()
        os.chown(storage, NOBODY, NOBODY)
        home.chmod(0o555)
        before = snapshot(home, storage)
        code, message = _plan_as_nobody(home, storage, False)
        assert code == 2 and "is not writable" in message and str(home) in message
        assert snapshot(home, storage) == before
    finally:
        home.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("args", [(), ("--undo",)])
@pytest.mark.parametrize("name", [".hpcenv", ".hpcenv-staging", ".cache.hpcenv-moving"])
def test_redirect_may_not_name_hpcenvs_own_state(dirs, args, name):
    home, storage = dirs
    make_caches(home, storage)
    before = snapshot(home, storage)
    refused = run_setup(home, storage, *args, HPCENV_REDIRECT=f".cache,{name}")
    assert refused.returncode == 2 and "overlap hpcenv's own state" in refused.stderr
    assert snapshot(home, storage) == before


# ------------------------------------------------------------------ space


@needs_root
def test_space_check_counts_disk_blocks_not_apparent_bytes(tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "tiny").mkdir(parents=True)
    for i in range(2000):  # 2,000 bytes of data, 2,000 blocks of 4 KiB on the tmpfs
        (home / ".cache" / "tiny" / f"{i}").write_bytes(b"x")
    with tmpfs(tmp_path / "fs2", "4m") as storage:
        before = snapshot(home, storage)
        refused = run_setup(home, storage)
        assert refused.returncode == 2, refused.stderr
        assert "not enough space" in refused.stderr and "MiB of disk blocks" in refused.stderr
        assert snapshot(home, storage) == before


@needs_root
def test_space_check_counts_inodes(tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "many").mkdir(parents=True)
    for i in range(400):
        (home / ".cache" / "many" / f"{i}").write_bytes(b"")
    with tmpfs(tmp_path / "fs2", "64m", inodes=300) as storage:
        refused = run_setup(home, storage)
        assert refused.returncode == 2, refused.stderr
        assert (
            "not enough inodes" in refused.stderr and "401 files and directories" in refused.stderr
        )


@needs_root
def test_sparse_files_stay_sparse(tmp_path):
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    sparse = home / ".cache" / "disk.img"
    with open(sparse, "wb") as f:
        f.seek(48 * 1024 * 1024)
        f.write(b"end")  # 48 MiB apparent, one block of data
    with tmpfs(tmp_path / "fs2", "8m") as storage:
        done = run_setup(home, storage)
        assert done.returncode == 0, done.stderr
        copy = storage / ".cache" / "disk.img"
        assert copy.stat().st_size == 48 * 1024 * 1024 + 3
        assert copy.stat().st_blocks * 512 <= 64 * 1024
        with open(copy, "rb") as f:
            f.seek(48 * 1024 * 1024 - 1)
            assert f.read() == b"\0end"


@needs_root
def test_out_of_space_mid_copy_says_what_moved_and_what_did_not(tmp_path):
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".cache" / "small").write_bytes(os.urandom(10_000))
    (home / ".conda" / "pkgs").mkdir(parents=True)
    for i in range(40):
        (home / ".conda" / "pkgs" / f"p{i}").write_bytes(os.urandom(60_000))
    conda_before = snapshot(home / ".conda")
    with tmpfs(tmp_path / "fs2", "6m") as storage:
        layout = Layout(home=home, root=storage)
        plan = plan_setup(layout)  # fits now...
        filler = storage / "filler"
        filler.write_bytes(b"\1" * (4608 * 1024))  # ...but something else fills the disk
        with pytest.raises(OperationError) as err:
            execute(plan)
        message = err.value.message
        assert "ran out of space" in message and f"copying {home / '.conda'}" in message
        assert f"{home / '.cache'} was moved" in message
        assert f"{home / '.conda'} was not moved" in message
        assert "partial copy was removed" in message and "source is untouched" not in message
        assert os.readlink(home / ".cache") == str(storage / ".cache")
        assert snapshot(home / ".conda") == conda_before
        assert not list((storage / ".hpcenv" / "journal").glob("*.jsonl"))
        assert not (storage / ".hpcenv" / "staging" / ".conda").exists()
        filler.unlink()
        again = run_setup(home, storage)
        assert again.returncode == 0, again.stderr
        assert_finished("setup", home, storage)


def test_a_file_written_after_a_kill_half_way_is_moved_by_the_re_run(tmp_path):
    """The issue's first case: killed with ~/.cache half moved, a file arrives there (through
    a process still working in the old directory), and the re-run moves it, deletes nothing."""
    for k in range(1, 40):
        home, storage = tmp_path / f"k{k}" / "home", tmp_path / f"k{k}" / "storage"
        home.mkdir(parents=True)
        storage.mkdir()
        make_caches(home, storage)
        before = {f".cache/{k}": v for k, v in regular_files(home / ".cache").items()}
        assert run_setup(home, storage, kill_after=k).returncode == -9
        aside = home / ".cache.hpcenv-moving"
        if aside.is_dir() and not aside.is_symlink() and (aside / "pip").is_dir():
            break
    else:
        raise AssertionError("no kill left ~/.cache half moved")
    (aside / "pip" / "late").write_text("written after the kill\n")
    before[".cache/pip/late"] = b"written after the kill\n"
    again = run_setup(home, storage)
    assert again.returncode == 0, again.stderr
    assert_nothing_lost(before, storage, storage)
    assert_finished("setup", home, storage)


def test_trees_decoding_a_name_left_by_a_run_killed_while_checking_it(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / (drain.REMOVING + "data")).write_text("same\n")
    (dst / "data").write_text("same\n")
    (src / (drain.REMOVING + "other")).write_text("only here\n")
    mover = drain.Mover({os.lstat(dst).st_dev: tmp_path / "tmp"})
    mover.drain(src, dst, tmp_path / "conflicts")
    assert not src.exists()
    assert (dst / "data").read_text() == "same\n" and mover.duplicates == 1
    assert (dst / "other").read_text() == "only here\n"
