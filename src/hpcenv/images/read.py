"""What `list`, `info`, `verify` and `umount` read of image envs."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError, UsageError
from hpcenv.images import mounts
from hpcenv.images.record import is_image_dir, label_for, read_image
from hpcenv.images.versions import mount_current


@dataclass(frozen=True)
class ImageSummary:
    """What `list`, `info` and `usage` say about an image env."""

    version: int
    image: str
    image_bytes: int
    image_files: int  # files in the image
    packages: int
    mount: str
    mounted: bool
    versions: int  # image files kept (the current one and older ones jobs may use)
    created: float = 0.0  # of the current version


def summary(path: Path) -> ImageSummary | None:
    try:
        img = read_image(path)
    except OperationError:
        return None
    v = img.version
    mounted = Path(v.mount) in mounts.mounts_under(Path(v.mount).parent)
    return ImageSummary(v.number, str(img.file(v)), v.bytes, v.files, v.packages, v.mount,
                        mounted, len(img.versions), v.created)  # fmt: skip


def readable_tree(path: Path) -> Path:
    """A path where the current version's files can be read: mounted here if needed."""
    return mount_current(path).mount


@dataclass(frozen=True)
class ImageCheck:
    image: str
    ok: bool
    detail: str
    inodes: int | None = None


def check_image(image: Path) -> ImageCheck:
    """Whether `image` is a readable squashfs (its superblock and its whole directory
    table, as `unsquashfs -l` reads them)."""
    import shutil

    exe = shutil.which("unsquashfs")
    if exe is None:
        return ImageCheck(str(image), False, "unsquashfs is not installed (package squashfs-tools)")
    if not os.path.isfile(image):
        return ImageCheck(str(image), False, "the image file is missing")
    stat_ = subprocess.run([exe, "-stat", str(image)], capture_output=True, text=True)
    listing = subprocess.run([exe, "-lc", "-d", "/", str(image)], capture_output=True, text=True)
    m = re.search(r"Number of inodes (\d+)", stat_.stdout)
    if stat_.returncode != 0 or listing.returncode != 0 or m is None:
        said = " ".join((listing.stderr or stat_.stderr or stat_.stdout).split())[:200]
        return ImageCheck(str(image), False, f"not a readable squashfs image: {said}")
    return ImageCheck(str(image), True, "readable", int(m[1]))


def verify(path: Path) -> list[ImageCheck]:
    """Every image file an image env's record lists, checked."""
    img = read_image(path)
    return [check_image(img.file(v)) for v in img.versions]


# --------------------------------------------------------------------------- unmount


@dataclass(frozen=True)
class UnmountReport:
    results: tuple[mounts.Unmounted, ...]
    tidied: tuple[mounts.Tidied, ...]

    @property
    def busy(self) -> tuple[mounts.Unmounted, ...]:
        return tuple(r for r in self.results if r.status != "unmounted")


def unmount(layout, settings, name_or_prefix: str | None = None) -> UnmountReport:
    """`hpcenv umount [NAME]`: this user's image mounts on this node (of NAME's versions)
    that nothing uses."""
    from hpcenv.registry import resolve

    names = None
    base = mounts.user_base(settings.images_mount_root)
    if name_or_prefix is not None:
        _, path = resolve(layout, name_or_prefix)
        if not is_image_dir(path):
            raise UsageError(f"{name_or_prefix} is not an image env; it has nothing to unmount")
        img = read_image(path)
        base = Path(img.version.mount).parent
        label = label_for(img.name, path)
        names = {Path(v.mount).name for v in img.versions}
        # and older versions no longer listed (their files are gone, their mounts may not be)
        names |= {p.name for p in mounts.mounts_under(base) if p.name.startswith(label + ".")}
    results, tidied = mounts.unmount(base, names)
    return UnmountReport(tuple(results), tuple(tidied))
