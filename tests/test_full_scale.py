"""benchmarks/full_scale.py, the full-size rehearsal: its --small run, cut down further to a dozen
identities and two images per camera so that it stays a quick test, writes every stage with its
figures (so the script cannot rot between full runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
STAGES = ["synth", "prepare", "keypoints-oracle", "keypoints-hrnet-sample", "train+end-eval", "evaluate"]
FIELDS = {"stage", "command", "wall_s", "images", "images_per_s", "peak_rss_mb", "peak_anon_mb", "disk_written_mb"}


@pytest.mark.slow
def test_the_small_rehearsal_writes_every_stage_with_its_figures(tmp_path):
    cmd = [sys.executable, str(BENCH / "full_scale.py"), "--small", "--out", str(tmp_path / "fs"), "--ids", "12",
           "--images-per-camera", "2", "--train-steps", "1", "--hrnet-sample", "2"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "fs" / "full_scale.json").read_text())
    assert [s["stage"] for s in report["stages"]] == STAGES
    for s in report["stages"]:
        assert set(s) >= FIELDS, s
        assert s["wall_s"] > 0 and s["images"] > 0 and s["peak_rss_mb"] > 0
        assert 0 < s["peak_anon_mb"] <= s["peak_rss_mb"]
    by = {s["stage"]: s for s in report["stages"]}
    assert by["prepare"]["images"] == by["synth"]["images"] == by["keypoints-oracle"]["images"]
    assert by["prepare"]["disk_written_mb"] > 0
    assert by["keypoints-hrnet-sample"]["hrnet"]["images"] == 2
    assert by["keypoints-hrnet-sample"]["hrnet"]["weights"].startswith(("fetched", "random"))
    assert "end_eval_s_upper" in by["train+end-eval"]
    assert report["machine"]["cpu"] and report["store_mb"] > 0
    table = (tmp_path / "fs" / "full_scale.md").read_text()
    assert all(f"| {name} |" in table for name in STAGES)
