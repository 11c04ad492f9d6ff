"""Doctor check of image envs: whether this node can build and mount them; mounts whose
squashfuse died and trees of builds whose builder is gone are cleaned (`mounts.tidy`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hpcenv.doctor.check import Check, Status, ok
from hpcenv.settings import Settings


def image_envs(settings: Settings, prefixes: Mapping[Path, str | None]) -> Check:
    from hpcenv.images import mounts
    from hpcenv.registry import is_image

    images = [p for p in prefixes if is_image(p)]
    if not images and not settings.images_default:
        return ok("images", "no image envs")
    tools = mounts.find_tools()
    base = mounts.user_base(settings.images_mount_root)
    cleaned = []
    if base.is_dir():
        mounts.ensure_base(base)
        with mounts.mutex(base):
            cleaned = mounts.tidy(base)
    said = "; ".join(
        f"cleaned {t.path} ({'its squashfuse had died' if t.what == 'stale-mount' else 'an interrupted build'})"
        for t in cleaned
        if t.what != "empty-dir"
    )
    what = f"{len(images)} image env(s)"
    if tools.build_problem is not None:
        problem, _, fix = tools.build_problem.partition("; ")
        status = Status.FAIL if images and tools.problem is not None else Status.WARN
        return Check("images", status, f"{what}; {problem}" + (f"; {said}" if said else ""), fix)
    mounted = len(mounts.mounts_under(base))
    detail = f"{what}, {mounted} mounted here; squashfuse, mksquashfs and FUSE are usable"
    return ok("images", detail + (f"; {said}" if said else ""))
