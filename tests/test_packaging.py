"""Every preset ships in the wheel (a wheel install must find sysu/kglfr)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_yaml_under_configs_is_in_the_wheel(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "kglfr", src / "kglfr", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "built"
    out.mkdir()
    code = ("import sys; from setuptools import build_meta as b; "
            "b.build_wheel(sys.argv[1])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    presets = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "kglfr" / "configs").rglob("*.yaml"))
    assert "kglfr/configs/sysu/kglfr.yaml" in presets
    (wheel,) = out.glob("*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert [p for p in presets if p not in in_wheel] == []
    templates = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "kglfr" / "report" / "templates").iterdir())
    assert "kglfr/report/templates/report.html.j2" in templates  # the report page's templates ship too
    assert [p for p in templates if p not in in_wheel] == []
