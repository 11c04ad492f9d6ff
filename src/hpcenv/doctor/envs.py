"""Doctor checks of the environments and what keeps them whole: the registries, package
records, the package cache, interrupted operations, world-writable files, the GPU driver."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from hpcenv.doctor.check import Check, Status, ok, q
from hpcenv.errors import HpcenvError
from hpcenv.settings import Settings
from hpcenv.storage import Layout


def env_registry(layout: Layout, registered: list[Path]) -> Check:
    from hpcenv.registry import is_env, read_environments_txt, read_registry

    missing = [p for p in registered if is_env(p) is False]
    gone = [
        Path(p)
        for p in read_registry(layout)
        if is_env(Path(p)) is False and Path(p) not in missing
    ]
    listed = {os.path.realpath(p) for p in registered}
    unlisted = []
    if layout.envs_dir.is_dir():
        from hpcenv.registry import is_image

        for entry in sorted(layout.envs_dir.iterdir()):
            if entry.name.startswith(".") or not is_env(entry) or is_image(entry):
                continue  # (conda cannot use an image env: it is not for environments.txt)
            if os.path.realpath(entry) not in listed and str(entry) not in map(str, registered):
                unlisted.append(entry)
    problems, fixes = [], []
    txt = q(layout.environments_txt)
    unreadable = read_environments_txt(layout).problem
    if unreadable:
        problems.append(f"{layout.environments_txt} {unreadable}")
        fixes.append(f"mv {txt} {txt}.broken")
    for p in missing:
        problems.append(f"{p} is in environments.txt but missing")
        if not unreadable:
            fixes.append(f"grep -vxF {q(p)} {txt} > {txt}.new; mv {txt}.new {txt}")
    for p in gone:
        problems.append(f"{p} is in hpcenv's registry but missing")
    for p in unlisted:
        problems.append(f"{p} is not in environments.txt (conda env list misses it)")
        if not unreadable:
            fixes.append(f"echo {q(p)} >> {txt}")
    if not problems:
        return ok("env-registry", "every registered env exists and every env is registered")
    return Check("env-registry", Status.WARN, "; ".join(problems), " && ".join(fixes) or None)


def env_records(prefixes: Mapping[Path, str | None]) -> Check:
    """Damaged conda-meta records: the package they describe is invisible to every tool."""
    from hpcenv import engine

    bad = []
    for prefix, name in prefixes.items():
        for d in engine.read_prefix(prefix).damaged:
            bad.append((name or str(prefix), d))
    if not bad:
        return ok("env-records", "every package record of every env is readable")
    detail = "; ".join(f"{d.path} (package {d.name}): {d.reason}" for _, d in bad)
    fix = " && ".join(f"hpcenv install {q(env)} {q(d.name)}" for env, d in bad)
    return Check(
        "env-records", Status.FAIL, detail + " (re-create the env or reinstall the package)", fix
    )


def package_cache(layout: Layout) -> Check:
    """Extracted packages in the cache with a missing or truncated file: envs linked from
    them are damaged, and new installs would link the damage."""
    from hpcenv.pkgcache import check_cache_entry

    damaged = []
    try:
        entries = sorted(os.scandir(layout.pkgs_dir), key=lambda e: e.name)
    except OSError:
        entries = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        why = check_cache_entry(Path(entry.path))
        if why is not None:
            damaged.append(f"{entry.name}: {why}")
    if not damaged:
        return ok("package-cache", f"{len(entries)} cached packages checked, none damaged")
    return Check(
        "package-cache",
        Status.WARN,
        "damaged packages in the cache (the next install extracts them again; envs that "
        "link them need the package reinstalled): " + "; ".join(damaged),
        "hpcenv clean --yes",
    )


def leftovers(layout: Layout) -> Check:
    from hpcenv.envs.journal import dead_leftovers

    found = [str(p) for p in dead_leftovers(layout)]
    trash = layout.cache_trash
    if trash.is_dir() and any(trash.iterdir()):
        found.append(str(trash))
    if not found:
        return ok("leftovers", "no leftovers of interrupted creates or cleans")
    return Check(
        "leftovers",
        Status.WARN,
        f"leftovers of an interrupted create or clean: {', '.join(found)}",
        "hpcenv clean --yes",
    )


def pending_update(prefixes: Mapping[Path, str | None]) -> Check:
    from hpcenv.envs.update import pending_path

    pending = [(p, n) for p, n in prefixes.items() if pending_path(p).exists()]
    if not pending:
        return ok("pending-update", "no interrupted install or remove")
    detail = "interrupted install/remove in " + ", ".join(str(p) for p, _ in pending)
    fix = " && ".join(f"hpcenv install {q(n or p)}" for p, n in pending)
    return Check("pending-update", Status.FAIL, detail, fix)


def interrupted(layout: Layout) -> Check:
    from hpcenv.journal import Journal
    from hpcenv.lock import StorageLock

    ops = Journal.pending(layout.journal_dir)
    if not ops:
        return ok("interrupted", "no interrupted setup, undo or clean")
    running = False
    try:
        with StorageLock(layout.lock_path, timeout=0):
            pass
    except HpcenvError:
        running = True
    except OSError:
        pass
    commands = {
        "setup": "hpcenv setup",
        "undo": "hpcenv setup --undo",
        "clean": "hpcenv clean --yes",
    }
    fix = " && ".join(commands.get(op) or _resume_command(layout, op) for op in ops)
    detail = f"interrupted: {', '.join(ops)}"
    if running:
        return Check("interrupted", Status.WARN, detail + " (another hpcenv is running now)", fix)
    half_moved = any(op in ("setup", "undo") for op in ops)
    return Check("interrupted", Status.FAIL if half_moved else Status.WARN, detail, fix)


def _resume_command(layout: Layout, op: str) -> str:
    """The command that finishes an interrupted operation: a repair by re-running it on its
    env (named in its journal), an env create/delete by any env command (`list`)."""
    import json

    if op.startswith("env-"):
        return "hpcenv list"
    if op.startswith("repair-"):
        try:
            with open(layout.journal_dir / f"{op}.jsonl", encoding="utf-8") as f:
                prefix = json.loads(f.readline()).get("prefix")
        except (OSError, ValueError, AttributeError):
            prefix = None
        if isinstance(prefix, str):
            return f"hpcenv repair {q(prefix)}"
    return f"hpcenv {op}"


def world_writable(layout: Layout, prefixes: Mapping[Path, str | None]) -> Check:
    """Any file or directory of ours, inside an env or a cache, that anyone may write (a
    package archive's 0666 file, a chmod -R): anyone could plant code the owner runs."""
    from hpcenv.perms import world_writable as find_world_writable

    trees = [*prefixes, *layout.caches().values()]  # the rattler cache holds the packages
    tops = [layout.cache_root, layout.envs_dir]  # the directories themselves, not below
    bad = [p for p in tops if _world_writable_dir(p)]
    roots: list[Path] = []
    for tree in dict.fromkeys(trees):
        found = list(find_world_writable([tree]))
        if found:
            roots.append(tree)
            bad += found
    bad = list(dict.fromkeys(bad))
    if not bad:
        return ok("world-writable", "nothing in the envs and caches is world-writable")
    shown = ", ".join(str(p) for p in bad[:5]) + (
        f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    )
    if len(bad) <= 10:
        fix = "chmod o-w " + " ".join(q(p) for p in bad)
    else:
        fix = " && ".join(
            [f"chmod o-w {q(p)}" for p in tops if p in bad]
            + [f"find {q(r)} -perm -o+w ! -type l -exec chmod o-w {{}} +" for r in roots]
        )
    return Check("world-writable", Status.FAIL, f"anyone can plant code in: {shown}", fix)


def _world_writable_dir(path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & 0o002) and st.st_uid == os.geteuid()


def gpu_driver(
    settings: Settings, prefixes: Mapping[Path, str | None], environ: Mapping[str, str]
) -> Check:
    if not environ.get("SLURM_JOB_ID"):
        return ok("gpu-driver", "not checked: not inside a SLURM job")
    from hpcenv import gpu
    from hpcenv.cuda_driver import detect_cuda_driver

    driver = detect_cuda_driver()
    if driver is None:
        return ok("gpu-driver", "not checked: no CUDA driver on this node")
    from hpcenv import engine

    too_old, checked = [], 0
    for prefix, name in prefixes.items():
        report = gpu.gpu_report(
            engine.installed_packages(prefix), driver.version, settings.gpu_packages
        )
        checked += 1
        if report.driver_status is gpu.DriverStatus.TOO_OLD:
            too_old.append((prefix, name, report))
    if not too_old:
        return ok("gpu-driver", f"driver CUDA {driver.version} satisfies {checked} env(s)")
    detail = "; ".join(
        f"{n or p} needs CUDA >= {r.required_cuda} ({r.required_by})" for p, n, r in too_old
    )
    fix = " && ".join(f"hpcenv install {q(n or p)} --cuda {driver.version}" for p, n, _ in too_old)
    return Check(
        "gpu-driver",
        Status.FAIL,
        f"{detail}, but this node's driver has CUDA {driver.version}",
        fix,
    )
