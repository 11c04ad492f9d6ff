"""Prefixes hpcenv did not make."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A prefix made by a plain py-rattler script, as pixi or a user's own script makes one: no
# etc/hpcenv, nothing registered.
RATTLER_SCRIPT = """
import asyncio, os, sys
import rattler
cache, prefix, channels, specs = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
async def main():
    records = await rattler.solve(
        sources=[rattler.Channel(c) for c in channels],
        specs=specs,
        gateway=rattler.Gateway(cache_dir=os.path.join(cache, "repodata")),
        platforms=[str(rattler.Subdir.current()), "noarch"],
        virtual_packages=rattler.VirtualPackage.detect(),  # __glibc: the real python needs it
    )
    await rattler.install(records, prefix, cache_dir=os.path.join(cache, "pkgs"))
asyncio.run(main())
sys.stdout.flush()
os._exit(0)  # rattler's threads may crash interpreter shutdown (ENGINE-NOTES)
"""


def rattler_prefix(prefix: Path, channels: list[str], *specs: str) -> Path:
    r = subprocess.run(
        [sys.executable, "-c", RATTLER_SCRIPT, str(prefix.parent / ".rattler-cache"), str(prefix),
         ",".join(channels), *specs],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (prefix / "conda-meta").is_dir() and not (prefix / "etc" / "hpcenv").exists()
    return prefix
