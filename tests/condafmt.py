"""Environments hpcenv did not make, in the formats their makers write.

`rattler_env` is what a plain py-rattler script leaves (records with no requested spec, an
empty history). `conda_env` rewrites such a prefix the way conda 26 writes it: the channel
with its subdir (`.../chan/linux-64`), `requested_spec`, `package_tarball_full_path`,
noarch:python records whose `paths_data` holds package-relative paths
(`site-packages/hello/__init__.py`) while `files` holds the installed ones, and a
`conda-meta/history` in conda's format.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import rattler


def rattler_env(prefix: Path, channel_url: str, specs: list[str], cache: Path) -> None:
    """What `rattler.solve` + `rattler.install` make, nothing more (as pixi or a script)."""

    async def main():
        records = await rattler.solve(
            [channel_url], specs, gateway=rattler.Gateway(cache_dir=cache / "repodata")
        )
        await rattler.install(records, prefix, cache_dir=cache / "pkgs", show_progress=False)

    asyncio.run(main())


def conda_history_entry(cmd: str, added: list[str], specs_line: str | None, when: str) -> str:
    lines = [f"==> {when} <==", f"# cmd: {cmd}", "# conda version: 26.7.1"]
    lines += [f"+{d}" for d in added]
    if specs_line:
        lines.append(specs_line)
    return "\n".join(lines) + "\n"


def conda_env(
    prefix: Path,
    channel_url: str,
    specs: list[str],
    cache: Path,
    *,
    history: str | None = "specs",  # "specs" | "cmd" (no specs lines) | None (no history)
    requested_spec: bool = True,
) -> None:
    """A prefix as `conda create -p PREFIX SPECS -c CHANNEL` leaves it."""
    rattler_env(prefix, channel_url, specs, cache)
    names = {s.split()[0].split("=")[0] for s in specs}
    added = []
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        data = json.loads(path.read_text())
        subdir = data["subdir"]
        data["channel"] = channel_url.rstrip("/") + "/" + subdir
        data["package_tarball_full_path"] = str(cache / "pkgs" / data["fn"])
        data.pop("requested_specs", None)
        if requested_spec and data["name"] in names:
            data["requested_spec"] = data["name"]
        if data.get("noarch") == "python":
            for entry in data["paths_data"]["paths"]:
                entry["_path"] = "site-packages/" + entry["_path"].split("/site-packages/", 1)[1]
        path.write_text(json.dumps(data, indent=2))
        added.append(
            f"{channel_url.rstrip('/')}/{subdir}::{data['name']}-{data['version']}-{data['build']}"
        )
    cmd = f"/opt/conda/bin/conda create -p {prefix} {' '.join(specs)} -c {channel_url}"
    text = ""
    if history == "specs":
        text = conda_history_entry(cmd, added, f"# update specs: {specs!r}", "2026-01-01 10:00:00")
    elif history == "cmd":
        text = conda_history_entry(cmd, added, None, "2026-01-01 10:00:00")
    (prefix / "conda-meta" / "history").write_text(text)
