"""The one error boundary: whatever exception reaches the CLI entry becomes ONE line on stderr
and an exit code. Loaded only when something failed (the hot paths never import it).

- `HpcenvError`: its message and hint, its own exit code.
- `OSError`: what the system refused and where, with a hint for the errno: no space (ENOSPC,
  EDQUOT), not yours (EACCES, EPERM: the owner from lstat), read-only (EROFS), no file locking
  (ENOLCK, ENOSYS, EOPNOTSUPP). Exit 2 (refused) when the error is about a path and this
  process had not finished any step yet (`journal.changed_anything`), else 1.
- `subprocess.CalledProcessError`: the command that failed. Exit 1.
- Anything else is a bug: `hpcenv: internal error: TYPE: MESSAGE`, exit 1.

With `HPCENV_DEBUG=1` the traceback is printed first, whatever the exception.
"""

from __future__ import annotations

import errno
import os
import sys

from hpcenv.errors import EXIT_FAILED, EXIT_USAGE, HpcenvError

# The system refused something about a path: nothing is changed by the refusal itself.
_PATH_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EXDEV,
        errno.ENOTEMPTY,
    }
)
_NO_LOCKING = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP})
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_MAX = 400  # characters of a foreign message kept on the line


def report(exc: BaseException) -> int:
    """Print the line for `exc` on stderr (the traceback first with HPCENV_DEBUG=1); return
    the exit code."""
    if os.environ.get("HPCENV_DEBUG", "") not in ("", "0"):
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    if isinstance(exc, BrokenPipeError):  # `hpcenv list | head -1`: the reader left
        _silence_stdout()
        return EXIT_FAILED
    line, code = describe(exc)
    print(f"hpcenv: {line}", file=sys.stderr)
    return code


def describe(exc: BaseException) -> tuple[str, int]:
    """The line (after "hpcenv: ") and the exit code for an exception."""
    import subprocess

    if isinstance(exc, HpcenvError):
        return f"error: {exc.one_line()}", exc.exit_code
    if isinstance(exc, subprocess.CalledProcessError):
        return _called_process(exc), EXIT_FAILED
    if isinstance(exc, OSError):
        return _os_error(exc)
    text = _flat(str(exc)) or "(no message)"
    return (
        f"internal error: {type(exc).__name__}: {text} (set HPCENV_DEBUG=1 for the traceback)",
        EXIT_FAILED,
    )


def _flat(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX else text[: _MAX - 3] + "..."


def _called_process(exc) -> str:
    import shlex

    cmd = exc.cmd if isinstance(exc.cmd, (list, tuple)) else [exc.cmd]
    line = f"error: command failed (exit status {exc.returncode}): {shlex.join(map(str, cmd))}"
    err = exc.stderr
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    last = [x for x in (err or "").splitlines() if x.strip()]
    if last:
        line += f": {_flat(last[-1])}"
    return line


def _os_error(exc: OSError) -> tuple[str, int]:
    from hpcenv.journal import changed_anything

    path = _path(exc.filename)
    where = f": {path}" if path else ""
    reason = exc.strerror or _flat(str(exc))
    unchanged = not changed_anything()
    code = EXIT_USAGE if exc.errno in _PATH_ERRNOS and unchanged else EXIT_FAILED
    state = (
        "nothing was changed"
        if unchanged
        else "the command stopped there; re-running it finishes or repairs what it started"
    )
    if exc.errno in _NO_SPACE:
        return (
            f"error: {reason.lower()}{where}; {state} (hint: see what uses the space "
            "with `hpcenv usage`, free it with `hpcenv clean`, then re-run)",
            EXIT_FAILED,
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        owner, where_owned, mine = _owner(path)
        whose = ""
        if owner:
            whose = f" ({'it' if where_owned == path else where_owned} belongs to {owner})"
        if mine:
            hint = f"check the permissions of {where_owned} (`ls -ld` it) and fix them with chmod"
        elif owner:
            hint = (
                f"hpcenv does not change files of others: ask {owner} to share it "
                "(`hpcenv share`), or work on an environment of your own"
            )
        else:
            hint = "use a path you can write"
        refusal = "permission denied, a refusal" if code == EXIT_USAGE else "permission denied"
        return f"error: {refusal}{where}{whose}; {state} (hint: {hint})", code
    if exc.errno == errno.EROFS:
        return (
            f"error: read-only filesystem{where}; {state} (hint: this filesystem is mounted "
            "read-only here, e.g. on compute nodes: run the command where it is writable)",
            code,
        )
    if exc.errno in _NO_LOCKING:
        return (
            f"error: the filesystem{where} does not support file locking ({reason}); {state} "
            "(hint: hpcenv's own lock falls back to a lock directory there, but this step needs "
            "flock: ask the admins to enable it (NFS: lockd or local_lock=flock; Lustre: mount "
            "with flock), or use a storage directory on another filesystem)",
            EXIT_FAILED,
        )
    second = _path(getattr(exc, "filename2", None))
    if second:
        where += f" -> {second}"
    return f"error: {reason.lower() if reason else 'system error'}{where}; {state}", code


def _path(name: object) -> str:
    if name is None or isinstance(name, int):
        return ""
    return os.fsdecode(name) if isinstance(name, (bytes, str)) else str(name)


def _owner(path: str) -> tuple[str | None, str, bool]:
    """The owner of `path`, or of its nearest ancestor we can see: (name, that path, ours?)."""
    if not path:
        return None, path, False
    probe = os.path.abspath(path)
    while True:
        try:
            st = os.lstat(probe)
            break
        except OSError:
            parent = os.path.dirname(probe)
            if parent == probe:
                return None, path, False
            probe = parent
    import pwd

    try:
        name = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        name = f"uid {st.st_uid}"
    return name, (path if probe == os.path.abspath(path) else probe), st.st_uid == os.geteuid()


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
