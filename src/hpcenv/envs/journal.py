"""Crash-safe create, replace and delete of an environment prefix, and their recovery.

Each operation holds the storage lock, is journaled in `STATE/journal/env-KEY.jsonl` (KEY from
the prefix) and is ordered so that a kill at any instant leaves the old env or the new one
under the name, never neither:

    create    build in .NAME.hpcenv-tmp-PID · "built" (its inode) · rename into place ·
              register · done
    replace   build · "built" (both inodes) · exchange the two in one step (renameat2
              RENAME_EXCHANGE; where the filesystem cannot, rename the old to
              .NAME.hpcenv-tmp-old-PID, then the new in) · register · delete the old · done
    delete    journal the inode · rename to .NAME.hpcenv-tmp-rm-PID · unregister · delete ·
              done (a symlinked name: its target is renamed, then the link removed)

`recover` (under the lock; every command that changes envs, and `list`, call it first) reads
an unfinished journal and looks at the inodes on disk, so it knows what each leftover is:

    create    built and complete -> moved into place and registered; else deleted
    replace   the new env in place -> the old copy deleted, registered; the old in place ->
              the new build deleted; nothing in place -> the old copy restored
    delete    renamed -> unregistered and deleted (the user confirmed); else nothing done

Leftovers without a journal (from an older hpcenv) are judged by their names: a build or a
trash of a dead process is deleted; an old copy is restored when the name is free.
Test hook: `_HPCENV_TEST_NO_EXCHANGE=1` takes the two-rename path of `replace`.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpcenv.condarc import envs_dirs
from hpcenv.errors import RefusedError
from hpcenv.fsops import remove_tree
from hpcenv.journal import Journal, pid_alive, tick
from hpcenv.lock import StorageLock
from hpcenv.registry import TMP_MARK, discover, set_registered
from hpcenv.settings import Settings
from hpcenv.storage import Layout, ensure_state_dir
from hpcenv.strenum import StrEnum


class RecoveryAction(StrEnum):
    """What recovery did with one leftover."""

    FINISHED_CREATE = "finished-create"
    FINISHED_REPLACE = "finished-replace"
    FINISHED_DELETE = "finished-delete"
    RESTORED = "restored"
    REMOVED = "removed"
    FAILED = "failed"


@dataclass(frozen=True)
class Recovered:
    """What recovery did with one leftover: finished, restored, removed or failed."""

    action: RecoveryAction
    prefix: str
    path: str
    detail: str = ""


def journal_key(prefix: Path) -> str:
    return "env-" + hashlib.sha256(os.fsencode(str(prefix))).hexdigest()[:16]


def tmp_path(prefix: Path, kind: str = "") -> Path:
    """.NAME.hpcenv-tmp-PID (a build), -old-PID (the old copy), -rm-PID (being deleted)."""
    return prefix.with_name(f".{prefix.name}{TMP_MARK}{kind + '-' if kind else ''}{os.getpid()}")


def _ino(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


# --------------------------------------------------------------------------- the operations


class EnvTransaction:
    """One journaled create/replace (`begin_build` ... `commit`) or delete (`delete`)."""

    def __init__(self, layout: Layout, prefix: Path, name: str | None, action: str, **extra):
        self.layout = layout
        self.prefix = prefix
        self.name = name
        self.tmp = tmp_path(prefix)
        self.aside = tmp_path(prefix, "old" if action == "replace" else "rm")
        header = {
            "action": action,
            "prefix": str(prefix),
            "name": name,
            "tmp": str(self.tmp),
            "aside": str(self.aside),
            "pid": os.getpid(),
            **extra,
        }
        self.journal = Journal.open(layout.journal_dir, journal_key(prefix), header)
        if self.journal.resumed:
            raise RefusedError(
                f"another hpcenv (pid {self.journal.header.get('pid')}) has an unfinished "
                f"operation on {prefix}",
                hint="wait for it to finish, or re-run once it is gone",
            )

    def built(self) -> None:
        """The build in `tmp` is complete."""
        self.journal.record(step="built", new_ino=_ino(self.tmp), old_ino=_ino(self.prefix))

    def commit(self) -> None:
        """Put the build under the name (replacing an old env), register, finish."""
        if self.journal.header["action"] == "replace":
            if _exchange(self.tmp, self.prefix):
                old = self.tmp
            else:
                os.rename(self.prefix, self.aside)
                tick()
                os.rename(self.tmp, self.prefix)
                old = self.aside
            tick()
            set_registered(self.layout, self.name, self.prefix, True)
            tick()
            remove_tree(old)
        else:
            os.rename(self.tmp, self.prefix)
            tick()
            set_registered(self.layout, self.name, self.prefix, True)
        tick()
        self.journal.finish()

    def abandon(self) -> None:
        """The build failed: delete it; the name keeps what it had."""
        remove_tree(self.tmp)
        self.journal.finish("rolled-back")


def begin_build(
    layout: Layout, prefix: Path, name: str | None, *, replace: bool, specs=()
) -> EnvTransaction:
    return EnvTransaction(
        layout, prefix, name, "replace" if replace else "create", specs=list(specs)
    )


def delete(layout: Layout, prefix: Path, name: str | None) -> str | None:
    """Delete the env at `prefix` (a symlinked name: its target and the link), journaled;
    return why something could not be removed, or None."""
    target = Path(os.path.realpath(prefix)) if os.path.islink(prefix) else prefix
    tx = EnvTransaction(
        layout, prefix, name, "delete", target=str(target), ino=_ino(target), link=target != prefix
    )
    trash = tmp_path(target, "rm")
    tx.journal.record(step="renaming", trash=str(trash))
    os.rename(target, trash)
    tick()
    return _finish_delete(layout, tx.journal, prefix, target, trash, name)


def _finish_delete(
    layout, journal, prefix: Path, target: Path, trash: Path, name, recovering: bool = False
) -> str | None:
    if target != prefix and os.path.islink(prefix):
        os.unlink(prefix)
    also = (target,) if target != prefix else ()
    if recovering:
        _register(layout, name, prefix, False, also)
    else:
        set_registered(layout, name, prefix, False, also=also)
    tick()
    problem = remove_tree(trash)
    tick()
    journal.finish("done" if problem is None else f"left {trash}: {problem}")
    return None if problem is None else f"could not delete {trash}: {problem}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the kernel,
    libc or filesystem cannot (the caller then renames twice)."""
    if os.environ.get("_HPCENV_TEST_NO_EXCHANGE"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


# --------------------------------------------------------------------------- recovery


def pending(layout: Layout) -> list[Journal]:
    """Unfinished env journals of processes that are gone."""
    out = []
    for op in Journal.pending(layout.journal_dir):
        if not op.startswith("env-"):
            continue
        journal = Journal.open(layout.journal_dir, op, {})
        if not journal.resumed:  # torn: not even its header was written
            os.unlink(journal.path)
            continue
        pid = journal.header.get("pid")
        if isinstance(pid, int) and pid_alive(pid):
            continue
        out.append(journal)
    return out


def recover(layout: Layout) -> list[Recovered]:
    """Finish or roll back every interrupted env operation (the caller holds the lock)."""
    done = []
    for journal in pending(layout):
        done += _recover_one(layout, journal)
    done += _legacy_leftovers(layout)
    return done


def _recover_one(layout: Layout, journal: Journal) -> list[Recovered]:
    h = journal.header
    action = h.get("action")
    prefix, name = Path(h["prefix"]), h.get("name")
    if action == "delete":
        target = Path(h.get("target") or prefix)
        step = journal.last(step="renaming")
        trash = Path(step["trash"]) if step else None
        if trash is not None and (os.path.lexists(trash) or _ino(target) != h.get("ino")):
            problem = _finish_delete(layout, journal, prefix, target, trash, name, True)
            return [_result(RecoveryAction.FINISHED_DELETE, prefix, trash, problem)]
        journal.finish("nothing-done")
        return []
    tmp, aside = Path(h["tmp"]), Path(h["aside"])
    built = journal.last(step="built")
    new_ino = built.get("new_ino") if built else None
    old_ino = built.get("old_ino") if built else None
    now = _ino(prefix)
    out = []
    if built and new_ino is not None and now == new_ino:  # the new env is in place
        for path in (tmp, aside):
            if _ino(path) == old_ino and old_ino is not None:
                problem = remove_tree(path)
                out.append(
                    _result(RecoveryAction.REMOVED, prefix, path, problem, "the replaced env")
                )
        why = _register(layout, name, prefix, True)
        journal.finish("finished")
        finished = RecoveryAction(f"finished-{action}")
        return [_result(finished, prefix, prefix, None, why or ""), *out]
    if now is None and old_ino is not None and _ino(aside) == old_ino:  # between two renames
        os.rename(aside, prefix)
        out.append(
            _result(
                RecoveryAction.RESTORED, prefix, aside, None, "the env as it was before --force"
            )
        )
    elif now is None and built and new_ino is not None and _ino(tmp) == new_ino:
        os.rename(tmp, prefix)  # built and complete, and the name is free: finish it
        why = _register(layout, name, prefix, True)
        journal.finish("finished")
        return [_result(RecoveryAction.FINISHED_CREATE, prefix, prefix, None, why or "")]
    if os.path.lexists(tmp):
        problem = remove_tree(tmp)
        out.append(_result(RecoveryAction.REMOVED, prefix, tmp, problem, "an interrupted build"))
    journal.finish("rolled-back")
    return out


def _register(layout: Layout, name, prefix: Path, present: bool, also=()) -> str | None:
    """Registration during recovery: a broken environments.txt must not stop the command that
    happens to recover (it is reported, and `doctor` says how to fix the file)."""
    try:
        set_registered(layout, name, prefix, present, also=also)
    except RefusedError as exc:
        return exc.message
    return None


def _result(
    action: RecoveryAction, prefix: Path, path: Path, problem: str | None, detail: str = ""
) -> Recovered:
    if problem is not None:
        return Recovered(
            RecoveryAction.FAILED, str(prefix), str(path), f"could not remove: {problem}"
        )
    return Recovered(action, str(prefix), str(path), detail)


def _leftover_dirs(layout: Layout) -> list[Path]:
    dirs = list(envs_dirs(layout))
    try:
        for env in discover(layout).envs:
            dirs.append(env.prefix.parent)
    except OSError:
        pass
    return list(dict.fromkeys(dirs))


def find_leftovers(layout: Layout) -> list[Path]:
    """Temporary prefixes of interrupted operations (of any process, live or not)."""
    out = []
    for directory in _leftover_dirs(layout):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        out += [Path(e.path) for e in entries if e.name.startswith(".") and TMP_MARK in e.name]
    return out


def dead_leftovers(layout: Layout) -> list[Path]:
    """Temporary prefixes of interrupted env operations whose process is gone, except the old
    copy of a replaced env whose name is free (recovery restores it: never cleaned)."""
    out = []
    for path in find_leftovers(layout):
        pid = path.name.rsplit("-", 1)[-1]
        restorable = f"{TMP_MARK}old-" in path.name and not os.path.lexists(
            path.with_name(path.name[1:].split(TMP_MARK, 1)[0])
        )
        if not (pid.isdigit() and pid_alive(int(pid))) and not restorable:
            out.append(path)
    return sorted(out)


def _legacy_leftovers(layout: Layout) -> list[Recovered]:
    """Leftovers no journal explains, judged by their names (see the module docstring)."""
    out = []
    for path in find_leftovers(layout):
        base, _, tail = path.name[1:].partition(TMP_MARK)
        kind, _, pid = tail.rpartition("-")
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        prefix = path.with_name(base)
        if kind == "old" and not os.path.lexists(prefix):
            os.rename(path, prefix)
            out.append(
                Recovered(
                    RecoveryAction.RESTORED, str(prefix), str(path), "an env replaced by --force"
                )
            )
            continue
        problem = remove_tree(path)
        what = {"old": "the replaced env", "rm": "a removed env"}.get(kind, "an interrupted build")
        out.append(_result(RecoveryAction.REMOVED, prefix, path, problem, what))
    return out


# --------------------------------------------------------------------------- under the lock


def storage_lock(
    layout: Layout, settings: Settings, on_wait: Callable[[str], None] | None = None
) -> StorageLock:
    """The storage lock every env change holds (the state dir made first)."""
    ensure_state_dir(layout)
    return StorageLock(layout.lock_path, timeout=settings.lock_timeout, on_wait=on_wait)


def recover_locked(layout: Layout, settings: Settings) -> list[Recovered]:
    """Finish or roll back interrupted env operations, under the storage lock (for commands
    that do not hold it). Free when there is nothing to do."""
    if not find_leftovers(layout) and not _env_journals(layout):
        return []
    with storage_lock(layout, settings):
        return recover(layout)


def _env_journals(layout: Layout) -> list[str]:
    return [op for op in Journal.pending(layout.journal_dir) if op.startswith("env-")]
