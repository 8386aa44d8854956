"""The public API carries type hints that a type checker accepts, and the package says so (PEP 561)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_package_ships_py_typed():
    assert (REPO / "nasrobust" / "py.typed").is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["nasrobust"]


def test_the_checked_modules_are_the_public_api():
    """Every module the package facade hands names on from is type-checked."""
    import ast

    files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    tree = ast.parse((REPO / "nasrobust" / "__init__.py").read_text())
    lazy = next(ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "_LAZY" for t in n.targets))
    eager = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("nasrobust")]
    for module in {*lazy.values(), *eager} - {"nasrobust.data"}:  # data.py: see the note in pyproject.toml
        path = module.replace(".", "/")
        assert f"{path}.py" in files or any(path.startswith(f + "/") or path == f for f in files), module


@pytest.mark.slow
def test_public_api_type_checks():
    """``mypy`` with the pyproject.toml configuration (untyped or incompletely typed defs are errors)."""
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
