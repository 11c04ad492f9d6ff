"""conda's own formats in a prefix, read as conda means them and written as conda writes them.

`conda-meta/history` is a list of entries (conda/history.py):

    ==> 2026-11-26 17:09:00 <==
    # cmd: /opt/conda/bin/conda install -n x numtool
    # conda version: 26.7.1
    -conda-forge/linux-64::libnum-2.0-0
    +conda-forge/linux-64::libnum-1.0-0
    +conda-forge/linux-64::numtool-1.0-0
    # update specs: ['numtool']

What the user asked for is the `# update specs:` (also `install`/`create`/`neutered`) and
`# remove specs:` lines, applied in order; for an entry without them (old conda, mamba), the
`# cmd:` line's package arguments stand in. hpcenv writes the same format (with `# hpcenv
version:` instead of `# conda version:`), so conda's `remove`, `env export --from-history` and
`list --revisions` keep the user's intent.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcenv.fsops import atomic_write

if TYPE_CHECKING:
    from hpcenv.engine import PackageInfo

SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64",
           "win-64", "win-arm64", "linux-32", "win-32")  # fmt: skip
UPDATE_ACTIONS = ("update", "install", "create", "neutered")
REMOVE_ACTIONS = ("remove", "uninstall")
_SEP = re.compile(r"==>\s*(.+?)\s*<==")
_SPECS = re.compile(r"#\s*(\w+)\s*specs:\s*(.+)?")
_CMD = re.compile(r"#\s*cmd:\s*(.+)")
# options of conda/mamba create|install|remove that take a value (the rest are flags)
_VALUE_OPTIONS = {"-n", "--name", "-p", "--prefix", "-c", "--channel", "-f", "--file",
                  "--solver", "--repodata-fn", "--platform", "--subdir", "--revision",
                  "--clone", "--experimental", "-r", "--root-prefix", "--rc-file",
                  "--category", "--trust-level"}  # fmt: skip


def spec_name(spec: str) -> str | None:
    """The package name of a spec in another tool's file, as rattler reads it (through the
    engine); None for one it cannot read (such a line is skipped, never fatal)."""
    from hpcenv.engine import spec_name_or_none

    return spec_name_or_none(spec)


# --------------------------------------------------------------------------- channels


def channel_base(channel: str, subdir: str | None = None) -> str:
    """A channel URL without its trailing slash and subdir: conda stores
    `https://conda.anaconda.org/conda-forge/linux-64`, rattler `.../conda-forge/`."""
    text = (channel or "").rstrip("/")
    last = text.rsplit("/", 1)[-1]
    if "/" in text and (last == subdir or last in SUBDIRS):
        text = text.rsplit("/", 1)[0]
    return text


def channel_short(channel: str, subdir: str | None = None) -> str:
    """The name a user knows a channel by: `conda-forge` for .../conda-forge, else the last
    part of a URL or path."""
    return channel_base(channel, subdir).rsplit("/", 1)[-1]


def canonical_channel(channel: str, subdir: str | None = None) -> str:
    """conda's canonical name: `conda-forge` for anaconda.org channels, else the URL."""
    base = channel_base(channel, subdir)
    for alias in ("https://conda.anaconda.org/", "http://conda.anaconda.org/"):
        if base.startswith(alias):
            return base[len(alias) :]
    return base


def dist_string(name: str, version: str, build: str, channel: str, subdir: str) -> str:
    return f"{canonical_channel(channel, subdir)}/{subdir}::{name}-{version}-{build}"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class HistoryEntry:
    date: str
    cmd: tuple[str, ...]
    update_specs: tuple[str, ...] = ()
    remove_specs: tuple[str, ...] = ()
    has_spec_lines: bool = False

    @property
    def tool(self) -> str | None:
        if not self.cmd:
            return None
        exe = os.path.basename(self.cmd[0])
        if exe.startswith("hpcenv") or (len(self.cmd) > 2 and self.cmd[1:3] == ("-m", "hpcenv")):
            return "hpcenv"
        if "mamba" in exe:
            return "mamba"
        if "conda" in exe or exe in ("python", "python3"):
            return "conda"
        return exe or None


def read_history(prefix: Path) -> list[HistoryEntry]:
    """The entries of conda-meta/history (lenient: unreadable or odd lines are skipped)."""
    try:
        text = (Path(prefix) / "conda-meta" / "history").read_text(
            encoding="utf-8", errors="replace"
        )
    except OSError:
        return []
    entries: list[dict] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _SEP.match(line)
        if m:
            entries.append({"date": m.group(1), "cmd": (), "update": [], "remove": [], "s": False})
            continue
        if not entries or not line.startswith("#"):
            continue
        entry = entries[-1]
        m = _CMD.match(line)
        if m:
            entry["cmd"] = tuple(m.group(1).split())
            continue
        m = _SPECS.match(line)
        if m:
            action, specs = m.group(1), _parse_specs(m.group(2) or "")
            if action in UPDATE_ACTIONS:
                entry["update"] += specs
                entry["s"] = True
            elif action in REMOVE_ACTIONS:
                entry["remove"] += specs
                entry["s"] = True
    return [
        HistoryEntry(e["date"], e["cmd"], tuple(e["update"]), tuple(e["remove"]), e["s"])
        for e in entries
    ]


def _parse_specs(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return []
        specs = [str(s) for s in value] if isinstance(value, (list, tuple)) else []
    else:  # conda < 4.5: "python>=3.5.1,jupyter >=1.0.0,<2.0"
        specs = []
        for part in text.split(","):
            if re.match(r"^\s*[<>=!~]", part) and specs:
                specs[-1] += "," + part
            else:
                specs.append(part.strip())
    return [s for s in specs if s and not s.endswith("@")]


def cmd_specs(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(update | remove | None, the package arguments) of a conda/mamba command line."""
    args = list(argv[1:])
    action = None
    specs: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            if arg in _VALUE_OPTIONS:
                skip = True
            elif arg == "--all":
                return None, []
            continue
        if action is None:
            if arg in ("create", "install", "update", "upgrade"):
                action = "update"
            elif arg in ("remove", "uninstall"):
                action = "remove"
            else:
                return None, []  # env create, list, run, ...: no package arguments
            continue
        specs.append(arg)
    return action, specs


def first_tool(prefix: Path) -> str | None:
    for entry in read_history(prefix):
        if entry.tool:
            return entry.tool
    return None


def requested_from_history(
    entries: Iterable[HistoryEntry], base: dict[str, str] | None = None
) -> tuple[dict[str, str], bool]:
    """Apply the entries' update/remove specs in order on top of `base`: ({name: spec},
    whether any entry said anything about specs)."""
    requested = dict(base or {})
    said = False
    for entry in entries:
        update, remove = list(entry.update_specs), list(entry.remove_specs)
        if not entry.has_spec_lines and entry.tool in ("conda", "mamba"):
            action, specs = cmd_specs(entry.cmd)
            if action == "update":
                update = specs
            elif action == "remove":
                remove = specs
        for spec in remove:
            requested.pop(spec_name(spec) or spec, None)
            said = True
        for spec in update:
            name = spec_name(spec)
            if name is not None:
                requested[name] = spec
            said = True
    return requested, said


def entries_since_hpcenv(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """The entries written after hpcenv's last one (by conda, mamba, ...)."""
    last = max((i for i, e in enumerate(entries) if e.tool == "hpcenv"), default=-1)
    return entries[last + 1 :]


# --------------------------------------------------------------------------- writing


def history_entry(
    *,
    added: Iterable[str],
    removed: Iterable[str],
    update_specs: Sequence[str] = (),
    remove_specs: Sequence[str] = (),
    argv: Sequence[str] | None = None,
    when: float | None = None,
) -> str:
    """One entry in conda's format (added/removed are dist strings, see `dist_string`)."""
    from hpcenv import __version__

    argv = ["hpcenv", *sys.argv[1:]] if argv is None else list(argv)
    lines = [
        time.strftime("==> %Y-%m-%d %H:%M:%S <==", time.localtime(when)),
        "# cmd: " + " ".join(a.replace("\n", " ") for a in argv),
        f"# hpcenv version: {__version__}",
        *(f"-{d}" for d in sorted(removed)),
        *(f"+{d}" for d in sorted(added)),
    ]
    if remove_specs:
        lines.append(f"# remove specs: {[str(s) for s in remove_specs]!r}")
    if update_specs:
        lines.append(f"# update specs: {[str(s) for s in update_specs]!r}")
    return "\n".join(lines) + "\n"


def append_history(prefix: Path, entry: str) -> None:
    path = Path(prefix) / "conda-meta" / "history"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, entry.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _dist(p: PackageInfo) -> str:
    return dist_string(p.name, p.version, p.build, p.channel, p.subdir)


def write_records(
    prefix: Path,
    before: Iterable[PackageInfo],
    after: Iterable[PackageInfo],
    *,
    update_specs: Sequence[str] = (),
    remove_specs: Sequence[str] = (),
    asked: Mapping[str, str] | None = None,
) -> None:
    """conda's side of a change: a history entry and the records' requested_spec."""
    old = {p.key: p for p in before}
    new = {p.key: p for p in after}
    append_history(
        prefix,
        history_entry(
            added=[_dist(new[k]) for k in new.keys() - old.keys()],
            removed=[_dist(old[k]) for k in old.keys() - new.keys()],
            update_specs=update_specs,
            remove_specs=remove_specs,
        ),
    )
    from hpcenv import engine

    asked = dict(asked or {})
    for p in engine.read_prefix(prefix).packages:
        spec = asked.get(p.name)
        if spec is None or p.record_path is None or p.requested[:1] == (spec,):
            continue
        path = Path(p.record_path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        data["requested_spec"] = spec
        data["requested_specs"] = [spec]
        atomic_write(path, json.dumps(data, indent=1), os.stat(path).st_mode & 0o777)
