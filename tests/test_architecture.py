"""The map of docs/architecture.md, held by the code: who may import what, and module size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hpcenv"
MODULES = sorted(SRC.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def importers(target: str) -> set[str]:
    return {
        module_name(p)
        for p in MODULES
        if any(m == target or m.startswith(target + ".") for m in imports(p))
    }


def test_only_the_engine_imports_rattler():
    assert {m for m in importers("rattler") if not m.startswith("hpcenv.engine")} == set()


def test_only_report_imports_rich():
    assert importers("rich") <= {"hpcenv.report"}


def test_the_core_never_imports_the_cli():
    outside = {m for m in importers("hpcenv.cli") if not m.startswith("hpcenv.cli")}
    assert outside <= {"hpcenv.__main__"}  # `python -m hpcenv` is the CLI's entry


def test_the_cli_is_argparse_and_only_the_cli_parses_arguments():
    assert importers("typer") == importers("click") == set()
    assert {m for m in importers("argparse") if not m.startswith("hpcenv.cli")} == set()


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_is_over_400_lines(path):
    """A module over 400 lines is a hint that it owns two concepts (STYLE.md)."""
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 400
