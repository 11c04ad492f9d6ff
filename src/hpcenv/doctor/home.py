"""Doctor checks of home and the storage area: where caches and envs live, links,
packages in the user site, and home's quota."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hpcenv.condarc import entries_in_home
from hpcenv.doctor.check import Check, Status, ok, q
from hpcenv.errors import HpcenvError
from hpcenv.settings import Settings
from hpcenv.storage import Layout, check_storage, is_within

QUOTA_WARN_PERCENT = 80.0
CACHE_VARS = ("XDG_CACHE_HOME", "PIP_CACHE_DIR", "UV_CACHE_DIR", "CONDA_PKGS_DIRS",
              "RATTLER_CACHE_DIR", "CONDA_ENVS_PATH")  # fmt: skip


def storage_area(settings: Settings, layout: Layout | None, error: str | None) -> Check:
    if layout is None:
        return Check(
            "storage", Status.FAIL, error or "no storage area", "hpcenv setup --storage DIR"
        )
    try:
        check_storage(layout, allow_home=settings.allow_home)
    except HpcenvError as exc:
        return Check("storage", Status.FAIL, exc.message, "hpcenv setup --storage DIR")
    where = "in home (allowed by allow_home)" if is_within(layout.root, layout.home) else "ok"
    return ok("storage", f"{layout.root} ({settings.storage_source}): {where}")


def redirect(layout: Layout) -> Check:
    problems, fail = [], False
    for name in layout.redirect:
        home_path, target = layout.in_home(name), layout.in_storage(name)
        if os.path.islink(home_path):
            if not os.path.exists(home_path):
                continue  # dangling: the dangling-links check says it
            if os.path.realpath(home_path) != os.path.realpath(target):
                if is_within(home_path, layout.home):
                    problems.append(f"~/{name} links to {os.readlink(home_path)}, inside home")
                    fail = True
            continue
        if home_path.is_dir():
            problems.append(f"~/{name} is a directory in home")
            fail = True
        elif not os.path.lexists(home_path):
            problems.append(f"~/{name} is not set up yet")
    if not problems:
        return ok("redirect", f"{', '.join('~/' + n for n in layout.redirect)} point to storage")
    status = Status.FAIL if fail else Status.WARN
    return Check(
        "redirect", status, "; ".join(problems) + ": caches would fill home", "hpcenv setup"
    )


def dangling_links(layout: Layout) -> Check:
    fail, warn = [], []
    for name in layout.redirect:
        home_path = layout.in_home(name)
        if os.path.islink(home_path) and not os.path.exists(home_path):
            fail.append(home_path)
            continue
        try:
            entries = list(os.scandir(home_path))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink() and not os.path.exists(entry.path):
                warn.append(Path(entry.path))
    if fail:
        detail = ", ".join(f"{p} -> {os.readlink(p)}" for p in fail) + " is a dangling symlink"
        fixes = [
            f"mkdir -p {q(os.readlink(p))}"
            if os.path.realpath(p) == os.path.realpath(layout.in_storage(p.name))
            else f"rm {q(p)} && hpcenv setup"
            for p in fail
        ]
        return Check("dangling-links", Status.FAIL, detail, " && ".join(fixes))
    if warn:
        detail = ", ".join(f"{p} -> {os.readlink(p)}" for p in warn) + ": dangling"
        return Check("dangling-links", Status.WARN, detail, "rm " + " ".join(q(p) for p in warn))
    return ok("dangling-links", "no dangling symlinks among the redirected directories")


def caches_in_home(layout: Layout, environ: Mapping[str, str]) -> Check:
    problems, fixes = [], []
    for var in CACHE_VARS:
        for value in (environ.get(var) or "").split(","):
            value = value.strip()
            if value and is_within(Path(os.path.expanduser(value)), layout.home):
                problems.append(f"${var}={value} is in home")
                fixes.append(f"unset {var}")
                break
    for e in entries_in_home(layout.home, environ).entries:
        problems.append(f"{e.condarc}: {e.key} entry {e.entry} is in home")
        fixes.append(f"conda config --file {q(e.condarc)} --remove {e.key} {q(e.entry)}")
    if is_within(layout.package_cache.parent, layout.home):
        problems.append(f"the package cache {layout.package_cache} is in home")
    if not problems:
        return ok("caches-in-home", "no cache is configured to live in home")
    fix = " && ".join(fixes) if fixes else "hpcenv setup"
    return Check("caches-in-home", Status.WARN, "; ".join(problems), fix)


def envs_in_home(layout: Layout, prefixes: Mapping[Path, str | None], allow: bool) -> Check:
    inside = [(p, n) for p, n in prefixes.items() if p.exists() and is_within(p, layout.home)]
    if not inside:
        return ok("envs-in-home", "no environment is in home")
    detail = ", ".join(str(p) for p, _ in inside) + " in home (small quota)"
    if allow:
        return ok("envs-in-home", detail + "; allowed by allow_home")
    if all(is_within(p, layout.envs_dir) for p, _ in inside):
        return Check("envs-in-home", Status.WARN, detail, "hpcenv setup")
    p, n = inside[0]
    name = n or p.name
    fix = (
        f"hpcenv export {q(p)} > {q(name + '.yml')} && hpcenv create {q(name)} -f "
        f"{q(name + '.yml')} && rm -rf {q(p)}"
    )
    return Check("envs-in-home", Status.WARN, detail, fix)


def user_site(home: Path, settings: Settings, environ: Mapping[str, str]) -> Check:
    base = Path(environ.get("PYTHONUSERBASE") or home / ".local")
    found = []
    for site in sorted(base.glob("lib/python*/site-packages")):
        try:
            if any(site.iterdir()):
                found.append(site)
        except OSError:
            continue
    if not found:
        return ok("user-site", "no packages in ~/.local (user site)")
    where = ", ".join(str(s) for s in found)
    if settings.no_user_site:
        detail = (
            f"packages in {where} leak into every env's python under `conda activate`; "
            "hpcenv sets PYTHONNOUSERSITE=1 in its activation by default (no_user_site)"
        )
    else:
        detail = f"packages in {where} leak into every env's python (no_user_site is off)"
    return Check("user-site", Status.WARN, detail, "export PYTHONNOUSERSITE=1")


def home_quota(layout: Layout, settings: Settings) -> Check:
    from hpcenv.quota import home_quota as find_quota
    from hpcenv.report import human_bytes

    quota = find_quota(layout.home, settings.home_quota)
    if quota is None:
        return ok("home-quota", "no home quota known (no `quota` answer, no home_quota setting)")
    parts = []
    worst = 0.0
    if quota.used_percent is not None:
        parts.append(
            f"{human_bytes(quota.used_bytes)} of {human_bytes(quota.limit_bytes)} "
            f"({quota.used_percent:.0f}%)"
        )
        worst = quota.used_percent
    if quota.files_percent is not None:
        parts.append(f"{quota.files} of {quota.files_limit} files ({quota.files_percent:.0f}%)")
        worst = max(worst, quota.files_percent)
    detail = f"home uses {', '.join(parts)} [{quota.source}]"
    if worst >= 100:
        return Check("home-quota", Status.FAIL, detail + ": over quota", "hpcenv usage")
    if worst >= QUOTA_WARN_PERCENT:
        return Check("home-quota", Status.WARN, detail, "hpcenv usage")
    return ok("home-quota", detail)


def jupyter_kernels(environ: Mapping[str, str]) -> Check:
    """Jupyter kernels hpcenv wrote whose env is gone (they fail to start)."""
    from hpcenv.kernel import list_kernels, removal_command

    found = list_kernels(environ)
    gone = [k for k in found.kernels if k.env_exists is False]
    if not gone:
        return ok("jupyter-kernels", f"{len(found.kernels)} hpcenv kernel(s), each env present")
    detail = "; ".join(f"{k.name} points to {k.prefix}, which is gone" for k in gone)
    return Check(
        "jupyter-kernels",
        Status.WARN,
        f"{detail}: Jupyter lists it, but it cannot start",
        " && ".join(removal_command(k) for k in gone),
    )
