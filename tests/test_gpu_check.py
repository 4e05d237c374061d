"""benchmarks/gpu_check.py, the GPU acceptance script: its --smoke run on the CPU passes every step (so the
script cannot rot before a GPU is at hand), and its runner records failures, budget skips and targets."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import gpu_check  # noqa: E402


def test_the_smoke_run_passes_every_step(tmp_path):
    # a generous --budget: on a loaded machine the optional steps must still run, not be skipped
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--out", str(tmp_path), "--budget", "900"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "smoke" and report["device"] == "cpu" and report["passed"] is True
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == list(gpu_check.STEPS)
    for name, s in steps.items():
        want = {"passed", "skipped"} if name == "compile" else {"passed"}
        assert s["status"] in want, s
        assert name in proc.stdout  # the printed table
    tr = steps["train_resume"]["figures"]
    assert tr["sigterm_exit_code"] == 143 and tr["resume_exit_code"] == 0
    assert tr["resumed_steps"] > 0 and tr["first_resumed_global_step"] == tr["saved_global_step"] + 1
    assert all(math.isfinite(v) for k, v in tr.items() if k.endswith(("_rank1", "_mAP")))
    assert tr["weights"]["source"] == "none"
    th = steps["step_throughput"]["figures"]
    assert th["fp32_kglfr_images_per_s"] > 0 and th["fp32_kglfr_over_baseline_step_time"] > 0
    assert steps["data_pipeline"]["figures"]["pipeline_over_kglfr_step"] > 0
    assert steps["hrnet"]["figures"]["images_per_s"] > 0
    assert steps["ddp"]["figures"] == {"backend": "gloo", "device": "cpu"}
    assert not any(p.name.startswith("gpu_check-work") for p in tmp_path.iterdir())  # removed without --keep


def _runner(tmp_path, plan=gpu_check.SMOKE, budget: float = 100.0) -> gpu_check.Runner:
    return gpu_check.Runner(tmp_path, plan, "cpu", budget)


def test_a_failing_step_is_recorded_and_the_next_one_still_runs(tmp_path):
    r = _runner(tmp_path)

    def broken(_r):
        raise gpu_check.StepError("the checkpoint is missing")

    r.run("dataset", broken)
    r.run("environment", gpu_check.step_environment)
    r.run("train_resume", gpu_check.step_train_resume)
    assert [(x.name, x.status) for x in r.records] == [("dataset", "failed"), ("environment", "passed"),
                                                       ("train_resume", "failed")]  # fmt: skip
    assert "needs the store of the dataset step" in r.records[2].error
    assert r.failed()
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["passed"] is False and "the checkpoint is missing" in saved["steps"][0]["error"]
    assert saved["steps"][1]["figures"]["torch"] == torch.__version__
    assert "FAILED: dataset" in r.table()


def test_the_budget_skips_optional_steps_only(tmp_path):
    r = _runner(tmp_path, budget=0.0)
    r.run("hrnet", gpu_check.step_hrnet, optional=True)
    r.run("environment", gpu_check.step_environment)
    assert [x.status for x in r.records] == ["skipped", "passed"]
    assert r.records[0].note.startswith("budget:") and not r.failed()


@pytest.mark.parametrize(("plan", "status"), [(gpu_check.FULL, "failed"), (gpu_check.SMOKE, "passed")])
def test_a_missed_target_fails_a_gpu_run_but_not_the_smoke_run(tmp_path, plan, status):
    r = _runner(tmp_path, plan)
    miss = gpu_check.target("kglfr_peak_gpu_gib", 9.5, gpu_check.PEAK_GIB_MAX, "<=")
    r.run("step_throughput", lambda _r: gpu_check.Outcome("peak 9.5 GiB", targets=[miss]))
    rec = r.records[0]
    assert rec.status == status and rec.targets[0]["met"] is False
    assert rec.targets[0]["judged"] is (plan is gpu_check.FULL)
    if status == "failed":
        assert "target missed: kglfr_peak_gpu_gib 9.5 (want <= 8.0)" in rec.error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cuda", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "--device cuda" in proc.stderr and "no CUDA device" in proc.stderr and "--smoke" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
