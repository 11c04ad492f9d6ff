"""Envs as one file: a squashfs image per env version, mounted on each node where it runs.

An image env lives in storage as a directory of a few files, where a plain env has a tree:

    ~/.conda/envs/NAME/hpcenv-image.json    which versions exist and which one is current
    ~/.conda/envs/NAME/ID.sqfs              one image per version (zstd), read-only

Each version is installed fresh (from the package cache) at its own node-local mount path,
`MOUNT_ROOT/hpcenv-img-USER/LABEL.ID` (`images.mounts`), where it is also mounted later: no prefix is
ever rewritten. `mksquashfs` turns that tree into `ID.sqfs` (written beside and renamed into
place); the tree is deleted, so only mounts are ever left at that path.

Changing an image env (`install`, `remove`) builds a new version from the current records
plus the change and switches `current` by renaming a new hpcenv-image.json into place: a
kill at any instant leaves the old version current, or the new one. Older versions stay while
the script of a queued or running job names them (and all of them while SLURM cannot be
asked), as packs do; `install`, `remove` and `clean` remove the others. A version still
mounted somewhere keeps working when its file goes: squashfuse holds it open.

`hpcenv image NAME` converts a plain env: the same package records are installed fresh at the
mount path and imaged, then the image directory replaces the tree in one journaled exchange
(`envs.journal`), and the tree is deleted. It refuses an env holding files that no package
record (or recorded pip requirement) accounts for, unless told to drop them.
"""

from hpcenv.images.build import Built, build_version, create, processors
from hpcenv.images.convert import ConvertPlan, ConvertReport, convert, plan_convert
from hpcenv.images.read import (
    ImageCheck,
    ImageSummary,
    UnmountReport,
    check_image,
    readable_tree,
    summary,
    unmount,
    verify,
)
from hpcenv.images.record import (
    FORMAT,
    POINTER,
    SUFFIX,
    ZSTD_LEVEL,
    ImageEnv,
    Version,
    is_image_dir,
    label_for,
    read_image,
    write_image,
)
from hpcenv.images.versions import (
    ImageRef,
    StaleVersion,
    apply_update,
    current_ref,
    mount_current,
    prune,
    remove_version,
    stale_versions,
)

__all__ = [
    "FORMAT", "POINTER", "SUFFIX", "ZSTD_LEVEL", "Built", "ConvertPlan", "ConvertReport",
    "ImageCheck", "ImageEnv", "ImageRef", "ImageSummary", "StaleVersion", "UnmountReport",
    "Version", "apply_update", "build_version", "check_image", "convert", "create",
    "current_ref", "is_image_dir", "label_for", "mount_current", "plan_convert", "processors",
    "prune", "read_image", "readable_tree", "remove_version", "stale_versions", "summary",
    "unmount", "verify", "write_image",
]  # fmt: skip
