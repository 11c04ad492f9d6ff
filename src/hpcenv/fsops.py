"""File operations every module shares, each written once with one rule.

- `atomic_write(path, data, mode)`: the file is replaced in one step or not at all. A sibling
  temp file is written (never through a symlink), fsynced, given its mode (and group), renamed
  over `path`, and the directory is fsynced, so a crash leaves the old file or the new one.
- `remove_tree(path)`: delete a tree (or a file, or a link) without following links, making
  our own read-only directories writable where needed; it returns what it could NOT remove
  (None when the path is gone), so a caller never reports as removed what is still there.
- `tree_size(path)`: the bytes a tree frees when deleted and its entry count, from the one
  disk walker (`treescan`).

Imports nothing beyond the standard library's `os` and `stat` at module level: activation
reaches this module.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_dir(path: Path | str) -> None:
    """Make a rename or an unlink in `path` durable (a directory that cannot be opened, on
    an odd filesystem, is skipped: the rename itself was atomic)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path | str, data: str | bytes, mode: int = 0o644, *, group: int | None = None
) -> None:
    """Replace `path` with `data` in one step (see the module docstring); the temp file is
    created exclusively, so nothing planted under its name is written through. Text is written as
    UTF-8, with undecodable path bytes (surrogate escapes) written back as the bytes they were.
    Missing parent directories are created. On failure `path` is unchanged and the temp file
    is gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8", errors="surrogateescape") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, _TMP_FLAGS, 0o600)
    except FileExistsError:  # left by a dead process of the same pid: ours to replace
        os.unlink(tmp)
        fd = os.open(tmp, _TMP_FLAGS, 0o600)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, mode)  # after chown, which may clear bits
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def remove_tree(path: Path | str) -> str | None:
    """Delete `path` (a tree, a file or a link; links are removed, never followed). Returns
    None when nothing is left, else what is left and why, e.g. "3 entries left, first
    /x/y: Permission denied"."""
    path = os.fspath(path)
    failed: list[tuple[str, str]] = []
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        _remove_dir(path, failed)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append((path, exc.strerror or str(exc)))
    if not os.path.lexists(path):
        return None
    if not failed:
        return f"{path} is still there"
    first, why = failed[0]
    many = f"{len(failed)} entries left, first " if len(failed) > 1 else ""
    return f"{many}{first}: {why}"


def _remove_dir(path: str, failed: list[tuple[str, str]]) -> None:
    """Depth first through directory descriptors (a directory swapped for a link meanwhile
    is not followed); a directory of ours we may not write is made writable first."""
    try:
        entries = list(os.scandir(path))
    except PermissionError:
        if not _make_writable(path):
            failed.append((path, "Permission denied"))
            return
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            failed.append((path, exc.strerror or str(exc)))
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        failed.append((path, exc.strerror or str(exc)))
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            _remove_dir(entry.path, failed)
            continue
        why = _unlink(entry.path, path)
        if why is not None:
            failed.append((entry.path, why))
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if not (_make_writable(os.path.dirname(path)) and _rmdir(path)):
            if not any(f.startswith(path + "/") for f, _ in failed):
                failed.append((path, exc.strerror or str(exc)))


def _unlink(path: str, parent: str) -> str | None:
    """Unlink one entry (its parent made writable if that is what stops it); why not, or None."""
    for attempt in (1, 2):
        try:
            os.unlink(path)
            return None
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            if attempt == 2 or not _make_writable(parent):
                return exc.strerror or str(exc)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _make_writable(directory: str) -> bool:
    """Give a directory of ours u+rwx (a package may ship one read-only); False if we may
    not (not ours, a read-only filesystem)."""
    try:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return False
        if stat.S_IMODE(st.st_mode) & stat.S_IRWXU == stat.S_IRWXU:
            return False  # already writable: the refusal is not about our bits
        os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        return True
    except OSError:
        return False


def tree_size(path: Path | str) -> tuple[int, int]:
    """(bytes deleting the tree frees, its non-directory entries), hardlinks counted once."""
    from hpcenv.treescan import scan

    usage = scan(Path(path))
    return usage.unique_bytes, usage.files
