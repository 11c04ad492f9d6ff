"""`hpcenv remove ENV` with no packages: delete the environment and unregister it everywhere
(journaled: a kill at any instant is finished by the next command)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hpcenv.consent import Consent
from hpcenv.envs.checks import require_writable
from hpcenv.envs.journal import RecoveryAction, recover, storage_lock
from hpcenv.envs.journal import delete as delete_prefix
from hpcenv.envs.plan import ChangeReport
from hpcenv.errors import RefusedError
from hpcenv.registry import (
    check_environments_txt,
    env_prefix,
    is_path_argument,
    needs_environments_txt_write,
    resolve,
)
from hpcenv.settings import Settings
from hpcenv.storage import Layout


def delete_consent(name_or_prefix: str) -> Consent:
    """Deleting an env always needs consent."""
    question = f"Delete environment {name_or_prefix}?"
    return Consent(question, f"{question} needs confirmation", "re-run with --yes")


def delete(
    layout: Layout,
    settings: Settings,
    name_or_prefix: str,
    on_wait: Callable[[str], None] | None = None,
) -> ChangeReport:
    """Delete an environment and unregister it everywhere (the caller has confirmed).
    Re-running it after a kill finishes the interrupted delete."""
    if is_path_argument(name_or_prefix):
        guess = Path(os.path.abspath(os.path.expanduser(name_or_prefix)))
    else:
        guess = env_prefix(layout, name_or_prefix)
    with storage_lock(layout, settings, on_wait):
        recovered = recover(layout)
        done = [
            r
            for r in recovered
            if r.prefix == str(guess) and r.action is RecoveryAction.FINISHED_DELETE
        ]
        if done:
            return ChangeReport(
                "remove", None, str(guess), False, (), removed=("(environment)",),
                recovered=tuple(recovered), resumed=True, kernels_removed=_forget_kernels(guess),
            )  # fmt: skip
        name, prefix = resolve(layout, name_or_prefix)
        if os.path.islink(prefix):
            target = Path(os.path.realpath(prefix))
            try:
                owner = os.lstat(target).st_uid
            except OSError:
                owner = os.geteuid()
            if owner != os.geteuid():
                raise RefusedError(
                    f"{prefix} is a link to {target}, which belongs to another user",
                    hint=f"remove only the link with `rm {prefix}`",
                )
        require_writable(prefix, [prefix.parent])
        spellings = [prefix, Path(os.path.realpath(prefix))]
        if any(needs_environments_txt_write(layout, p, False) for p in spellings):
            check_environments_txt(layout)  # it must be unregistered: refuse before deleting
        released = _image_mounts(prefix)
        problem = delete_prefix(layout, prefix, name)
        kernels = _forget_kernels(prefix)
    warnings = (problem,) if problem else ()
    if released:  # an image env: its unused mounts on this node go too (best effort)
        from hpcenv.errors import HpcenvError
        from hpcenv.images import mounts

        try:
            mounts.unmount(released[0].parent, {p.name for p in released})
        except (HpcenvError, OSError):
            pass
    return ChangeReport(
        "remove", name, str(prefix), False, (), removed=("(environment)",),
        warnings=warnings, recovered=tuple(recovered), kernels_removed=kernels,
    )  # fmt: skip


def _forget_kernels(prefix: Path) -> tuple[str, ...]:
    """The Jupyter kernels of a deleted env go with it (`hpcenv kernel`)."""
    if os.path.isdir(prefix / "conda-meta"):
        return ()  # not deleted after all
    from hpcenv.kernel import remove_kernels_of

    return remove_kernels_of(prefix)


def _image_mounts(prefix: Path) -> list[Path]:
    """Where the versions of an image env are mounted (none for a plain env)."""
    from hpcenv.registry import is_image

    if not is_image(prefix):
        return []
    from hpcenv import images
    from hpcenv.errors import OperationError

    try:
        return [Path(v.mount) for v in images.read_image(prefix).versions]
    except OperationError:
        return []
