"""The disk-usage walker against a plain os.walk reference, `du`, and hostile trees."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcenv import treescan
from hpcenv.treescan import TreeUsage, scan, scan_many
from tests.conftest import IS_ROOT, need, run_as_user

# ---------------------------------------------------------------- the reference


def _entries(root: Path) -> list[tuple[bytes, os.stat_result]]:
    """Every entry of the tree, root included, lstat'ed; symlinks (to dirs too) not walked."""
    broot = os.fsencode(root)
    out = [(broot, os.lstat(broot))]
    if stat.S_ISDIR(out[0][1].st_mode):
        for dirpath, dirnames, filenames in os.walk(broot):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                out.append((path, os.lstat(path)))
    return out


def reference(roots: list[Path]) -> dict[Path, TreeUsage]:
    """What scan_many must return, computed the obvious way."""
    trees = {root: _entries(root) if os.path.lexists(root) else None for root in roots}
    real = {root: os.path.realpath(root) for root in roots}

    def nested(a: Path, b: Path) -> bool:
        x, y = real[a], real[b]
        return x == y or x.startswith(y + "/") or y.startswith(x + "/")

    holders: dict[tuple[int, int], set[Path]] = {}
    seen_anywhere: Counter = Counter()  # links seen in all the trees (nested ones twice)
    for root, entries in trees.items():
        for _path, s in entries or []:
            if not stat.S_ISDIR(s.st_mode):
                holders.setdefault((s.st_dev, s.st_ino), set()).add(root)
                seen_anywhere[(s.st_dev, s.st_ino)] += 1
    out = {}
    for root, entries in trees.items():
        if entries is None:
            out[root] = TreeUsage(path=str(root), exists=False)
            continue
        inodes = {(s.st_dev, s.st_ino): s for _p, s in entries}
        links = Counter((s.st_dev, s.st_ino) for _p, s in entries if not stat.S_ISDIR(s.st_mode))
        files = {k: s for k, s in inodes.items() if not stat.S_ISDIR(s.st_mode)}
        unique = {k for k, s in files.items() if links[k] >= s.st_nlink}
        shared = {
            k
            for k in files
            if k not in unique and any(not nested(root, other) for other in holders[k])
        }
        out[root] = TreeUsage(
            path=str(root),
            exists=True,
            apparent_bytes=sum(s.st_size for s in files.values()),
            unique_bytes=sum(files[k].st_size for k in unique),
            shared_bytes=sum(files[k].st_size for k in shared),
            disk_bytes=sum(s.st_blocks * 512 for s in inodes.values()),
            files=sum(links.values()),
            dirs=sum(1 for _p, s in entries if stat.S_ISDIR(s.st_mode)),
            inodes=len(inodes),
            linked_outside=sum(
                1 for k, s in files.items() if k not in unique and s.st_nlink > seen_anywhere[k]
            ),
            last_used=max((s.st_mtime for s in files.values()), default=None),
            errors=0,
        )
    return out


# ---------------------------------------------------------------- a hand-made tree


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """env/ with files, hardlinks (inside, and to a file outside), symlinks (to a file, to a
    directory outside with a big file in it, dangling), empty dirs, non-UTF-8 names."""
    env, outside = tmp_path / "env", tmp_path / "outside"
    for d in (env / "lib" / "deep" / "er", env / "empty" / "nested-empty", outside / "bigdir"):
        d.mkdir(parents=True)
    (env / "lib" / "a.py").write_bytes(b"a" * 1000)
    os.link(env / "lib" / "a.py", env / "lib" / "deep" / "a-link.py")  # inside only
    (outside / "cache.bin").write_bytes(b"c" * 5000)
    os.link(outside / "cache.bin", env / "lib" / "cache-link.bin")  # a link outside
    (outside / "bigdir" / "huge").write_bytes(b"h" * 100_000)
    (env / "lib" / "deep" / "er" / "z.txt").write_bytes(b"z" * 7)
    (env / "to-file").symlink_to(env / "lib" / "a.py")
    (env / "to-outside-dir").symlink_to(outside / "bigdir")
    (env / "dangling").symlink_to(tmp_path / "nowhere")
    raw = os.fsencode(env) + b"/caf\xe9-\xff"  # Latin-1 bytes: not UTF-8
    os.mkdir(raw)
    with open(raw + b"/\xfe.bin", "wb") as out:
        out.write(b"x" * 300)
    return {"env": env, "outside": outside, "root": tmp_path}


def test_hand_made_tree_matches_the_reference(tree) -> None:
    env = tree["env"]
    got = scan(env, threads=1)
    assert got == reference([env])[env]
    # the numbers a reader would work out by hand
    links = len(str(env / "lib" / "a.py")) + len(str(tree["outside"] / "bigdir"))
    links += len(str(tree["root"] / "nowhere"))
    assert got.apparent_bytes == 1000 + 5000 + 7 + 300 + links  # a.py once; no 'huge'
    assert got.unique_bytes == got.apparent_bytes - 5000  # cache.bin has a link outside
    assert got.files == 8  # a.py, a-link.py, cache-link.bin, z.txt, 3 symlinks, \xfe.bin
    assert got.dirs == 7  # env, lib, deep, er, empty, nested-empty, caf\xe9-\xff
    assert got.inodes == got.dirs + got.files - 1  # a.py and a-link.py are one inode
    assert got.errors == 0 and got.shared_bytes == 0 and got.exists


def test_disk_bytes_and_inodes_agree_with_du(tree) -> None:
    du = shutil.which("du")
    gnu = du is not None and b"GNU" in subprocess.run([du, "--version"], capture_output=True).stdout
    need("GNU du", gnu, "the reference for disk bytes and inodes")
    env = tree["env"]
    got = scan(env)
    du_bytes = subprocess.run([du, "-s", "-B1", env], capture_output=True, check=True).stdout
    du_inodes = subprocess.run([du, "-s", "--inodes", env], capture_output=True, check=True)
    assert got.disk_bytes == int(du_bytes.split()[0])
    assert got.inodes == int(du_inodes.stdout.split()[0])


def test_last_used_is_the_newest_file_mtime_not_a_directory_or_atime(tree) -> None:
    env = tree["env"]
    for i, (path, s) in enumerate(_entries(env)):
        if not stat.S_ISDIR(s.st_mode):  # files and symlinks (to dirs too)
            os.utime(path, (2e9, 1e9 + i), follow_symlinks=False)
    os.utime(env / "lib" / "deep" / "er" / "z.txt", (2e9, 1.5e9))
    os.utime(env / "empty", (2e9, 1.9e9))  # a directory: not 'content'
    assert scan(env).last_used == 1.5e9


def add_many(env: Path, count: int = 30) -> None:
    """Enough directories for work to be handed between threads or processes."""
    for i in range(count):
        sub = env / "many" / f"d{i}" / "x"
        sub.mkdir(parents=True)
        (sub / "f").write_bytes(b"f" * i)
        os.link(sub / "f", env / "many" / f"d{i}" / "f-link")
        os.link(sub / "f", env / "lib" / f"f-link-{i}")  # links across two subtrees


@pytest.mark.parametrize(
    "how",
    [{"threads": 1}, {"threads": 2}, {"threads": 8}, {"processes": 2}, {"processes": 5}, {}],
)
def test_threads_and_processes_give_identical_results(tree, how) -> None:
    env = tree["env"]
    add_many(env)
    assert scan(env, **how) == reference([env])[env]


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """The pids of the children os.fork() makes during the test."""
    pids: list[int] = []
    real_fork = os.fork

    def fork():
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids


def test_a_big_fast_walk_is_finished_by_forked_processes(tree, monkeypatch, forks) -> None:
    env = tree["env"]
    add_many(env)
    # every filesystem counts as fast: a probe of 5 entries timed on a loaded machine could
    # exceed 5 x 20 us and take the slow-filesystem (threads) path instead
    monkeypatch.setattr(treescan.walk, "SLOW_ENTRY_S", 1.0)
    monkeypatch.setattr(treescan.walk, "PROBE_ENTRIES", 5)
    monkeypatch.setattr(treescan.walk, "FORK_AFTER_ENTRIES", 10)
    monkeypatch.setattr(treescan.walk, "_auto_processes", lambda: 3)
    assert scan(env) == reference([env])[env]
    assert len(forks) == 2  # this process walks a third share itself
    assert_reaped(forks)


def test_a_failing_child_process_has_its_share_walked_by_the_parent(
    tree, monkeypatch, forks
) -> None:
    env = tree["env"]
    add_many(env)
    parent = os.getpid()
    real_listdir = os.listdir

    def listdir(fd):
        if os.getpid() != parent:
            raise RuntimeError("child dies")
        return real_listdir(fd)

    monkeypatch.setattr(os, "listdir", listdir)
    assert scan(env, processes=3) == reference([env])[env]
    assert len(forks) == 2
    assert_reaped(forks)


def test_when_the_system_cannot_fork_the_walk_finishes_here(tree, monkeypatch) -> None:
    env = tree["env"]
    add_many(env)

    def fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", fork)
    assert scan(env, processes=4) == reference([env])[env]


def assert_reaped(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ChildProcessError):  # already waited for: no zombie left
            os.waitpid(pid, os.WNOHANG)


def test_helpers_join_a_walk_already_under_way_on_a_slow_filesystem(tree, monkeypatch) -> None:
    env = tree["env"]
    for i in range(50):
        (env / "wide" / f"d{i}").mkdir(parents=True)
        (env / "wide" / f"d{i}" / "f").write_bytes(b"w" * i)
    monkeypatch.setattr(treescan.walk, "SLOW_ENTRY_S", 0.0)  # every filesystem counts as slow
    monkeypatch.setattr(treescan.walk, "PROBE_ENTRIES", 5)
    started = threading.active_count()
    assert scan(env) == reference([env])[env]
    assert threading.active_count() == started  # every helper was joined


def test_missing_path_has_exists_false_and_zeros(tmp_path: Path) -> None:
    assert scan(tmp_path / "nope") == TreeUsage(path=str(tmp_path / "nope"), exists=False)
    dangling_parent = tmp_path / "file" / "below"
    (tmp_path / "file").write_text("x")
    assert scan(dangling_parent).exists is False


def test_a_symlink_root_is_measured_as_the_link_not_its_target(tree) -> None:
    link = tree["root"] / "link-to-env"
    link.symlink_to(tree["env"])
    got = scan(link)
    assert (got.files, got.dirs, got.apparent_bytes) == (1, 0, len(str(tree["env"])))
    assert got == reference([link])[link]


def test_a_file_root_is_measured_as_that_file(tree) -> None:
    path = tree["outside"] / "cache.bin"
    got = scan(path)
    assert (got.files, got.dirs, got.apparent_bytes, got.unique_bytes) == (1, 0, 5000, 0)


# ---------------------------------------------------------------- several trees


def test_scan_many_splits_unique_shared_and_outside_bytes(tmp_path: Path) -> None:
    cache, env1, env2, elsewhere = (tmp_path / n for n in ("pkgs", "env1", "env2", "elsewhere"))
    for d in (cache, env1, env2, elsewhere):
        d.mkdir()
    (cache / "numpy.so").write_bytes(b"n" * 4000)
    os.link(cache / "numpy.so", env1 / "numpy.so")
    os.link(cache / "numpy.so", env2 / "numpy.so")
    (cache / "only-cache").write_bytes(b"o" * 100)
    (env1 / "mine").write_bytes(b"m" * 10)
    os.link(env1 / "mine", env1 / "mine-again")
    (env2 / "ext").write_bytes(b"e" * 70)
    os.link(env2 / "ext", elsewhere / "ext")  # linked from outside every scanned tree
    got = scan_many([cache, env1, env2])
    assert got == reference([cache, env1, env2])
    assert (got[cache].unique_bytes, got[cache].shared_bytes) == (100, 4000)
    assert (got[env1].unique_bytes, got[env1].shared_bytes) == (10, 4000)
    assert (got[env2].unique_bytes, got[env2].shared_bytes, got[env2].apparent_bytes) == (
        0,
        4000,
        4070,
    )
    # scanned alone, the same env has nothing 'shared', and still nothing unique to free
    alone = scan(env2)
    assert (alone.unique_bytes, alone.shared_bytes) == (0, 0)


def test_scan_many_never_calls_a_tree_shared_with_one_nested_in_it(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    env = storage / "envs" / "x"
    env.mkdir(parents=True)
    (env / "f").write_bytes(b"f" * 50)
    os.link(env / "f", storage / "f-link")
    got = scan_many([storage, env, storage])  # a repeated path is scanned once
    assert list(got) == [storage, env]
    assert got == reference([storage, env])
    assert (got[storage].unique_bytes, got[storage].shared_bytes) == (50, 0)
    assert (got[env].unique_bytes, got[env].shared_bytes) == (0, 0)


# ---------------------------------------------------------------- errors, never raised


@pytest.fixture
def world_tree() -> Iterator[Path]:
    """A tree under a 0755 temp dir, so another user can reach it."""
    top = Path(tempfile.mkdtemp(prefix="hpcenv-scan-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        for dirpath, _dirs, _files in os.walk(top):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(top)


def test_an_unreadable_directory_is_counted_as_an_error_not_raised(world_tree: Path) -> None:
    (world_tree / "ok").mkdir()
    (world_tree / "ok" / "f").write_bytes(b"1234")
    (world_tree / "secret" / "inner").mkdir(parents=True)
    (world_tree / "secret" / "inner" / "f").write_bytes(b"x" * 99)
    for p in (world_tree, world_tree / "ok"):
        p.chmod(0o755)
    (world_tree / "ok" / "f").chmod(0o644)
    (world_tree / "secret").chmod(0o700)
    if IS_ROOT:  # root reads everything: walk as a real unprivileged user instead
        got = run_as_user("nobody", scan, world_tree, threads=1)
    else:
        got = scan(world_tree, threads=1)
    assert got.errors == 1
    assert (got.files, got.apparent_bytes) == (1, 4)
    assert got.dirs == 3  # root, ok, secret (listed; its content unreadable)


def _swap_during_walk(monkeypatch, victim: Path, replacement) -> None:
    """Right after the walker lstat()s `victim` (a directory), put `replacement` in its place:
    the race a malicious user would try."""
    real_lstat = os.lstat
    done = []

    def lstat(path, *, dir_fd=None):
        result = real_lstat(path, dir_fd=dir_fd)
        if not done and os.fsdecode(path) == victim.name and dir_fd is not None:
            done.append(True)
            os.rename(victim, victim.with_name("moved-away"))
            replacement(victim)
        return result

    monkeypatch.setattr(os, "lstat", lstat)


def test_a_directory_swapped_for_a_symlink_mid_walk_is_not_followed(tree, monkeypatch) -> None:
    env = tree["env"]
    (env / "victim").mkdir()
    _swap_during_walk(monkeypatch, env / "victim", lambda p: p.symlink_to(tree["outside"]))
    got = scan(env, threads=1)
    monkeypatch.undo()
    assert got.errors == 1
    assert got.apparent_bytes < 100_000  # outside/bigdir/huge was never counted


def test_a_directory_swapped_for_another_directory_mid_walk_is_skipped(tree, monkeypatch) -> None:
    env = tree["env"]
    (env / "victim").mkdir()
    other = tree["outside"] / "bigdir"
    _swap_during_walk(monkeypatch, env / "victim", lambda p: os.rename(other, p))
    got = scan(env, threads=1)
    monkeypatch.undo()
    assert got.errors == 1
    assert got.apparent_bytes < 100_000


def test_an_unexpected_failure_in_a_helper_thread_reaches_the_caller(tree, monkeypatch) -> None:
    env = tree["env"]
    for i in range(20):
        (env / "w" / f"d{i}" / "x").mkdir(parents=True)
    real_listdir = os.listdir

    def listdir(fd):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("boom in a helper")
        time.sleep(0.005)  # a slow caller's thread: helpers are surely waiting for work
        return real_listdir(fd)

    monkeypatch.setattr(os, "listdir", listdir)
    outcome: list = []

    def call() -> None:
        try:
            scan(env, threads=4)
            outcome.append("returned")
        except RuntimeError as exc:
            outcome.append(str(exc))

    runner = threading.Thread(target=call, daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "scan() hung after a helper failed"
    assert outcome == ["boom in a helper"]


@pytest.mark.root("bind mounts need root")
def test_a_bind_mount_loop_is_walked_once(tree) -> None:
    env = tree["env"]
    loop = env / "lib" / "loop"
    loop.mkdir()
    before = scan(env)
    bound = subprocess.run(["mount", "--bind", env, loop], capture_output=True)
    need("mount --bind", bound.returncode == 0, bound.stderr.decode().strip())
    try:
        got = scan(env)
    finally:
        subprocess.run(["umount", "-l", loop], check=False)
    # the mount point shows the root again: recognised, not walked, not counted twice
    assert (got.files, got.apparent_bytes) == (before.files, before.apparent_bytes)
    assert got.dirs == before.dirs - 1 and got.errors == 0


# ---------------------------------------------------------------- property: random trees

_NAMES = st.sampled_from(["a", "b", "sp ace", "caf\u00e9", os.fsdecode(b"\xff\xfe"), "x.py"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("dir"), st.integers(0, 50), _NAMES),
        st.tuples(st.just("file"), st.integers(0, 50), _NAMES, st.integers(0, 9000)),
        st.tuples(st.just("link"), st.integers(0, 50), _NAMES, st.integers(0, 50)),
        st.tuples(st.just("symlink"), st.integers(0, 50), _NAMES, st.integers(0, 50)),
    ),
    max_size=40,
)


def build(top: Path, ops: list) -> list[Path]:
    """Three sibling trees t0, t1, t2 grown by `ops`; hardlinks and symlinks may cross them."""
    dirs = [top / f"t{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    files: list[Path] = []
    for n, op in enumerate(ops):
        kind, where, name = op[0], dirs[op[1] % len(dirs)], f"{op[2]}-{n}"
        if kind == "dir":
            (where / name).mkdir()
            dirs.append(where / name)
        elif kind == "file":
            (where / name).write_bytes(b"." * op[3])
            files.append(where / name)
        elif kind == "link" and files:
            os.link(files[op[3] % len(files)], where / name)
        elif kind == "symlink":
            targets = dirs + files
            (where / name).symlink_to(targets[op[3] % len(targets)])
    return dirs[:3]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=_OPS,
    how=st.sampled_from([{"threads": 1}, {"threads": 3}, {"processes": 2}, {}]),
    pick=st.sampled_from([(0,), (0, 1, 2)]),
)
def test_random_trees_match_the_reference(ops, how, pick) -> None:
    with tempfile.TemporaryDirectory() as top:
        trees = build(Path(top), ops)
        chosen = [trees[i] for i in pick]
        assert scan_many(chosen, **how) == reference(chosen)
        for tree in chosen:
            assert scan(tree, **how) == reference([tree])[tree]
