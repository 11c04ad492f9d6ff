"""Atomic renames that Python lacks: renameat2 RENAME_NOREPLACE and RENAME_EXCHANGE (two
plain renames where the kernel, libc or filesystem cannot), and a free name in a directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

_AT_FDCWD = -100


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


_renameat2 = None  # the libc function once looked up, or False where there is none


def _rename2(src: str | Path, dst: str | Path, flags: int) -> bool:
    """renameat2(2) with `flags`; False where the kernel, libc or filesystem lacks it."""
    global _renameat2
    if _renameat2 is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
            fn.argtypes += [ctypes.c_uint]
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    if not _renameat2:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def rename_noreplace(src: str | Path, dst: str | Path) -> None:
    """Rename, raising FileExistsError instead of replacing an existing `dst`."""
    if _rename2(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):  # no renameat2 here: a check, then the rename
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two paths atomically (RENAME_EXCHANGE); False where that is not supported."""
    return _rename2(a, b, _RENAME_EXCHANGE)


def free_name(directory: str | Path, name: str) -> str:
    """`directory/name`, or `name.1`, `name.2`, ... : the first that does not exist."""
    path, n = os.path.join(directory, name), 0
    while os.path.lexists(path):
        n += 1
        path = os.path.join(directory, f"{name}.{n}")
    return path
