"""`hpcenv setup` and `--undo` lose nothing while the world moves: a writer process adds files
during every phase, the run is killed (or hits an I/O error) after every single step, and the
same command or the opposite one takes over from the state it left, on one filesystem and
across two. Every file ever written must end up in place or under the conflicts directory."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, need
from tests.fs import cli_env, make_caches, tmpfs
from tests.moving import (
    Writer,
    assert_finished,
    assert_nothing_lost,
    regular_files,
    run_setup,
    stable_snapshot,
)
from tests.paused import Paused, Started

needs_root = pytest.mark.root("mounting a tmpfs needs root")
OPPOSITE = {"setup": "undo", "undo": "setup"}


def args_of(op: str) -> tuple[str, ...]:
    return ("--undo",) if op == "undo" else ()


class World:
    """Fresh (home, storage) pairs under one test directory; storage on a second filesystem
    (one tmpfs for the whole test) when `cross`."""

    def __init__(self, tmp_path: Path, storage_base: Path, cross: bool) -> None:
        self.tmp_path, self.storage_base, self.cross = tmp_path, storage_base, cross

    def make(self, name: str, op: str) -> tuple[Path, Path, dict[str, bytes]]:
        home, storage = self.tmp_path / name / "home", self.storage_base / name / "storage"
        home.mkdir(parents=True)
        storage.mkdir(parents=True)
        make_caches(home, storage)
        (home / ".cache" / "fdw").mkdir()  # the writer keeps a directory descriptor on it
        before = {}
        for root in (home, storage):
            for top in (".cache", ".conda"):
                if (root / top).is_dir():
                    before |= {f"{top}/{k}": v for k, v in regular_files(root / top).items()}
        if op == "undo":
            done = run_setup(home, storage)
            assert done.returncode == 0, done.stderr
        return home, storage, before

    def drop(self, name: str) -> None:
        shutil.rmtree(self.tmp_path / name, ignore_errors=True)
        shutil.rmtree(self.storage_base / name, ignore_errors=True)


@pytest.fixture(params=["same-fs", pytest.param("cross-fs", marks=needs_root)])
def world(request, tmp_path: Path):
    if request.param == "same-fs":
        yield World(tmp_path, tmp_path / "storage", cross=False)
        return
    with tmpfs(tmp_path / "fs2", "256m") as fs2:
        yield World(tmp_path, fs2, cross=True)


def _writer(home: Path, storage: Path, log: Path, pause: float = 0.01) -> Writer:
    # by path through ~/.cache (wherever it points), by path straight into storage (a job
    # that knows $global_storage), and through a descriptor on a directory inside the cache
    dirs = [home / ".cache", storage / ".cache"]
    return Writer(dirs, [home / ".cache" / "fdw"], log, pause=pause)


def _expected(before: dict[str, bytes], writer: Writer) -> dict[str, bytes]:
    return before | {f".cache/{rel}": content for rel, content in writer.written().items()}


def _never_linked(home: Path) -> set[str]:
    """The redirected directories an interrupted setup had not yet replaced by the link."""
    return {
        name
        for name in (".cache", ".conda")
        if (home / name).is_dir()
        and not (home / name).is_symlink()
        and not any(
            p.name.startswith(name + ".hpcenv-") and p.is_dir() and not p.is_symlink()
            for p in home.iterdir()
        )
    }


@pytest.mark.parametrize("op", ["setup", "undo"])
def test_nothing_is_lost_whatever_step_fails_while_a_writer_writes(world, op):
    """For every step K: kill -9 after it, then run the same command and, from the same state
    made again, the opposite one; also an I/O error at step K, then one of the two in turn.
    (Across filesystems, where most steps are alike (one file copied or removed each), the
    follow-up alternates between the two and an error is injected at every third step.)"""
    home, storage, _ = world.make("ref", op)
    ticks: list[int] = []
    assert run_setup(home, storage, *args_of(op), count_ticks=ticks).returncode == 0
    reference = stable_snapshot(home, storage)
    world.drop("ref")
    total = ticks[0]
    assert total >= 15
    both = (op, OPPOSITE[op])
    if world.cross:
        cases = [(k, "kill", both[k % 2]) for k in range(1, total + 1)]
        cases += [(k, "error", both[k // 3 % 2]) for k in range(1, total + 1, 3)]
    else:
        cases = [(k, "kill", follow) for k in range(1, total + 1) for follow in both]
        cases += [(k, "error", both[k % 2]) for k in range(1, total + 1)]
    for k, fault, follow in cases:
        name = f"{fault}{k}-{follow}"
        home, storage, before = world.make(name, op)
        with _writer(home, storage, home.parent / "written") as writer:
            if fault == "kill":
                broken = run_setup(home, storage, *args_of(op), kill_after=k, tick_delay=0.0005)
                assert broken.returncode == -9, (k, broken.stderr)
            else:
                broken = run_setup(home, storage, *args_of(op), fail_after=k)
                lines = broken.stderr.strip().splitlines()
                assert broken.returncode == 1 and len(lines) == 1, (k, broken.stderr)
                assert "injected I/O error" in lines[0] and "hint:" in lines[0]
            time.sleep(0.012)  # the writer adds files to the interrupted state
            untouched = _never_linked(home) if op == "setup" else set()
            again = run_setup(home, storage, *args_of(follow))
            assert again.returncode == 0, (k, fault, follow, again.stderr)
        if follow == "setup":
            assert_nothing_lost(_expected(before, writer), storage, storage)
        else:
            assert_nothing_lost(_expected(before, writer), home, storage, also=storage)
        assert_finished(follow, home, storage, never_linked=untouched)
        if follow == op:
            got = stable_snapshot(home, storage)
            assert got == reference, f"differs from an uninterrupted run after {fault} at {k}"
        world.drop(name)


@pytest.mark.parametrize("op", ["setup", "undo"])
def test_without_renameat2_the_two_rename_swap_loses_nothing(tmp_path, op):
    """Where the filesystem cannot exchange two names atomically, ~/.cache is absent for a
    moment, and a program's `mkdir -p` may make it a directory again: that one is moved too."""
    world = World(tmp_path, tmp_path / "storage", cross=False)
    home, storage, _ = world.make("ref", op)
    ticks: list[int] = []
    assert (
        run_setup(home, storage, *args_of(op), count_ticks=ticks, no_renameat2=True).returncode == 0
    )
    world.drop("ref")
    for k in range(1, ticks[0] + 1):
        home, storage, before = world.make(f"k{k}", op)
        dirs = [home / ".cache", storage / ".cache"]
        log = home.parent / "written"
        with Writer(dirs, [home / ".cache" / "fdw"], log, pause=0.002, make_dirs=True) as writer:
            broken = run_setup(
                home, storage, *args_of(op), kill_after=k, tick_delay=0.0005, no_renameat2=True
            )
            assert broken.returncode == -9, (k, broken.stderr)
            again = run_setup(home, storage, *args_of(op), no_renameat2=True)
            assert again.returncode == 0, (k, again.stderr)
        final = storage if op == "setup" else home
        assert_nothing_lost(_expected(before, writer), final, storage)
        assert_finished(op, home, storage)
        world.drop(f"k{k}")


def test_a_cache_re_created_in_the_gap_of_a_two_rename_swap_is_moved_too(tmp_path):
    home, storage = tmp_path / "home", tmp_path / "storage"
    (home / ".cache" / "pip").mkdir(parents=True)
    (home / ".cache" / "pip" / "old").write_text("there before\n")
    storage.mkdir()
    before = {".cache/pip/old": b"there before\n"}
    actor = os.fork()
    if actor == 0:  # a program that runs `mkdir -p ~/.cache/pip` at the wrong moment
        code = 1
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                aside = home / ".cache.hpcenv-moving"
                if (
                    not os.path.lexists(home / ".cache")
                    and aside.is_dir()
                    and not aside.is_symlink()
                ):
                    (home / ".cache" / "pip").mkdir(parents=True)
                    (home / ".cache" / "pip" / "new").write_text("made in the gap\n")
                    code = 0
                    break
                time.sleep(0.001)
        finally:
            os._exit(code)
    done = run_setup(home, storage, tick_delay=0.2, no_renameat2=True, HPCENV_REDIRECT=".cache")
    _, status = os.waitpid(actor, 0)
    assert os.WEXITSTATUS(status) == 0, "the gap was not seen"
    assert done.returncode == 0, done.stderr
    before[".cache/pip/new"] = b"made in the gap\n"
    assert_nothing_lost(before, storage, storage)
    assert_finished("setup", home, storage, names=(".cache",))


@pytest.mark.parametrize("op", ["setup", "undo"])
def test_files_written_during_every_phase_of_a_large_move_are_kept(world, op):
    home, storage, before = world.make("big", op)
    src = home / ".cache" if op == "setup" else storage / ".cache"
    for d in range(6):
        (src / "many" / f"d{d}").mkdir(parents=True)
        for i in range(100):
            (src / "many" / f"d{d}" / f"f{i}").write_bytes(b"%d %d\n" % (d, i))
    before |= {f".cache/{k}": v for k, v in regular_files(src).items()}
    with _writer(home, storage, home.parent / "written", pause=0.002) as writer:
        done = run_setup(home, storage, *args_of(op))
        assert done.returncode == 0, done.stderr
    final = storage if op == "setup" else home
    assert_nothing_lost(_expected(before, writer), final, storage)
    assert_finished(op, home, storage)
    assert len(writer.written()) > 20  # it did write while the move ran


def test_two_setups_with_two_storage_roots_on_one_home_are_serialized(tmp_path):
    home, first, second = tmp_path / "home", tmp_path / "a", tmp_path / "b"
    for d in (home, first, second):
        d.mkdir()
    for i in range(300):
        (home / ".cache" / "bulk").mkdir(parents=True, exist_ok=True)
        (home / ".cache" / "bulk" / f"f{i}").write_text(f"{i}\n")
    (home / ".conda").mkdir()
    before = {f".cache/{k}": v for k, v in regular_files(home / ".cache").items()}
    # the first is held at work (with the home's lock); the second waits for that lock
    runs = [Paused(["setup", "--yes"], cli_env(home, first), tmp_path)]
    runs.append(Started(["setup", "--yes"], cli_env(home, second)))
    runs[1].stderr_until("waiting for another hpcenv")
    runs[0].resume()
    results = [(r.returncode, r.stderr) for r in (run.finish() for run in runs)]
    assert [code for code, _ in results] == [0, 2], results
    winner, loser = first, second
    refusal = next(err for code, err in results if code == 2)
    assert "waiting for another hpcenv" in refusal  # the home's lock, whatever the root
    assert "is a symlink to" in refusal.strip().splitlines()[-1]
    assert_finished("setup", home, winner)
    assert_nothing_lost(before, winner, winner)
    assert not (loser / ".cache").exists() and not (loser / ".conda").exists()


def test_undo_finishes_an_interrupted_setup_the_other_way(tmp_path):
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    make_caches(home, storage)
    before = {f".cache/{k}": v for k, v in regular_files(home / ".cache").items()}
    assert run_setup(home, storage, kill_after=6).returncode == -9
    undone = run_setup(home, storage, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert "reversed" in undone.stderr
    assert_finished("undo", home, storage)
    assert_nothing_lost(before, home, storage)
    assert run_setup(home, storage).returncode == 0
    assert_finished("setup", home, storage)


def test_a_file_kept_open_elsewhere_is_never_removed_across_filesystems(tmp_path):
    need("root", IS_ROOT, "mounting a tmpfs needs root")
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".conda").mkdir()
    log = home / ".cache" / "daemon.log"
    log.write_text("started\n")
    with tmpfs(tmp_path / "fs2", "16m") as storage:
        holder = open(log, "a")  # noqa: SIM115 - a program that keeps its log open
        try:
            stuck = run_setup(home, storage, busy_wait=0.3)
            assert stuck.returncode == 1, stuck.stderr
            assert "still open in other programs" in stuck.stderr and "daemon.log" in stuck.stderr
            holder.write("written after setup started\n")
        finally:
            holder.close()
        done = run_setup(home, storage)
        assert done.returncode == 0, done.stderr
        kept = regular_files(storage / ".hpcenv" / "conflicts").values()
        latest = b"started\nwritten after setup started\n"
        assert (storage / ".cache" / "daemon.log").read_bytes() == latest or latest in kept
        assert_finished("setup", home, storage)
