"""The docs site builds offline with ``mkdocs build --strict``: no broken link or anchor, no missing image."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TOP = Path(__file__).resolve().parents[2]


def test_site_config_needs_no_network():
    cfg = yaml.safe_load((TOP / "mkdocs.yml").read_text())
    assert cfg["theme"]["font"] is False  # Material's default fonts load from Google
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in cfg["plugins"]]
    assert set(plugins) <= {"search", "mkdocstrings"}
    pages = {p for entry in cfg["nav"] for p in entry.values()}
    assert pages >= {p.name for p in (TOP / "docs").glob("*.md")}, "every page of docs/ is in the site's nav"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed: pip install -e '.[docs]'")
def test_mkdocs_build_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=TOP, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    html = "".join(p.read_text() for p in (tmp_path / "site").rglob("*.html"))
    assert "fonts.googleapis.com" not in html
    assert (tmp_path / "site" / "reference" / "api" / "index.html").exists()
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "ReIDModel" in api and "kglfr.api.load" in api  # generated from the docstrings
