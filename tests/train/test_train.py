"""The trainer end to end on a tiny synthetic store: run folder, resume, checkpoints, bad input, DDP."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from layouts import TINY_TRAIN, free_port, synthetic_store

from kglfr.cli import main
from kglfr.train import config as C
from kglfr.train.checkpoint import CheckpointError, load_checkpoint, load_model, load_model_state
from kglfr.train.hooks import StopAfterSteps
from kglfr.train.trainer import TrainingError, check_resume, lr_factor, train

TINY = [*TINY_TRAIN, "train.epochs=2", "train.iters_per_epoch=2", "train.log_every=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("train"))[0]


@pytest.fixture(scope="module")
def bare_store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("bare"), ids=8, seed=3, images_per_camera=1, keypoints=False)[0]


def tiny(store, *extra: str):
    return C.load_config("sysu/kglfr", [f"data.store={store}", *TINY, *extra])


@pytest.fixture(scope="module")
def full_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    # evaluating on the way must not change the weights: the resume tests compare against this run
    res = train(tiny(store, "train.eval_every=1", "eval.report_epoch=best"), out, progress=False)
    return out, res


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "checkpoint.pt")["model"]


def test_lr_schedule():
    assert [lr_factor(e, [30, 60], 0.1) for e in (0, 29, 30, 59, 60, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])  # fmt: skip
    assert [lr_factor(e, [30], 0.1, warmup_epochs=10) for e in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1, 1])


def test_a_run_leaves_config_checkpoint_metrics_and_results(full_run):
    out, res = full_run
    for name in ("config.yaml", "checkpoint.pt", "metrics.jsonl", "train.log", "report.md", "summary.json",
                 "results/sysu-all_bn.json", "results/sysu-all_pool.json", "results/sysu-indoor_bn.json"):  # fmt: skip
        assert (out / name).is_file(), name
    saved = C.config_from_dict(__import__("yaml").safe_load((out / "config.yaml").read_text()))
    assert saved.train.epochs == 2 and saved.model.arch == "resnet18"
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["epoch"] == 2 and ck["step"] == 0 and len(ck["history"]) == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"type": "epoch"' in x for x in lines) == 2 and sum('"type": "step"' in x for x in lines) == 4
    s = res.summary["protocols"]["sysu-all"]
    assert 0 <= s["bn"]["mean"]["rank1"] <= 100 and s["chance_rank1"] == pytest.approx(100 / 6)
    assert "| sysu-all | BN |" in (out / "report.md").read_text()
    assert sum('"type": "eval"' in x for x in lines) == 4  # 2 protocols x (epoch 1, the end)
    best = res.summary["best_epoch_on_test_set"]["sysu-all"]
    assert best["epoch"] in (1, 2) and "optimistic" in best["note"]
    assert res.summary["report_epoch"] == "last" and res.summary["feature_headline"] == "bn"
    model, data = load_model(out / "checkpoint.pt")
    assert not model.training and data["num_classes"] == len(data["label_pids"])


def test_a_run_records_its_precision_and_why(full_run):
    out, res = full_run
    import json

    runtime = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"runtime"' in x]
    assert len(runtime) == 1 and runtime[0]["train"]["why"].startswith("auto: the CPU")
    # the evaluation's own memory format: channels_last on the CPU (a copy of the model when training's differs)
    assert runtime[0]["eval"] == {"amp": "off", "memory_format": "channels_last",
                                  "device": "cpu", "why": runtime[0]["eval"]["why"]}  # fmt: skip
    assert "evaluation runs float32" in runtime[0]["eval"]["why"]
    # the evaluation is float32 under auto whatever the training ran in; the results say so
    assert res.summary["amp"] == runtime[0]["train"]["amp"] and res.summary["eval_amp"] == "off"
    assert json.loads((out / "results" / "sysu-all_bn.json").read_text())["amp"] == "off"
    report = (out / "report.md").read_text()
    assert f"Mixed precision: training {runtime[0]['train']['amp']}, evaluation off." in report


@pytest.mark.parametrize("killed_after", [2, 3])  # between epochs 1 and 2; in the middle of epoch 2
def test_resume_ends_where_the_uninterrupted_run_ends(store, full_run, tmp_path, killed_after):
    out = tmp_path / "run"
    train(tiny(store), out, progress=False, hooks=[StopAfterSteps(killed_after)])  # a kill: no save at the stop
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    a, b = weights(full_run[0]), weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_resume_refuses_what_would_change_the_run(store, full_run, tmp_path, capsys):
    out, _ = full_run
    with pytest.raises(TrainingError, match=r"would change the run \(train.seed\)"):
        check_resume(out, ["train.seed=5"], force=False)
    assert check_resume(out, ["train.seed=5"], force=True).train.seed == 5
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no run there" in capsys.readouterr().err
    assert main(["train", "--config", "sysu/kglfr", "--out", str(out), f"data.store={store}", *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_crafted_pickle_in_a_checkpoint_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for i, write in enumerate((lambda f: pickle.dump(Evil(), f),
                               lambda f: torch.save({"format": "kglfr-checkpoint", "x": Evil()}, f))):  # fmt: skip
        path = tmp_path / f"evil{i}.pt"
        with open(path, "wb") as f:
            write(f)
        with pytest.raises(CheckpointError, match="not a safe kglfr checkpoint"):
            load_checkpoint(path)
        assert not marker.exists()


def test_a_checkpoint_of_another_model_is_one_clear_error(full_run, tmp_path):
    from kglfr.model import AGWNet

    ck = load_checkpoint(full_run[0] / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="shape mismatch .*classifier"):
        load_model_state(AGWNet(ck["num_classes"] + 1, arch="resnet18", non_local=True), ck["model"], "ck")
    with pytest.raises(CheckpointError, match="missing"):
        load_model_state(AGWNet(ck["num_classes"], arch="resnet34", non_local=True), ck["model"], "ck")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(tmp_path / "junk.pt")


def test_a_store_without_keypoints_names_the_command(bare_store, tmp_path, capsys):
    args = ["train", "--config", "sysu/kglfr", "--out", str(tmp_path / "r"), f"data.store={bare_store}", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "uses keypoints" in err and "kglfr keypoints --store" in err
    # the baseline needs no keypoints
    base = C.load_config("sysu/baseline", [f"data.store={bare_store}", *TINY, "data.ids_per_batch=2",
                                           "train.epochs=1", "train.iters_per_epoch=1"])  # fmt: skip
    assert train(base, tmp_path / "b", progress=False).epochs == 1


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(store, full_run, tmp_path):
    import shutil

    out = tmp_path / "nan"
    shutil.copytree(full_run[0], out)
    good = (out / "checkpoint.pt").read_bytes()
    cfg = check_resume(out, ["optim.lr=1e30", "train.epochs=3", "train.log_every=100"], force=True)
    # read back only at the epoch's end (log_every 100), the error still names step 2, the first non-finite
    # one (step 1 ran on the good weights of epoch 2)
    with pytest.raises(TrainingError, match=r"non-finite .* at epoch 3 step 2;.*last good checkpoint .*epoch 2"):
        train(cfg, out, resume=True, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == good


def test_ddp_two_processes_on_the_cpu(store, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "kglfr", "train", "--config", "sysu/kglfr", "--out", str(out), "--no-progress",
           f"data.store={store}", *TINY, "train.epochs=1", "train.threads=1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["epoch"] == 1
    assert "DDP 2 processes" in (out / "train.log").read_text()


def test_sigterm_saves_the_step_and_exits_cleanly(store, tmp_path):
    import signal
    import time

    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "kglfr", "train", "--config", "sysu/kglfr", "--out", str(out), "--no-progress",
           f"data.store={store}", *TINY, "train.iters_per_epoch=400", "train.threads=1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().count('"type": "step"') >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]  # 128 + SIGTERM; Ctrl-C stays 130
    assert "SIGTERM: saved" in err and f"kglfr train --resume {out}" in err
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["epoch"] == 0 and ck["step"] >= 2
