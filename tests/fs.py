"""Test helpers for real filesystems: tree snapshots, cache trees, tmpfs mounts, CLI runs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def hpcenv(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (`python -m hpcenv`)."""
    return subprocess.run(
        [sys.executable, "-m", "hpcenv", *args],
        env=env,
        capture_output=True,
        text=True,
        **kw,
    )


def hpcenv_in(h, *args: str, **env: str) -> subprocess.CompletedProcess:
    """hpcenv in a prepared home `h` (its "env"), extra variables on top, no stdin."""
    return hpcenv(*args, env={**h["env"], **env}, stdin=subprocess.DEVNULL)


def hpcenv_ok(h, *args: str, **env: str) -> subprocess.CompletedProcess:
    """As hpcenv_in, asserting exit 0."""
    result = hpcenv_in(h, *args, **env)
    assert result.returncode == 0, result.stderr
    return result


def cli_env(home: Path, storage: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HPCENV_") and k not in ("global_storage", "XDG_CONFIG_HOME")
    }
    env.update(HOME=str(home), HPCENV_STORAGE=str(storage))
    env["HPCENV_SITE_CONFIG"] = str(home.parent / "no-site.toml")
    env.update(extra)
    return env


_STAMP = re.compile(rb"conflicts/\d{8}T\d{6}")


def snapshot(*roots: Path) -> dict[bytes, tuple]:
    """Everything that matters about trees: relative path -> (type, mode, content hash or link
    target, the other paths sharing its inode). hpcenv's lock and journals are left out and
    conflict time stamps normalised, so two runs at different times compare equal."""
    out: dict[bytes, tuple] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}
    for root in roots:
        broot = os.fsencode(root)
        for dirpath, dirnames, filenames in os.walk(broot):
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                rel = os.path.join(os.path.basename(broot), os.path.relpath(path, broot))
                if b"/.hpcenv/lock" in rel or b"/.hpcenv/journal" in rel:
                    continue
                rel = _STAMP.sub(b"conflicts/STAMP", rel)
                st = os.lstat(path)
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = ("link", os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    out[rel] = ("dir", mode)
                else:
                    with open(path, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                    out[rel] = ("file", mode, digest)
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    for group in inodes.values():
        if len(group) > 1:
            for rel in group:
                out[rel] = out[rel] + (tuple(sorted(group)),)
    return out


def file_digests(root: Path) -> dict[bytes, str]:
    """Content hash of every regular file under root, by path relative to root."""
    snap = snapshot(root)
    prefix = os.path.basename(os.fsencode(root)) + b"/"
    return {k[len(prefix) :]: v[2] for k, v in snap.items() if v[0] == "file"}


def make_caches(home: Path, storage: Path, bulk: int = 0) -> None:
    """A realistic pair of caches: nested dirs, hardlinks, symlinks (also dangling), empty dirs,
    awkward names (spaces, newline, non-UTF-8), modes; storage already holding some of it."""
    cache, conda = home / ".cache", home / ".conda"
    (cache / "pip" / "http" / "a b").mkdir(parents=True)
    (cache / "empty" / "deeper").mkdir(parents=True)
    (conda / "pkgs").mkdir(parents=True)
    (cache / "pip" / "http" / "a b" / "blob").write_bytes(bytes(range(256)) * 12)
    (cache / "pip" / "http" / "same").write_text("identical on both sides\n")
    (cache / "pip" / "selfcheck.json").write_text('{"home": true}\n')
    os.link(cache / "pip" / "http" / "a b" / "blob", cache / "pip" / "hardlink-to-blob")
    os.symlink("http/a b/blob", cache / "pip" / "relative-link")
    os.symlink("/nonexistent/target", cache / "dangling-link")
    (cache / "with space.txt").write_text("space\n")
    (cache / "new\nline").write_text("newline name\n")
    with open(os.path.join(os.fsencode(cache), b"caf\xe9-latin1"), "wb") as f:
        f.write(b"not utf-8 name\n")
    secret = cache / "secret"
    secret.write_text("private\n")
    secret.chmod(0o600)
    tool = cache / "tool.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    (conda / "environments.txt").write_text("")
    (conda / "pkgs" / "urls.txt").write_text("https://example.invalid/pkg.tar.bz2\n")
    for i in range(bulk):
        d = cache / "bulk" / f"d{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(b"x" * (i % 200))
    # storage already has some of it: one identical file, one conflict, one of its own
    (storage / ".cache" / "pip" / "http").mkdir(parents=True)
    (storage / ".cache" / "pip" / "http" / "same").write_text("identical on both sides\n")
    (storage / ".cache" / "pip" / "selfcheck.json").write_text('{"storage": true}\n')
    (storage / ".cache" / "kept").mkdir()
    (storage / ".cache" / "kept" / "storage-only.txt").write_text("mine\n")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64m", inodes: int | None = None) -> Iterator[Path]:
    """A real second filesystem (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def xfs_reflink(path: Path, image: Path, size: str = "320M") -> Iterator[Path]:
    """A real XFS with reflink=1 on a loop device (root only; xfsprogs): FICLONE works there."""
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
