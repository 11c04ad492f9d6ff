"""Packs and node-local copies: `pack` makes a conda-pack archive in storage, named after the
env's identity (its real path) and content, reused while the env is unchanged; a new pack
never deletes an old one (a queued job may still stage it): only `hpcenv clean` removes
packs, and never one that the script of a queued or running job names. `stage` unpacks a
pack onto node-local disk (inside an allocation: once per node).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hpcenv.errors import OperationError, UsageError
from hpcenv.jobs.script import stage_commands, stage_root
from hpcenv.settings import Settings
from hpcenv.storage import Layout


@dataclass(frozen=True)
class PackResult:
    path: str
    reused: bool
    bytes: int
    key: str


def pack_id(prefix: Path) -> str:
    """The env's identity: its real path (two envs named `a` in different places differ)."""
    return hashlib.sha256(os.fsencode(os.path.realpath(prefix))).hexdigest()[:12]


def pack_key(prefix: Path) -> str:
    """Changes whenever the env's packages change: conda's (conda-meta), pip's (the entries of
    site-packages) or hpcenv's own files in it. The prefix is part of it: a pack holds it."""
    h = hashlib.sha256(f"{prefix}\n".encode())
    for pattern in ("conda-meta/*", "etc/hpcenv/*", "lib/python*/site-packages/*"):
        for path in sorted(prefix.glob(pattern)):
            if path.name == "__pycache__":  # changes on import, not on install
                continue
            st = path.lstat()
            rel = path.relative_to(prefix)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def pack_name(name: str, prefix: Path, key: str) -> str:
    """`NAME-ID-KEY.tar.gz`: readable name, identity (`pack_id`), content (`pack_key`)."""
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:64] or "env"
    return f"{label}-{pack_id(prefix)}-{key}.tar.gz"


def pack(prefix: Path, name: str, packs_dir: Path, out: Path | None = None) -> PackResult:
    """A conda-pack archive of the env, cached in `packs_dir`, reused while unchanged. Older
    packs stay: job scripts already queued may name them (`hpcenv clean` judges them)."""
    key = pack_key(prefix)
    packs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cached = packs_dir / pack_name(name, prefix, key)
    reused = cached.exists()
    if not reused:
        import conda_pack

        tmp = packs_dir / f".{cached.name[: -len('.tar.gz')]}.tmp-{os.getpid()}.tar.gz"
        try:
            conda_pack.pack(prefix=str(prefix), output=str(tmp), force=True, verbose=False)
        except conda_pack.CondaPackException as exc:
            tmp.unlink(missing_ok=True)
            raise OperationError(
                f"conda-pack cannot pack {prefix}: {' '.join(str(exc).split())[:300]}"
            ) from None
        os.replace(tmp, cached)
    if out is not None and Path(out).resolve() != cached.resolve():
        shutil.copyfile(cached, out)
        return PackResult(str(out), reused, cached.stat().st_size, key)
    return PackResult(str(cached), reused, cached.stat().st_size, key)


def default_stage_target(stage_dir: str | None, name: str, job: str) -> Path:
    """Where `hpcenv stage` puts the env when not told: STAGE_DIR/hpcenv-JOB/NAME."""
    if stage_dir is None:
        root = tempfile.gettempdir()
    else:
        stage_root(stage_dir)  # validates
        root = os.path.expandvars(stage_dir)
        if "$" in root:
            raise UsageError(
                f"stage_dir {stage_dir!r} names a variable that is not set here",
                hint="pass --to DIR",
            )
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "env"
    return Path(root) / f"hpcenv-{job}" / label


def stage(pack_file: Path, to: Path, activate_sh: str) -> Path:
    """Unpack a pack into `to`, fix its prefix and write `activate_sh` as its static script;
    inside an allocation on every node (the same lines as a job script's)."""
    q = shlex.quote
    to = Path(os.path.abspath(to))
    lines = stage_commands(
        [
            f"HPCENV_PACK={q(str(pack_file))}",
            f"HPCENV_STAGED={q(str(to))}",
            f"HPCENV_STAGE_DIR={q(str(to.parent))}",
        ],
        activate_sh,
    )
    env = dict(os.environ)
    if not (env.get("SLURM_JOB_ID") and shutil.which("srun")):
        env["SLURM_NNODES"] = "1"  # not in an allocation: here only
    result = subprocess.run(
        ["bash", "-c", "set -eu\n" + "\n".join(lines)], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise OperationError(
            f"staging {pack_file} into {to} failed: {result.stderr.strip()[-300:]}"
        )
    return to


def pack_env(layout: Layout, env: str, out: Path | None = None) -> PackResult:
    """`hpcenv pack`: the env checked for use (`trust.resolve_for_use`), then packed."""
    from hpcenv.trust import resolve_for_use

    usable = resolve_for_use(layout, env)
    return pack(usable.prefix, usable.name or usable.prefix.name, layout.packs_dir, out)


def stage_env(layout: Layout, settings: Settings, env: str, to: Path | None = None) -> Path:
    """`hpcenv stage`: the env checked for use (its python runs conda-unpack on every node),
    packed, and unpacked at `to` (default: the site's stage_dir, else $TMPDIR or /tmp, under
    hpcenv-JOB/NAME); returns the staged prefix."""
    from hpcenv.activate import static_script
    from hpcenv.trust import resolve_for_use

    usable = resolve_for_use(layout, env)
    label = usable.name or usable.prefix.name
    job = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    target = Path(os.path.abspath(to or default_stage_target(settings.stage_dir, label, job)))
    activate_sh = static_script(target, name=label, no_user_site=settings.no_user_site)
    packed = pack(usable.prefix, label, layout.packs_dir)
    return stage(Path(packed.path), target, activate_sh)
