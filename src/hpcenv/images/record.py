"""hpcenv-image.json: an image env's versions and the current one (see `images`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError
from hpcenv.fsops import atomic_write
from hpcenv.registry import IMAGE_RECORD, is_image

POINTER = IMAGE_RECORD
SUFFIX = ".sqfs"
FORMAT = 1
ZSTD_LEVEL = 3  # level 15 (mksquashfs's default) builds ~20x slower for an image ~13% smaller
_ID = re.compile(r"^[0-9a-f]{10}$")
_TMP_IMAGE = re.compile(r"^\.(?P<id>[0-9a-f]{10})\.sqfs\.tmp-(?P<pid>\d+)$")


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Version:
    id: str
    mount: str  # where it was built, and is mounted
    number: int  # 1, 2, ... for people
    created: float
    packages: int
    files: int  # files (and links and dirs) in the image
    bytes: int  # of the image file


@dataclass(frozen=True)
class ImageEnv:
    """hpcenv-image.json: the env's versions and the current one."""

    path: Path  # the env's directory in storage
    name: str | None
    current: str
    versions: tuple[Version, ...]
    made_by: str = "hpcenv"  # as env.json's (`registry.env_maker`)

    @property
    def version(self) -> Version:
        return next(v for v in self.versions if v.id == self.current)

    def file(self, version: Version | str | None = None) -> Path:
        vid = self.current if version is None else getattr(version, "id", version)
        return self.path / f"{vid}{SUFFIX}"


def is_image_dir(path: Path) -> bool:
    """Whether `path` is an image env's directory (it holds hpcenv-image.json)."""
    return is_image(path)


def read_image(path: Path) -> ImageEnv:
    """The record, or OperationError naming the damaged file."""
    where = Path(path) / POINTER
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
        versions = tuple(Version(**v) for v in data["versions"])
        img = ImageEnv(Path(path), data.get("name"), data["current"], versions,
                       str(data.get("made_by") or "hpcenv"))  # fmt: skip
        img.version  # noqa: B018 - the current one must be listed
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise OperationError(
            f"the image record {where} is damaged ({type(exc).__name__})",
            hint="re-create the env (`hpcenv create NAME --image --force ...`)",
        ) from None
    return img


def write_image(img: ImageEnv) -> None:
    """Replace the record in one step (the commit point of a version switch)."""
    from hpcenv.report import jsonable

    data = {
        "format": FORMAT,
        "name": img.name,
        "current": img.current,
        "versions": [jsonable(v) for v in img.versions],
        "made_by": img.made_by,
    }
    atomic_write(img.path / POINTER, json.dumps(data, indent=2) + "\n", 0o644)


def label_for(name: str | None, path: Path) -> str:
    """The readable part of a mount path (`sci` in /tmp/hpcenv-img-alice/sci.3f9a0c21d4)."""
    text = re.sub(r"[^A-Za-z0-9_+-]", "_", name or path.name)[:32].strip("_")
    return text or "env"


# --------------------------------------------------------------------------- build
