"""Rules of the codebase's shape, checked on every run: lint and format clean, the CLI on top of the
library (never imported by it), viz below the user API, and no library function longer than 60 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[1]
PACKAGE = TOP / "kglfr"
MAX_LINES = 60


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(f, ast.parse(f.read_text(), str(f))) for f in sorted(PACKAGE.rglob("*.py"))]


def _imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _library(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] != "cli" and rel != ("__main__.py",)


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff_is_clean(args):
    run = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=TOP, capture_output=True, text=True)
    assert run.returncode == 0, f"ruff {' '.join(args)}:\n{run.stdout}{run.stderr}"


def test_library_never_imports_the_cli():
    offenders = [
        f"{f.relative_to(TOP)} imports {name}"
        for f, tree in _modules()
        if _library(f)
        for name in _imports(tree)
        if name == "kglfr.cli" or name.startswith("kglfr.cli.")
    ]
    assert not offenders, "\n".join(offenders)


def test_lower_layers_do_not_import_the_user_api():
    """data, keypoints, model, train, eval, inference and viz sit under ``kglfr.api`` (the Python user API)."""
    offenders = [
        f"{f.relative_to(TOP)} imports {name}"
        for f, tree in _modules()
        if _library(f) and f.parent != PACKAGE
        for name in _imports(tree)
        if name == "kglfr.api" or name.startswith("kglfr.api.")
    ]
    assert not offenders, "\n".join(offenders)


def test_no_library_function_is_longer_than_60_lines():
    long = [
        f"{f.relative_to(TOP)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for f, tree in _modules()
        if _library(f)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, "\n".join(long)
