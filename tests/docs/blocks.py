"""The fenced code blocks of the README and docs/, and how a shell block becomes commands to run.

A block runs unless an HTML comment right before its fence says why not::

    <!-- docs-test: skip (needs a GPU) -->

Shell lines become argument lists: ``\\`` continuations joined, ``# comments`` dropped, ``[optional]`` groups
of a synopsis left out, then the substitutions of :data:`SUBSTITUTIONS` applied.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
PAGES = [TOP / "README.md", *sorted((TOP / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:\s*skip\s*\((.+)\)\s*-->")
SHELL = {"bash", "sh", "shell", "console"}

# Text a shell line is run with instead of what the docs print: real-size inputs become the session's tiny ones.
SUBSTITUTIONS = [
    (re.compile(r"~/"), "home/"),  # ~/data/SYSU-MM01: the tiny synthetic dataset under the block's folder
    (re.compile(r"--device cuda\b"), "--device cpu"),
    (re.compile(r"\bSTORE\b"), "stores/sysu"),
    (re.compile(r"\bruns/demo/store\b"), "stores/sysu"),  # the demo's store and run: the world's tiny ones
    (re.compile(r"\bruns/demo/train\b"), "runs/sysu-kglfr"),
    (re.compile(r"--seeds \d+"), "--seeds 1"),  # one seed a method: the table, not its spread, is under test
]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(TOP)}:{self.line}"


def page_blocks(page: Path) -> list[Block]:
    """Every fenced block of a Markdown page, with the skip reason of a marker right before it."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{page}:{i + 1}: fenced block never closed")
        before = lines[i - 1] if i else ""
        marker = MARKER.search(before)
        blocks.append(Block(page, i + 1, m.group(1), "\n".join(lines[i + 1 : end]), marker and marker.group(1)))
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in page_blocks(page)]


def drop_optional(line: str) -> str:
    """A synopsis without its ``[optional]`` groups (nested ones included)."""
    while True:
        shorter = re.sub(r"\s*\[[^\[\]]*\]", "", line)
        if shorter == line:
            return line
        line = shorter


def shell_commands(text: str) -> list[list[str]]:
    """The argument lists of a shell block, substituted, one a command."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = drop_optional(line.split(" #", 1)[0].strip())
        if not line or line.startswith("#"):
            continue
        for pattern, repl in SUBSTITUTIONS:
            line = pattern.sub(repl, line)
        commands.append(shlex.split(line))
    return commands
