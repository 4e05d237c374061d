"""The engine's parts: Trainer.run_step, GradScaler state, per-rank streams, run-folder safety, checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from layouts import TINY_TRAIN, free_port, synthetic_store

from kglfr.cli import main
from kglfr.errors import DiskFullError
from kglfr.io import folder_lock
from kglfr.train import config as C
from kglfr.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from kglfr.train.data import STREAM_ERASING, step_generator
from kglfr.train.runtime import Runtime
from kglfr.train.trainer import Trainer, TrainingError, base_lr, train

TINY = [*TINY_TRAIN, "train.epochs=1", "train.iters_per_epoch=1", "train.log_every=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("engine"))[0]


def tiny(store, *extra: str, preset: str = "sysu/kglfr"):
    return C.load_config(preset, [f"data.store={store}", *TINY, *extra])


def test_rank_zero_keeps_the_single_process_streams_and_other_ranks_differ():
    seq = np.random.SeedSequence([0, 1, 2, STREAM_ERASING]).generate_state(1, np.uint64)[0] >> 1
    assert step_generator(0, 1, 2, STREAM_ERASING).initial_seed() == int(seq)
    assert step_generator(0, 1, 2, STREAM_ERASING, rank=0).initial_seed() == int(seq)
    assert step_generator(0, 1, 2, STREAM_ERASING, rank=1).initial_seed() != int(seq)


def test_lr_is_checked_and_scaled_only_when_asked(store):
    assert base_lr(tiny(store), 4) == pytest.approx(0.1)
    assert base_lr(tiny(store, "optim.scale_lr=true"), 4) == pytest.approx(0.4)
    with pytest.raises(C.ConfigError, match="override 'optim.lr=.nan': optim.lr must be a finite number"):
        tiny(store, "optim.lr=.nan")


def test_the_fp16_grad_scaler_state_round_trips_through_the_checkpoint(store, tmp_path):
    """The CPU smoke path of fp16 training: GradScaler on, its state saved with the run and restored."""
    rt = Runtime(torch.device("cpu"), amp_dtype=torch.float16)
    trainer = Trainer(tiny(store), rt)
    assert trainer.scaler.is_enabled()
    trainer.begin_epoch(0)
    batch = next(iter(trainer.data.epoch(0, prefetch=0)))
    losses = trainer.run_step(batch)
    assert set(losses.parts) == {"id", "triplet", "acc", "local", "loss"} and losses.parts["loss"].ndim == 0
    trainer.scaler.update(1024.0)  # a state the default would not have
    save_checkpoint(tmp_path / "ck.pt", trainer.state_dict(0, 1))
    ck = load_checkpoint(tmp_path / "ck.pt")
    assert ck["scaler"]["scale"] == 1024.0
    again = Trainer(tiny(store), rt, checkpoint=ck)
    assert again.scaler.get_scale() == 1024.0 and again.start_step == 1
    for group in again.optimizer.param_groups:  # optimiser state on its parameters' device
        for p in group["params"]:
            assert all(v.device == p.device for v in again.optimizer.state[p].values() if torch.is_tensor(v))


def test_ddp_ranks_erase_differently(store, tmp_path):
    out = tmp_path / "masks.pt"
    script = Path(__file__).with_name("ddp_erase.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), str(store), str(out), *TINY]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(out)
    assert a.any() and b.any() and not torch.equal(a, b)


def test_a_folder_that_holds_no_run_is_refused_unless_force(store, tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "config.yaml").write_text("x: 1\n")
    args = ["train", "--config", "sysu/kglfr", "--out", str(d), "--no-progress", f"data.store={store}", *TINY]
    assert main(args) == 2
    assert "is not empty and holds no run (config.yaml)" in capsys.readouterr().err
    assert (d / "config.yaml").read_text() == "x: 1\n"
    assert main([*args[: -len(TINY) - 1], "--force", *args[-len(TINY) - 1 :], "eval.protocols=[sysu-all]"]) == 0
    assert load_checkpoint(d / "checkpoint.pt")["epoch"] == 1


def test_a_second_training_into_a_locked_run_folder_names_the_holder(store, tmp_path, capsys):
    d = tmp_path / "locked"
    with folder_lock(d, "run folder"):
        assert main(["train", "--config", "sysu/kglfr", "--out", str(d), f"data.store={store}", *TINY]) == 2
    err = capsys.readouterr().err
    assert f"(pid {os.getpid()})" in err and len(err.strip().splitlines()) == 1
    assert not (d / "config.yaml").exists()


def test_a_failed_train_removes_the_folder_it_created(tmp_path, capsys):
    bare = synthetic_store(tmp_path / "bare", ids=8, seed=3, images_per_camera=1, keypoints=False)[0]
    out = tmp_path / "new" / "run"
    assert main(["train", "--config", "sysu/kglfr", "--out", str(out), f"data.store={bare}", *TINY]) == 2
    assert "uses keypoints" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_resume_force_leaves_the_run_as_it_was(store, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny(store, "eval.protocols=[sysu-all]", "eval.trials=1"), out, progress=False)
    before = (out / "config.yaml").read_bytes()
    assert main(["train", "--resume", str(out), "--force", "model.arch=resnet34", "train.epochs=2"]) == 2
    assert "does not fit this model" in capsys.readouterr().err
    assert (out / "config.yaml").read_bytes() == before


def test_non_finite_evaluation_features_say_what_to_do_and_keep_the_run(store, tmp_path):
    out = tmp_path / "diverged"
    # ResNet-18 from random weights at lr 0.1: the non-local block's eval-mode activations overflow
    cfg = tiny(store, "train.iters_per_epoch=3", "train.epochs=2", "train.eval_every=1")
    with pytest.raises(TrainingError) as e:
        train(cfg, out, progress=False)
    msg = str(e.value)
    assert "the evaluation after epoch 2" in msg and "ImageNet weights" in msg and "optim.warmup_epochs" in msg
    assert "lower optim.lr" in msg and str(out) in msg
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2 and (out / "train.log").is_file()


@pytest.mark.parametrize("content", [b"", b"P", b"PK\x03", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200)])
def test_a_malformed_file_is_not_a_kglfr_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad.pt is not a kglfr checkpoint \(") as e:
        load_checkpoint(path)
    assert "safe" not in str(e.value)


def test_a_truncated_checkpoint_is_one_whole_sentence(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "model_config": {}, "num_classes": 1})
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"is not a kglfr checkpoint \(truncated or damaged: [^)]*\)$"):
        load_checkpoint(path)


FULL_DISK = """
import resource, signal, sys, torch
from kglfr.train.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # no file may grow past 1 MiB: a full disk
save_checkpoint(sys.argv[1], {"model": {"w": torch.zeros(1 << 20)}})
"""


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    old = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(DiskFullError.__module__ + ".DiskFullError: not enough disk space to save checkpoint")
    assert "it needs about 4.0 MB" in last and "previous checkpoint is kept" in last
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_several_batch_threads_give_the_batches_of_one_thread_in_step_order(store):
    trainer = Trainer(tiny(store, "train.iters_per_epoch=5"))
    one = list(trainer.data.epoch(0, 1))
    many = list(trainer.data.epoch(0, 1, workers=3))
    assert [b.step for b in many] == [b.step for b in one] == [1, 2, 3, 4]
    for a, b in zip(one, many, strict=True):
        for name in ("images", "labels", "heatmaps", "parts", "part_valid"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert trainer.loader_options() == {"prefetch": 0}  # the CPU: batches made in the training thread
    stopped = trainer.data.epoch(0, 0, workers=3)
    next(stopped)
    stopped.close()  # an epoch left early leaves no work behind
