"""`hpcenv doctor`: what is wrong with this account's Python setup, and the command that fixes it.

`diagnose` runs every check and returns a `DoctorReport`; it raises nothing (a check that cannot
look reports WARN with why). Each `Check` has a status: OK, WARN (works, but costs quota, time or
reproducibility) or FAIL (broken now, or loses data or lets others plant code); the CLI exits 1
when any check FAILs. `fix` is the exact command that fixes it.

`diagnose(..., fix=True)` first applies the one fix that is safe to do for the user: it removes
the `conda init` block from ~/.bashrc, ~/.bash_profile and ~/.zshrc (only that block, after an
atomic backup `FILE.hpcenv-backup-<time>`), then checks.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from hpcenv.errors import HpcenvError
from hpcenv.settings import Settings
from hpcenv.storage import Layout, check_storage, is_within

# conda 4.6+ writes "conda initialize"; the first 4.6 installers wrote "conda init"
CONDA_BLOCKS = {
    b"# >>> conda initialize >>>": b"# <<< conda initialize <<<",
    b"# >>> conda init >>>": b"# <<< conda init <<<",
}
SHELL_RC_FILES = (".bashrc", ".bash_profile", ".zshrc")
QUOTA_WARN_PERCENT = 80.0
CACHE_VARS = ("XDG_CACHE_HOME", "PIP_CACHE_DIR", "UV_CACHE_DIR", "CONDA_PKGS_DIRS",
              "RATTLER_CACHE_DIR", "CONDA_ENVS_PATH")  # fmt: skip


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]
    fixed: tuple[str, ...] = ()  # what --fix changed (and where the backups are)

    @property
    def failed(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)


def _ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


# --------------------------------------------------------------------------- conda init blocks


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
    _atomic_write_bytes(backup, data, mode)
    _atomic_write_bytes(real, _without_blocks(data, blocks), mode)
    return backup


def _atomic_write_bytes(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.hpcenv-tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- the checks


def _check_storage(settings: Settings, layout: Layout | None, error: str | None) -> Check:
    if layout is None:
        return Check(
            "storage", Status.FAIL, error or "no storage area", "hpcenv setup --storage DIR"
        )
    try:
        check_storage(layout, allow_home=settings.allow_home)
    except HpcenvError as exc:
        return Check("storage", Status.FAIL, exc.message, "hpcenv setup --storage DIR")
    where = "in home (allowed by allow_home)" if is_within(layout.root, layout.home) else "ok"
    return _ok("storage", f"{layout.root} ({settings.storage_source}): {where}")


def _check_redirect(layout: Layout) -> Check:
    problems, fail = [], False
    for name in layout.redirect:
        home_path, target = layout.home_dir(name), layout.storage_dir(name)
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
        return _ok("redirect", f"{', '.join('~/' + n for n in layout.redirect)} point to storage")
    status = Status.FAIL if fail else Status.WARN
    return Check(
        "redirect", status, "; ".join(problems) + ": caches would fill home", "hpcenv setup"
    )


def _check_dangling(layout: Layout) -> Check:
    fail, warn = [], []
    for name in layout.redirect:
        home_path = layout.home_dir(name)
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
            f"mkdir -p {_q(os.readlink(p))}"
            if os.path.realpath(p) == os.path.realpath(layout.storage_dir(p.name))
            else f"rm {_q(p)} && hpcenv setup"
            for p in fail
        ]
        return Check("dangling-links", Status.FAIL, detail, " && ".join(fixes))
    if warn:
        detail = ", ".join(f"{p} -> {os.readlink(p)}" for p in warn) + ": dangling"
        return Check("dangling-links", Status.WARN, detail, "rm " + " ".join(_q(p) for p in warn))
    return _ok("dangling-links", "no dangling symlinks among the redirected directories")


def _check_caches_in_home(layout: Layout, environ: Mapping[str, str]) -> Check:
    problems, fixes = [], []
    for var in CACHE_VARS:
        for value in (environ.get(var) or "").split(","):
            value = value.strip()
            if value and is_within(Path(os.path.expanduser(value)), layout.home):
                problems.append(f"${var}={value} is in home")
                fixes.append(f"unset {var}")
                break
    for path in _condarc_paths(layout.home, environ):
        data = _read_yaml(path)
        if not isinstance(data, dict):
            continue
        for key in ("pkgs_dirs", "envs_dirs"):
            entries = data.get(key) or []
            for entry in entries if isinstance(entries, list) else []:
                if is_within(Path(os.path.expanduser(str(entry))), layout.home):
                    problems.append(f"{path}: {key} entry {entry} is in home")
                    fixes.append(f"conda config --file {_q(path)} --remove {key} {_q(entry)}")
    if is_within(layout.package_cache.parent, layout.home):
        problems.append(f"the package cache {layout.package_cache} is in home")
    if not problems:
        return _ok("caches-in-home", "no cache is configured to live in home")
    fix = " && ".join(fixes) if fixes else "hpcenv setup"
    return Check("caches-in-home", Status.WARN, "; ".join(problems), fix)


def _check_envs_in_home(layout: Layout, prefixes: Mapping[Path, str | None], allow: bool) -> Check:
    inside = [(p, n) for p, n in prefixes.items() if p.exists() and is_within(p, layout.home)]
    if not inside:
        return _ok("envs-in-home", "no environment is in home")
    detail = ", ".join(str(p) for p, _ in inside) + " in home (small quota)"
    if allow:
        return _ok("envs-in-home", detail + "; allowed by allow_home")
    if all(is_within(p, layout.envs_dir) for p, _ in inside):
        return Check("envs-in-home", Status.WARN, detail, "hpcenv setup")
    p, n = inside[0]
    name = n or p.name
    fix = (
        f"hpcenv export {_q(p)} > {_q(name + '.yml')} && hpcenv create {_q(name)} -f "
        f"{_q(name + '.yml')} && rm -rf {_q(p)}"
    )
    return Check("envs-in-home", Status.WARN, detail, fix)


def _removal_breaks(data: bytes, blocks: list[tuple[int, int]], rc_name: str) -> bool:
    """Whether taking the blocks out leaves a file the shell no longer parses."""
    return (
        _syntax_ok(_without_blocks(data, blocks), rc_name) is False
        and _syntax_ok(data, rc_name) is not False
    )


def _check_conda_init(home: Path) -> Check:
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
                f"edit {_q(path)} and remove the conda initialize lines by hand",
            )
        if blocks:
            found.append(path)
        elif any(start in data for start in CONDA_BLOCKS):
            return Check(
                "conda-init",
                Status.WARN,
                f"{path} has a `conda initialize` block without its end marker",
                f"edit {_q(path)} and remove the conda initialize lines by hand",
            )
    if not found:
        return _ok("conda-init", "no `conda init` block in the shell startup files")
    detail = (
        f"`conda init` block in {', '.join(str(p) for p in found)}: it runs conda at every "
        'login and activates base in batch jobs; use `eval "$(hpcenv activate NAME)"`'
    )
    return Check("conda-init", Status.WARN, detail, "hpcenv doctor --fix")


def _check_user_site(home: Path, settings: Settings, environ: Mapping[str, str]) -> Check:
    base = Path(environ.get("PYTHONUSERBASE") or home / ".local")
    found = []
    for site in sorted(base.glob("lib/python*/site-packages")):
        try:
            if any(site.iterdir()):
                found.append(site)
        except OSError:
            continue
    if not found:
        return _ok("user-site", "no packages in ~/.local (user site)")
    where = ", ".join(str(s) for s in found)
    if settings.no_user_site:
        detail = (
            f"packages in {where} leak into every env's python under `conda activate`; "
            "hpcenv sets PYTHONNOUSERSITE=1 in its activation by default (no_user_site)"
        )
    else:
        detail = f"packages in {where} leak into every env's python (no_user_site is off)"
    return Check("user-site", Status.WARN, detail, "export PYTHONNOUSERSITE=1")


def _check_quota(layout: Layout, settings: Settings) -> Check:
    from hpcenv.hygiene import home_quota
    from hpcenv.report import human_bytes

    quota = home_quota(layout.home, settings.home_quota)
    if quota is None:
        return _ok("home-quota", "no home quota known (no `quota` answer, no home_quota setting)")
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
    return _ok("home-quota", detail)


def _check_registry(layout: Layout, registered: list[Path]) -> Check:
    from hpcenv.hygiene import is_env
    from hpcenv.registry import read_environments_txt, read_registry

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
    txt = _q(layout.environments_txt)
    unreadable = read_environments_txt(layout).problem
    if unreadable:
        problems.append(f"{layout.environments_txt} {unreadable}")
        fixes.append(f"mv {txt} {txt}.broken")
    for p in missing:
        problems.append(f"{p} is in environments.txt but missing")
        if not unreadable:
            fixes.append(f"grep -vxF {_q(p)} {txt} > {txt}.new; mv {txt}.new {txt}")
    for p in gone:
        problems.append(f"{p} is in hpcenv's registry but missing")
    for p in unlisted:
        problems.append(f"{p} is not in environments.txt (conda env list misses it)")
        if not unreadable:
            fixes.append(f"echo {_q(p)} >> {txt}")
    if not problems:
        return _ok("env-registry", "every registered env exists and every env is registered")
    return Check("env-registry", Status.WARN, "; ".join(problems), " && ".join(fixes) or None)


def _check_images(settings: Settings, prefixes: Mapping[Path, str | None]) -> Check:
    """Image envs: whether this node can build and mount them; mounts whose squashfuse died
    and trees of builds whose builder is gone are cleaned (`mounts.tidy`)."""
    from hpcenv import mounts
    from hpcenv.registry import is_image

    images = [p for p in prefixes if is_image(p)]
    if not images and not settings.images_default:
        return _ok("images", "no image envs")
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
    return _ok("images", detail + (f"; {said}" if said else ""))


def _check_records(prefixes: Mapping[Path, str | None]) -> Check:
    """Damaged conda-meta records: the package they describe is invisible to every tool."""
    from hpcenv import engine

    bad = []
    for prefix, name in prefixes.items():
        for d in engine.read_prefix(prefix).damaged:
            bad.append((name or str(prefix), d))
    if not bad:
        return _ok("env-records", "every package record of every env is readable")
    detail = "; ".join(f"{d.path} (package {d.name}): {d.reason}" for _, d in bad)
    fix = " && ".join(f"hpcenv install {_q(env)} {_q(d.name)}" for env, d in bad)
    return Check(
        "env-records", Status.FAIL, detail + " (re-create the env or reinstall the package)", fix
    )


def _check_package_cache(layout: Layout) -> Check:
    """Extracted packages in the cache with a missing or truncated file: envs linked from
    them are damaged, and new installs would link the damage."""
    from hpcenv import engine
    from hpcenv.hygiene import package_dir

    damaged = []
    try:
        entries = sorted(os.scandir(package_dir(layout)), key=lambda e: e.name)
    except OSError:
        entries = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        why = engine.check_cache_entry(Path(entry.path))
        if why is not None:
            damaged.append(f"{entry.name}: {why}")
    if not damaged:
        return _ok("package-cache", f"{len(entries)} cached packages checked, none damaged")
    return Check(
        "package-cache",
        Status.WARN,
        "damaged packages in the cache (the next install extracts them again; envs that "
        "link them need the package reinstalled): " + "; ".join(damaged),
        "hpcenv clean --yes",
    )


def _check_leftovers(layout: Layout) -> Check:
    from hpcenv.hygiene import dead_leftovers, trash_dir

    found = [str(p) for p in dead_leftovers(layout)]
    if os.path.isdir(trash_dir(layout)) and any(Path(trash_dir(layout)).iterdir()):
        found.append(str(trash_dir(layout)))
    if not found:
        return _ok("leftovers", "no leftovers of interrupted creates or cleans")
    return Check(
        "leftovers",
        Status.WARN,
        f"leftovers of an interrupted create or clean: {', '.join(found)}",
        "hpcenv clean --yes",
    )


def _check_pending_update(prefixes: Mapping[Path, str | None]) -> Check:
    from hpcenv.envs import META_DIR

    pending = [(p, n) for p, n in prefixes.items() if (p / META_DIR / "pending.json").exists()]
    if not pending:
        return _ok("pending-update", "no interrupted install or remove")
    detail = "interrupted install/remove in " + ", ".join(str(p) for p, _ in pending)
    fix = " && ".join(f"hpcenv install {_q(n or p)}" for p, n in pending)
    return Check("pending-update", Status.FAIL, detail, fix)


def _check_journals(layout: Layout) -> Check:
    from hpcenv.journal import Journal, StorageLock

    ops = Journal.pending(layout.journal_dir)
    if not ops:
        return _ok("interrupted", "no interrupted setup, undo or clean")
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
    fix = " && ".join(commands.get(op, f"hpcenv {op}") for op in ops)
    detail = f"interrupted: {', '.join(ops)}"
    if running:
        return Check("interrupted", Status.WARN, detail + " (another hpcenv is running now)", fix)
    half_moved = any(op in ("setup", "undo") for op in ops)
    return Check("interrupted", Status.FAIL if half_moved else Status.WARN, detail, fix)


def _check_world_writable(layout: Layout, prefixes: Mapping[Path, str | None]) -> Check:
    """Any file or directory of ours, inside an env or a cache, that anyone may write (a
    package archive's 0666 file, a chmod -R): anyone could plant code the owner runs."""
    from hpcenv.hygiene import cache_dirs
    from hpcenv.perms import world_writable

    trees = [*prefixes, *cache_dirs(layout).values()]  # the rattler cache holds the packages
    tops = [layout.cache_root, layout.envs_dir]  # the directories themselves, not below
    bad = [p for p in tops if _world_writable_dir(p)]
    roots: list[Path] = []
    for tree in dict.fromkeys(trees):
        found = list(world_writable([tree]))
        if found:
            roots.append(tree)
            bad += found
    bad = list(dict.fromkeys(bad))
    if not bad:
        return _ok("world-writable", "nothing in the envs and caches is world-writable")
    shown = ", ".join(str(p) for p in bad[:5]) + (
        f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    )
    if len(bad) <= 10:
        fix = "chmod o-w " + " ".join(_q(p) for p in bad)
    else:
        fix = " && ".join(
            [f"chmod o-w {_q(p)}" for p in tops if p in bad]
            + [f"find {_q(r)} -perm -o+w ! -type l -exec chmod o-w {{}} +" for r in roots]
        )
    return Check("world-writable", Status.FAIL, f"anyone can plant code in: {shown}", fix)


def _world_writable_dir(path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & 0o002) and st.st_uid == os.geteuid()


def _condarc_paths(home: Path, environ: Mapping[str, str]) -> list[Path]:
    from hpcenv.registry import condarc_paths

    return condarc_paths(home, environ)


_UNREADABLE = object()


def _read_yaml(path: Path):
    """The parsed file (None when empty or only comments), or `_UNREADABLE`."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return _UNREADABLE


def _is_anaconda_channel(channel: str) -> bool:
    return channel == "defaults" or "repo.anaconda.com" in channel or channel.startswith("pkgs/")


def _check_condarc(home: Path, settings: Settings, environ: Mapping[str, str]) -> Check:
    problems, fixes = [], []
    for path in _condarc_paths(home, environ):
        data = _read_yaml(path)
        if data is _UNREADABLE:
            problems.append(f"{path} is not valid YAML")
            continue
        channels = data.get("channels") if isinstance(data, dict) else None
        for channel in channels if isinstance(channels, list) else []:
            if _is_anaconda_channel(str(channel)):
                problems.append(f"{path} lists the `{channel}` channel")
                fix = f"conda config --file {_q(path)} --remove channels {_q(channel)}"
                if "conda-forge" not in channels:
                    fix += f" && conda config --file {_q(path)} --add channels conda-forge"
                fixes.append(fix)
    for channel in settings.channels:
        if _is_anaconda_channel(channel):
            problems.append(f"hpcenv's channels setting lists `{channel}`")
            fixes.append('set channels = ["conda-forge"] in ~/.config/hpcenv/config.toml')
    if not problems:
        return _ok("condarc-defaults", "no Anaconda `defaults` channel configured")
    detail = "; ".join(problems)
    if fixes:
        detail += (
            ": Anaconda's terms require a paid licence for many organisations; use conda-forge"
        )
    return Check("condarc-defaults", Status.WARN, detail, " && ".join(fixes) or None)


def _check_sbatch(environ: Mapping[str, str]) -> Check:
    exe = shutil.which("sbatch", path=environ.get("PATH"))
    if exe:
        from hpcenv.jobs import scheduler_state

        state = scheduler_state(environ)
        if state is None:
            return _ok("sbatch", f"sbatch found: {exe} (scontrol is missing: SLURM not asked)")
        if state.answers:
            return _ok("sbatch", f"sbatch found: {exe}; SLURM answers ({state.detail})")
        return Check(
            "sbatch",
            Status.WARN,
            f"SLURM does not answer ({state.detail}): `hpcenv submit` cannot submit now; "
            "check with `sinfo`",
        )
    return Check(
        "sbatch",
        Status.WARN,
        "sbatch is not on PATH: `hpcenv submit` cannot submit from here "
        "(`hpcenv jobscript` still writes scripts)",
    )


def _check_modules(environ: Mapping[str, str]) -> Check:
    for var in ("LMOD_CMD", "MODULESHOME"):
        if environ.get(var):
            return _ok("modules", f"environment modules available (${var}={environ[var]})")
    return Check(
        "modules",
        Status.WARN,
        "no environment modules ($LMOD_CMD and $MODULESHOME unset): `module load` lines of "
        "job scripts will fail here",
    )


def _check_gpu(
    settings: Settings, prefixes: Mapping[Path, str | None], environ: Mapping[str, str]
) -> Check:
    if not environ.get("SLURM_JOB_ID"):
        return _ok("gpu-driver", "not checked: not inside a SLURM job")
    from hpcenv import gpu

    driver = gpu.detect_cuda_driver()
    if driver is None:
        return _ok("gpu-driver", "not checked: no CUDA driver on this node")
    from hpcenv import engine

    too_old, checked = [], 0
    for prefix, name in prefixes.items():
        report = gpu.gpu_report(
            engine.installed_packages(prefix), driver.version, settings.gpu_packages
        )
        checked += 1
        if report.driver_status == "too_old":
            too_old.append((prefix, name, report))
    if not too_old:
        return _ok("gpu-driver", f"driver CUDA {driver.version} satisfies {checked} env(s)")
    detail = "; ".join(
        f"{n or p} needs CUDA >= {r.required_cuda} ({r.required_by})" for p, n, r in too_old
    )
    fix = " && ".join(f"hpcenv install {_q(n or p)} --cuda {driver.version}" for p, n, _ in too_old)
    return Check(
        "gpu-driver",
        Status.FAIL,
        f"{detail}, but this node's driver has CUDA {driver.version}",
        fix,
    )


# --------------------------------------------------------------------------- run them all


def diagnose(
    settings: Settings, *, environ: Mapping[str, str] | None = None, fix: bool = False
) -> DoctorReport:
    """Run every check (after the safe fixes when `fix`); never raises for what it finds."""
    from hpcenv.storage import layout_from

    env = os.environ if environ is None else environ
    home = settings.home
    fixed: list[str] = []
    if fix:
        for name in SHELL_RC_FILES:
            path = home / name
            try:
                backup = remove_conda_blocks(path) if path.is_file() else None
            except BlockInsideCode:
                continue  # the conda-init check says so
            except OSError as exc:
                fixed.append(f"could not remove the conda initialize block from {path}: {exc}")
                continue
            if backup is not None:
                fixed.append(f"removed the conda initialize block from {path} (backup: {backup})")

    layout, error = None, None
    try:
        layout = layout_from(settings)
    except HpcenvError as exc:
        error = exc.message
    checks: list[Check] = [_check_storage(settings, layout, error)]
    run: list[tuple[str, Callable[[], Check]]] = []
    if layout is not None:
        from hpcenv.hygiene import all_known_prefixes, is_env, registered_in_environments_txt

        try:
            prefixes = all_known_prefixes(layout)
        except OSError:
            prefixes = {}  # the registry checks below say what cannot be read
        existing = {p: n for p, n in prefixes.items() if is_env(p)}
        run += [
            ("redirect", lambda: _check_redirect(layout)),
            ("dangling-links", lambda: _check_dangling(layout)),
            ("caches-in-home", lambda: _check_caches_in_home(layout, env)),
            ("envs-in-home", lambda: _check_envs_in_home(layout, existing, settings.allow_home)),
        ]
    run += [
        ("conda-init", lambda: _check_conda_init(home)),
        ("user-site", lambda: _check_user_site(home, settings, env)),
    ]
    if layout is not None:
        run += [
            ("home-quota", lambda: _check_quota(layout, settings)),
            (
                "env-registry",
                lambda: _check_registry(layout, registered_in_environments_txt(layout)),
            ),
            ("leftovers", lambda: _check_leftovers(layout)),
            ("pending-update", lambda: _check_pending_update(existing)),
            ("env-records", lambda: _check_records(existing)),
            ("package-cache", lambda: _check_package_cache(layout)),
            ("interrupted", lambda: _check_journals(layout)),
            ("world-writable", lambda: _check_world_writable(layout, existing)),
            ("images", lambda: _check_images(settings, existing)),
        ]
    run += [
        ("condarc-defaults", lambda: _check_condarc(home, settings, env)),
        ("sbatch", lambda: _check_sbatch(env)),
        ("modules", lambda: _check_modules(env)),
    ]
    if layout is not None:
        run.append(("gpu-driver", lambda: _check_gpu(settings, existing, env)))
    for name, check in run:
        try:
            checks.append(check())
        except (OSError, ValueError, HpcenvError) as exc:
            message = exc.message if isinstance(exc, HpcenvError) else str(exc)
            checks.append(Check(name, Status.WARN, f"could not check: {message}"))
    return DoctorReport(tuple(checks), tuple(fixed))
