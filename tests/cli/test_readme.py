"""The README's two commands are what a new user runs and what CI runs: keep them identical."""

import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (TOP / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_ci_runs_exactly_the_readme_commands():
    setup, tests = readme_commands()
    ci = (TOP / ".ci" / "run").read_text()
    assert f"\n{setup} || exit 1\n" in ci
    assert f"\n{tests}\n" in ci
    assert "torch" not in setup or "-c constraints-cpu.txt" in setup


def test_setup_pins_cpu_torch_outside_the_package():
    assert (TOP / "constraints-cpu.txt").read_text().split() == ["torch==2.13.0"]
    pyproject = (TOP / "pyproject.toml").read_text()
    assert '"torch>=' in pyproject and "torch==" not in pyproject


DOCS = [TOP / "README.md", *sorted((TOP / "docs").glob("*.md")), TOP / "benchmarks" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_is_a_front_door():
    assert len((TOP / "README.md").read_text().splitlines()) <= 150
    assert all(page.exists() for page in DOCS)


def test_every_relative_link_resolves():
    broken = []
    for page in DOCS:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or (anchor and anchor not in heading_anchors(dest)):
                broken.append(f"{page.relative_to(TOP)}: {target}")
    assert not broken, broken
