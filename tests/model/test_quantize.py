"""int8 inference (kglfr.model.quantize): int8 up to layer3, calibrated per modality, float32 after."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layouts import eval_net, synthetic_store

from kglfr import runtime
from kglfr.api import ReIDModel
from kglfr.data.records import TEST
from kglfr.data.store import Store
from kglfr.errors import KglfrError
from kglfr.eval.extract import embed_images, store_features
from kglfr.eval.model_eval import evaluate_model
from kglfr.model.quantize import CALIBRATION_IMAGES, Int8Model, float_model
from kglfr.runtime import resolve_policy
from kglfr.train import config as C

pytestmark = pytest.mark.skipif(runtime.int8_engine() is None, reason="this PyTorch has no int8 CPU engine")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path, _ = synthetic_store(tmp_path_factory.mktemp("int8"), ids=8, keypoints=False)
    return Store.open(path)


def int8_kinds(model: Int8Model) -> set[str]:
    return {type(m).__module__ for path in model.paths.values() for m in path.modules()}


def test_int8_features_match_float32_and_the_backbone_really_is_int8(store):
    idx = store.indices(TEST)
    fp32 = store_features(eval_net(6), store, idx, store.size, batch_size=16)
    policy = resolve_policy("cpu", "int8")
    assert (policy.int8, policy.amp_dtype, policy.channels_last, policy.amp_name) == (True, None, False, "int8")
    net = policy.model(eval_net(6))
    assert isinstance(net, Int8Model) and not net.training and net.feature_dim == 512
    assert policy.model(net) is net  # wrapped once (kglfr evaluate --worst hands its model on)
    int8 = store_features(net, store, idx, store.size, batch_size=16)
    assert net.calibrated(0) and net.calibrated(1)  # one int8 path per modality's stem
    assert any("quantized" in k for k in int8_kinds(net))  # quantized convolutions, not float ones
    for k in ("bn", "pool"):
        cos = (fp32[k] * int8[k]).sum(1)  # both L2-normalised
        assert cos.min() >= 0.995 and cos.mean() >= 0.999, (k, cos.min(), cos.mean())
        assert not np.array_equal(fp32[k], int8[k])  # int8 really ran


def test_int8_numbers_do_not_depend_on_the_batch_size(store):
    runs = [evaluate_model(resolve_policy("cpu", "int8").model(eval_net(6)), store, ["sysu-all"], size=store.size,
                           trials=2, batch_size=b) for b in (3, 64)]  # fmt: skip
    small, large = (r.features["bn"].feats for r in runs)
    assert np.abs(small - large).max() < 1e-5  # calibrated on the same images whatever the batches
    a, b = (r.results["sysu-all"]["bn"].mean() for r in runs)
    assert a == pytest.approx(b, abs=1e-9)


def test_calibration_takes_images_spread_over_what_is_embedded(monkeypatch):
    net = Int8Model(eval_net(6))
    seen = []
    monkeypatch.setattr(net, "calibrate", lambda m, x: seen.append((int(m), x.shape[0])))
    monkeypatch.setattr(net, "calibrated", lambda m: bool(seen))
    monkeypatch.setattr(net, "forward_features", lambda x, m: torch.ones(len(x), 512, 4, 2))
    images = [np.full((64, 32, 3), v % 256, np.uint8) for v in range(300)]
    embed_images(net, images, "infrared", (64, 32), batch_size=50)
    assert seen == [(1, CALIBRATION_IMAGES)]  # once, before the first batch, 128 of the 300


def test_int8_is_for_inference_only():
    with pytest.raises(KglfrError, match=r"^train.amp=int8 is for inference only; training supports "
                                         r"train.amp=off or train.amp=bf16 \(or auto\)$"):  # fmt: skip
        resolve_policy("cpu", "int8", name="train.amp", training=True)
    with pytest.raises(KglfrError, match="train.amp"):  # the schema knows no int8 for training
        C.load_config("demo", ["data.store=x", "train.amp=int8"])
    with pytest.raises(RuntimeError, match="inference only"):
        Int8Model(eval_net(6)).train()


def test_without_an_int8_engine_int8_is_one_line_naming_what_works(monkeypatch):
    monkeypatch.setattr(runtime, "int8_engine", lambda: None)
    line = r"^--amp int8 is not supported on the CPU; it supports --amp off or --amp bf16 \(or auto\)$"
    with pytest.raises(KglfrError, match=line):
        resolve_policy("cpu", "int8", name="--amp")


def test_the_api_loads_int8_and_grad_cam_and_export_use_the_float_model(store, tmp_path):
    ckpt = {"input_size": list(store.size)}
    m8 = ReIDModel(eval_net(6), ckpt, amp="int8")
    m32 = ReIDModel(eval_net(6), ckpt, amp="off")
    assert m8.policy.amp_name == "int8" and "amp=int8" in repr(m8) and m8.feature_dim == 512
    assert float_model(m8.model) is m8.model.float_model and float_model(m32.model) is m32.model
    assert m8.sha256 == m32.sha256  # the weights' hash, whatever runs them
    images = [np.random.default_rng(i).integers(0, 255, (64, 32, 3), np.uint8) for i in range(6)]
    f8, f32 = m8.embed(images, "visible"), m32.embed(images, "visible")
    assert (f8 * f32).sum(1).min() >= 0.99 and not np.array_equal(f8, f32)
    assert "arch=resnet18" in repr(m8)
    # calibrated on the first images it embedded; calibrate() replaces that with a set the user picks
    assert m8.model.calibrated(0) and not m8.model.calibrated(1)
    dark = [(im // 4).astype(np.uint8) for im in images]
    assert m8.calibrate(dark, "visible") and not m32.calibrate(dark, "visible")
    again = m8.embed(images, "visible")  # through ranges of darker images: further from float32
    assert (again * f32).sum(1).mean() < (f8 * f32).sum(1).mean()
    with pytest.raises(KglfrError, match="no images to calibrate on"):
        m8.calibrate([], "infrared")
