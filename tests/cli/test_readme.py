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
