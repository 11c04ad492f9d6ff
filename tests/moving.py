"""Helpers for testing `hpcenv setup` while the world moves: a forked CLI run with fault
injection, a concurrent writer process, and the "nothing is lost" check.

A forked run executes the real CLI (`hpcenv.cli.main`) in a child of the test process, with
its own environment and the journal's kill hook, in a few milliseconds instead of the
interpreter start-up of a subprocess, so a test can kill a run after every single step.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import rich.console  # noqa: F401 - what a run imports lazily, imported once here
import rich.table  # noqa: F401

from hpcenv import journal
from hpcenv.setup import drain, renames
from tests.fs import cli_env, snapshot

try:
    renames.exchange("/nonexistent/a", "/nonexistent/b")  # looks renameat2 up once
except OSError:
    pass


@dataclass(frozen=True)
class Ran:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str


def run_setup(
    home: Path,
    storage: Path,
    *args: str,
    kill_after: int = 0,
    fail_after: int = 0,
    tick_delay: float = 0.0,
    count_ticks: list[int] | None = None,
    busy_wait: float | None = None,
    no_renameat2: bool = False,
    **env: str,
) -> Ran:
    """`hpcenv setup --yes ARGS` in a forked child. `kill_after=K`: SIGKILL after step K (the
    journal's hook); `fail_after=K`: an I/O error (EIO) raised at step K instead, as a failing
    disk would; `count_ticks`: receives the number of steps taken; `no_renameat2`: as on a
    system without renameat2 (no atomic exchange: the swap takes two renames)."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    ticks = tempfile.NamedTemporaryFile(delete=False)
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
            os.environ.clear()
            os.environ.update(cli_env(home, storage, **env))
            journal._ticks = 0
            journal._hooks = journal.Hooks(
                ticks_file=ticks.name if count_ticks is not None else None,
                delay=tick_delay,
                kill_after=kill_after,
            )
            if busy_wait is not None:
                drain.BUSY_WAIT = busy_wait
            if no_renameat2:
                renames._renameat2 = False
            if fail_after:
                _inject_failure(fail_after)
            from hpcenv.cli import main

            try:
                main(["setup", "--yes", *args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - a traceback is a test failure: code 99
            import traceback

            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001 - exiting anyway
                    pass
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    out.seek(0)
    err.seek(0)
    if count_ticks is not None:
        text = Path(ticks.name).read_text()
        count_ticks.append(int(text) if text else 0)
    os.unlink(ticks.name)
    return Ran(rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def _inject_failure(step: int) -> None:
    real = journal.tick

    def failing_tick() -> None:
        real()
        if journal._ticks == step:
            raise OSError(errno.EIO, "injected I/O error", f"step {step}")

    import hpcenv.setup

    setup_modules = [m for n, m in sys.modules.items() if n.startswith("hpcenv.setup.")]
    assert hpcenv.setup.execute and setup_modules  # every step of setup goes through tick
    for module in (journal, *setup_modules):
        if hasattr(module, "tick"):
            module.tick = failing_tick


# --------------------------------------------------------------------------- the writer


class Writer:
    """A process that keeps writing new files while setup works: by path into each of
    `dirs` (into their `w/` subdirectory; through ~/.cache that is wherever the link points
    at that moment), and through directory descriptors opened at the start on each of
    `fd_dirs` (as a program whose working directory is there would). Each file is logged
    only once written and closed; `written()` maps its path relative to the redirected
    directory to its content."""

    def __init__(
        self,
        dirs: list[Path],
        fd_dirs: list[Path],
        log: Path,
        pause: float = 0.01,
        make_dirs: bool = False,
    ):
        self.dirs, self.fd_dirs, self.log, self.pause = dirs, fd_dirs, log, pause
        self.make_dirs = make_dirs  # `mkdir -p` as programs do: may re-create ~/.cache itself
        self.pid = 0

    def __enter__(self) -> Writer:
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(ready_r)
            try:
                self._loop(ready_w)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)  # its directory descriptors are open
        os.close(ready_r)
        return self

    def _loop(self, ready: int) -> None:
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in self.fd_dirs]
        log = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(ready, b"1")
        n = 0
        while not stop:
            n += 1
            for i, d in enumerate(self.dirs):
                rel = f"w/p{i}-{n}"
                content = f"{rel} {n} {os.getpid()} by path\n".encode()
                if not self._write(str(d / rel), None, content):
                    try:
                        if self.make_dirs and i == 0:
                            os.makedirs(d / "w", exist_ok=True)
                        else:
                            os.mkdir(d / "w")  # never creates `d` itself
                    except OSError:
                        continue
                    if not self._write(str(d / rel), None, content):
                        continue
                os.write(log, f"{rel}\t{content.hex()}\n".encode())
            for i, fd in enumerate(fds):
                rel = f"{self.fd_dirs[i].name}/d{i}-{n}"
                content = f"{rel} {n} through a directory descriptor\n".encode()
                if self._write(os.path.basename(rel), fd, content):
                    os.write(log, f"{rel}\t{content.hex()}\n".encode())
            time.sleep(self.pause)

    @staticmethod
    def _write(path: str, dir_fd: int | None, content: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
        except OSError:
            return False
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
        return True

    def __exit__(self, *exc: object) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
            self.pid = 0

    def written(self) -> dict[str, bytes]:
        out = {}
        for line in self.log.read_text().splitlines():
            rel, hexed = line.split("\t")
            out[rel] = bytes.fromhex(hexed)
        return out


# --------------------------------------------------------------------------- checks


def regular_files(root: Path) -> dict[str, bytes]:
    """Every regular file under `root`: relative path -> content."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
    return out


def assert_nothing_lost(
    expected: dict[str, bytes], final: Path, storage: Path, also: Path | None = None
) -> None:
    """Each expected file (path relative to `final`, content) is at its place in `final` (or
    in `also`) or, by content, anywhere under the conflicts directory."""
    kept = {
        hashlib.sha256(v).digest()
        for v in regular_files(storage / ".hpcenv" / "conflicts").values()
    }
    lost = []
    for rel, content in expected.items():
        places = [final / rel] + ([also / rel] if also else [])
        here = [_content(p) for p in places]
        if content not in here and hashlib.sha256(content).digest() not in kept:
            lost.append(rel)
    assert not lost, f"{len(lost)} of {len(expected)} files lost, e.g. {sorted(lost)[:5]}"


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def assert_finished(
    op: str, home: Path, storage: Path, names=(".cache", ".conda"), never_linked=()
) -> None:
    """No half-moved directory, no staging, no unfinished journal; the links as `op` leaves
    them (after `--undo`, storage keeps only the directories that were `never_linked`)."""
    for name in names:
        if op == "setup":
            assert os.readlink(home / name) == str(storage / name), name
        else:
            assert (home / name).is_dir() and not (home / name).is_symlink(), name
            assert name in never_linked or not os.path.lexists(storage / name), name
    leftovers = [p.name for p in home.iterdir() if ".hpcenv-" in p.name]
    assert not leftovers, leftovers
    assert not list((storage / ".hpcenv" / "journal").glob("*.jsonl"))
    staging = storage / ".hpcenv" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert not (storage / ".hpcenv" / "tmp").exists()
    assert not (home / ".hpcenv" / "tmp").exists()


_WRITTEN = re.compile(rb"/(w|fdw)(/|$)|\.hpcenv-removing")


def stable_snapshot(home: Path, storage: Path) -> dict:
    """`snapshot` of a home and a storage root without what the writer wrote, and with their
    parents' paths (in symlink targets) made neutral, so that two runs compare."""
    bases = [
        (os.fsencode(home.parent), b"HOME-BASE"),
        (os.fsencode(storage.parent), b"STORAGE-BASE"),
    ]
    out = {}
    for k, v in snapshot(home, storage).items():
        if _WRITTEN.search(k):
            continue
        values = []
        for x in v:
            if isinstance(x, bytes):
                for path, marker in bases:
                    x = x.replace(path, marker)
            values.append(x)
        out[k] = tuple(values)
    return out
