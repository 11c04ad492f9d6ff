"""Result rendering in one place: JSON (versioned) and human text.

The core returns frozen dataclasses; commands hand them here. Human output uses Rich tables
(imported lazily: `activate` and `--version` never load Rich); JSON output is
`{"schema_version": 1, "command": ..., "result": {...}}`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def jsonable(obj: Any) -> Any:
    """Dataclasses, paths, enums, tuples and sets as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    return obj


def dumps(command: str, result: Any) -> str:
    payload = {"schema_version": SCHEMA_VERSION, "command": command, "result": jsonable(result)}
    text = json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a path that is not UTF-8: escaped, so the output stays UTF-8
        text = json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=True)
    return text


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    stderr: bool = False,
) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_edge=False, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:  # Text: a '[...]' in a name or path is shown, not read as markup
        table.add_row(*(Text("-" if v is None else str(v)) for v in row))
    console(stderr).print(table)
