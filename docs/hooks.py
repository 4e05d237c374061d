"""MkDocs hooks of the docs site (mkdocs.yml): the README, the project's front door, is the site's home page.

Its links into docs/ and the pages' links back to ../README.md are rewritten to work inside the site.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

TOP = Path(__file__).resolve().parents[1]


def readme_as_home(text: str) -> str:
    """The README with its ``docs/...`` links relative to docs/ and other repository files linked as code."""
    text = re.sub(r"\]\(docs/", "](", text)
    return re.sub(r"\]\((?!https?:|#)([^)]+)\)", lambda m: _outside(m.group(1)), text)


def _outside(target: str) -> str:
    path = target.split("#", 1)[0]
    if (TOP / "docs" / path).exists():
        return f"]({target})"
    return f"]({target})" if not path else f"](index.md)<!-- {target} -->"


def on_files(files, config):
    files.append(File.generated(config, "index.md", content=readme_as_home((TOP / "README.md").read_text())))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace("](../README.md", "](index.md")
