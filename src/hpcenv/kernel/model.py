"""What `hpcenv kernel` finds and reports (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Kernel:
    """One kernel hpcenv wrote, as found in (or written to) the kernels dir."""

    name: str  # the kernel's name for Jupyter: hpcenv-NAME
    directory: Path
    display_name: str
    env: str | None  # the env's name when it was given by name; None when given by path
    prefix: Path | None  # None only for what an interrupted removal left (no files to say)
    env_exists: bool | None  # None: it cannot be read (another user's env, for instance)
    env_vars: tuple[str, ...] = ()  # KEY=VALUE set for the kernel (--env)


@dataclass(frozen=True)
class KernelReport:
    """The result of `hpcenv kernel NAME` (action "written": one kernel) or `--remove`
    ("removed": every kernel of that env)."""

    action: str
    kernels: tuple[Kernel, ...]
    replaced: bool = False  # a kernel of the same name was there before
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelList:
    data_dir: Path
    kernels: tuple[Kernel, ...]
