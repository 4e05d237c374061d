"""A result of ``evaluate --checkpoint --out`` says what made it: the checkpoint's path and sha256 (issue 25)."""

import json

import torch
from layouts import make_sysu

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.store import prepare_store
from kglfr.io import file_sha256
from kglfr.model import AGWNet
from kglfr.train.checkpoint import save_checkpoint


def test_checkpoint_result_records_the_checkpoint_and_its_hash(tmp_path, capsys):
    store, _ = prepare_store(load_dataset("sysu", make_sysu(tmp_path / "sysu")), tmp_path / "store", height=64,
                             width=32, progress=False)  # fmt: skip
    torch.manual_seed(0)
    net = AGWNet(4, arch="resnet18", non_local=False).eval()
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, {"model": net.state_dict(), "model_config": net.config(), "input_size": [64, 32],
                           "config": {}, "num_classes": 4})  # fmt: skip
    out = tmp_path / "r.json"
    argv = ["evaluate", "--checkpoint", str(ckpt), "--store", str(store.path), "--protocol", "sysu-all",
            "--trials", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    made_by = json.loads(out.read_text())["made_by"]
    assert made_by["checkpoint"] == str(ckpt) and made_by["checkpoint_sha256"] == file_sha256(ckpt)
    assert made_by["store"] == str(store.path.resolve()) and made_by["feature"] == "bn"
