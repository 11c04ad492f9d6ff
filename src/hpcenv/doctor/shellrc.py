"""`conda init` blocks in shell startup files: found, checked, and removed by `--fix`.

`remove_conda_blocks` removes every `conda init` block from ~/.bashrc, ~/.bash_profile and
~/.zshrc (only that block, after an atomic backup `FILE.hpcenv-backup-<time>`), unless the
file would no longer parse without it (the block sits inside the user's own code).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

from hpcenv.doctor.check import Check, Status, ok, q
from hpcenv.fsops import atomic_write

# conda 4.6+ writes "conda initialize"; the first 4.6 installers wrote "conda init"
CONDA_BLOCKS = {
    b"# >>> conda initialize >>>": b"# <<< conda initialize <<<",
    b"# >>> conda init >>>": b"# <<< conda init <<<",
}
SHELL_RC_FILES = (".bashrc", ".bash_profile", ".zshrc")


def find_conda_blocks(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of each complete `conda init` block, whole lines. An opening
    marker without its closing one is not a block (removing it could eat the rest)."""
    blocks = []
    start, end_marker = None, None
    pos = 0
    for line in data.splitlines(keepends=True):
        marker = line.strip()
        if marker in CONDA_BLOCKS:
            start, end_marker = pos, CONDA_BLOCKS[marker]
        elif start is not None and marker == end_marker:
            blocks.append((start, pos + len(line)))
            start = None
        pos += len(line)
    return blocks


def _without_blocks(data: bytes, blocks: list[tuple[int, int]]) -> bytes:
    kept, last = [], 0
    for start, end in blocks:
        kept.append(data[last:start])
        last = end
    kept.append(data[last:])
    return b"".join(kept)


def _syntax_ok(data: bytes, rc_name: str) -> bool | None:
    """Whether the shell parses `data` (`bash -n` / `zsh -n`); None when it cannot tell."""
    import subprocess

    shell = shutil.which("zsh" if rc_name.endswith("zshrc") else "bash")
    if shell is None:
        return None
    result = subprocess.run([shell, "-n"], input=data, capture_output=True, timeout=30)
    return result.returncode == 0


class BlockInsideCode(Exception):
    """The block sits inside the user's own code (a function, an if): not removed."""


def remove_conda_blocks(path: Path) -> Path | None:
    """Remove every `conda init` block from a shell startup file, keeping every other byte.
    The original is first copied to `FILE.hpcenv-backup-<time>`; both writes are atomic. A
    symlinked file is edited where it points. Returns the backup, or None if no block.
    Raises `BlockInsideCode` (changing nothing) when the file would no longer parse."""
    real = Path(os.path.realpath(path))
    data = real.read_bytes()
    blocks = find_conda_blocks(data)
    if not blocks:
        return None
    if _removal_breaks(data, blocks, real.name):
        raise BlockInsideCode(str(path))
    mode = stat.S_IMODE(real.stat().st_mode)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    backup = real.with_name(f"{real.name}.hpcenv-backup-{stamp}")
    n = 0
    while os.path.lexists(backup):
        n += 1
        backup = real.with_name(f"{real.name}.hpcenv-backup-{stamp}.{n}")
    atomic_write(backup, data, mode)
    atomic_write(real, _without_blocks(data, blocks), mode)
    return backup


def _removal_breaks(data: bytes, blocks: list[tuple[int, int]], rc_name: str) -> bool:
    """Whether taking the blocks out leaves a file the shell no longer parses."""
    return (
        _syntax_ok(_without_blocks(data, blocks), rc_name) is False
        and _syntax_ok(data, rc_name) is not False
    )


def conda_init(home: Path) -> Check:
    found = []
    for name in SHELL_RC_FILES:
        path = home / name
        try:
            data = path.read_bytes()
        except OSError:
            continue
        blocks = find_conda_blocks(data)
        if blocks and _removal_breaks(data, blocks, path.name):
            return Check(
                "conda-init",
                Status.WARN,
                f"the `conda init` block in {path} sits inside your own code (a function or "
                "an if); removing it alone would break the file",
                f"edit {q(path)} and remove the conda initialize lines by hand",
            )
        if blocks:
            found.append(path)
        elif any(start in data for start in CONDA_BLOCKS):
            return Check(
                "conda-init",
                Status.WARN,
                f"{path} has a `conda initialize` block without its end marker",
                f"edit {q(path)} and remove the conda initialize lines by hand",
            )
    if not found:
        return ok("conda-init", "no `conda init` block in the shell startup files")
    detail = (
        f"`conda init` block in {', '.join(str(p) for p in found)}: it runs conda at every "
        'login and activates base in batch jobs; use `eval "$(hpcenv activate NAME)"`'
    )
    return Check("conda-init", Status.WARN, detail, "hpcenv doctor --fix")
