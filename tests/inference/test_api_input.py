"""The Python API held to the CLI's standard (issue 25): empty images, NaN input, top=0, an unknown device,
a features file whose paths leave the gallery root, a folder given as a file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kglfr.api import ReIDModel, read_image
from kglfr.errors import KglfrError
from kglfr.eval.features import save_features
from kglfr.inference.search import search
from kglfr.model import AGWNet
from kglfr.train.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ReIDModel(AGWNet(4, arch="resnet18", non_local=False).eval(), {"input_size": [64, 32]})


def test_an_empty_image_and_nan_input_are_one_clear_error(model):
    with pytest.raises(KglfrError, match=r"an image is empty \(0 x 20 pixels\)"):
        model.embed([np.zeros((0, 20, 3), np.uint8)], "visible")
    x = torch.rand(3, 3, 64, 32)
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(KglfrError, match="1 of 3 images hold NaN or infinite values"):
        model.embed(x, "visible")
    assert np.isfinite(model.embed(torch.rand(2, 3, 64, 32), "visible")).all()


@pytest.mark.parametrize("device", ["gpu", "tpu:0", "cuda:x"])
def test_an_unknown_device_is_one_clear_error(model, device):
    with pytest.raises(KglfrError, match=f"unknown device '{device}'; use cpu, cuda or cuda:N"):
        ReIDModel(model.model, {"input_size": [64, 32]}, device=device)


def _gallery(tmp_path, paths):
    feats = np.random.default_rng(0).normal(size=(len(paths), 512)).astype(np.float32)
    return save_features(tmp_path / "g.npz", feats, np.arange(len(paths)), np.ones(len(paths), int), paths,
                         np.ones(len(paths), int))  # fmt: skip


def test_search_refuses_top_0_and_gallery_paths_outside_its_root(model, tmp_path):
    q = tmp_path / "q.jpg"
    Image.fromarray(np.zeros((64, 32, 3), np.uint8)).save(q)
    root = tmp_path / "root"
    root.mkdir()
    inside = _gallery(tmp_path, ["0001/a.jpg", "0002/../0002/b.jpg"])
    assert search(model, q, "visible", inside, gallery_root=root, top=2).index.shape == (1, 2)
    with pytest.raises(KglfrError, match="top must be a whole number of at least 1, got 0"):
        search(model, q, "visible", inside, gallery_root=root, top=0)
    for bad in ("../secret.jpg", "/etc/passwd", "0001/../../x.jpg"):
        outside = _gallery(tmp_path, ["0001/a.jpg", bad])
        with pytest.raises(KglfrError, match=f"lists '{bad}', which is outside gallery_root"):
            search(model, q, "visible", outside, gallery_root=root)


def test_a_folder_given_as_a_file_is_named_a_folder(tmp_path):
    with pytest.raises(KglfrError, match="image .* is a folder; give the file itself"):
        read_image(tmp_path)
    with pytest.raises(CheckpointError, match="is a folder without checkpoint.pt"):
        load_checkpoint(tmp_path)
