"""`hpcenv install ENV --pip REQ... [-r FILE]`: a pip step into an existing env, under the
storage lock, and the finishing of an interrupted one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpcenv.errors import RefusedError, UsageError
from hpcenv.pipstep.apply import apply, finish_pending
from hpcenv.pipstep.plan import expand, plan
from hpcenv.pipstep.uv import find_uv, python_of
from hpcenv.pypi import (
    PypiPackage,
)
from hpcenv.storage import Layout


def install_into(
    layout: Layout,
    settings,
    name_or_prefix: str,
    requirements: Sequence[str],
    *,
    files: Sequence[Path] = (),
    cwd: Path | None = None,
    dry_run: bool = False,
    on_wait=None,
):
    """`hpcenv install ENV --pip REQ... [-r FILE]`: plan, check and install PyPI packages
    into an existing env, under the storage lock; the requirements join what the env records
    as asked for (`env.json` `pip`)."""
    from hpcenv.envs.plan import ChangeReport
    from hpcenv.trust import refuse_image, resolve_for_use

    base = Path.cwd() if cwd is None else cwd
    lines = expand([*requirements, *(f"-r {path}" for path in files)], base)
    if not lines:
        raise UsageError(
            "no PyPI requirements given", hint="hpcenv install ENV --pip NAME[==VERSION]..."
        )
    usable = resolve_for_use(layout, name_or_prefix, mount=False)  # refused: others can plant in
    refuse_image(
        usable, name_or_prefix, "its image is read-only, so PyPI packages cannot go into it",
        f"`hpcenv export {name_or_prefix} -o env.yml`, add them under `pip:`, then `hpcenv "
        "create -f env.yml --image` (a new env)",
    )  # fmt: skip
    name, prefix = usable.name, usable.prefix
    _check_env(prefix)
    if dry_run:
        label = name or str(prefix)
        the_plan = plan(layout, prefix, requirements=lines, cwd=cwd, env_label=label)
        return ChangeReport(
            "install", name, str(prefix), True, (), pip=tuple(lines),
            pypi=tuple(f"{p.name} {p.version}" for p in the_plan.packages),
        )  # fmt: skip
    return _install_locked(layout, settings, name, prefix, lines, cwd, on_wait)


def finish_interrupted(layout: Layout, settings, name_or_prefix: str, on_wait=None):
    """The report of finishing an interrupted `install --pip` of the env; None if none was."""
    from hpcenv.pypi import has_pending
    from hpcenv.trust import resolve_for_use

    usable = resolve_for_use(layout, name_or_prefix, mount=False)
    if usable.image is not None:
        return None  # nothing is ever installed into an image env by uv
    name, prefix = usable.name, usable.prefix
    if not has_pending(prefix):
        return None
    _check_env(prefix)
    return _install_locked(layout, settings, name, prefix, [], None, on_wait)


def _check_env(prefix: Path) -> None:
    """uv, the env's python and write access to it, checked before anything is planned."""
    from hpcenv.envs.checks import require_writable

    find_uv()
    python_of(prefix)
    require_writable(prefix, [prefix, *prefix.glob("lib/python*/site-packages")])


def _install_locked(layout, settings, name, prefix: Path, lines, cwd, on_wait):
    import time

    from hpcenv import perms
    from hpcenv.envs.journal import recover
    from hpcenv.envs.journal import storage_lock as _lock
    from hpcenv.envs.plan import ChangeReport, EnvMeta, requested
    from hpcenv.registry import env_maker, set_registered

    start = time.perf_counter()
    warnings: list[str] = []
    with _lock(layout, settings, on_wait):
        recovered = recover(layout)
        finished = finish_pending(layout, prefix)
        done: tuple[PypiPackage, ...] = ()
        if lines:
            label = name or str(prefix)
            the_plan = plan(layout, prefix, requirements=lines, cwd=cwd, env_label=label)
            done = apply(layout, the_plan, mark=True)
        perms.limit_installed(prefix, layout.package_cache, ())  # no file anyone may write
        meta = EnvMeta.load(prefix)
        if meta is None:
            from hpcenv import engine

            asked = requested(prefix, engine.read_prefix(prefix).packages, None)
            meta = EnvMeta(
                name, str(prefix), asked.specs, asked.channels, made_by=env_maker(prefix)
            )
        pip = tuple(dict.fromkeys([*meta.pip, *lines]))
        EnvMeta(**{**meta.__dict__, "pip": pip, "updated": time.time()}).save(prefix)
        try:
            set_registered(layout, name, prefix, True)
        except RefusedError as exc:
            warnings.append(f"{prefix} was changed but not registered: {exc.message}")
    return ChangeReport(
        "install", name, str(prefix), False, (), pip=tuple(lines),
        pypi=tuple(f"{p.name} {p.version}" for p in (*finished, *done)),
        warnings=tuple(warnings), seconds=time.perf_counter() - start,
        recovered=tuple(recovered), resumed=bool(finished),
    )  # fmt: skip
