"""The twelve method presets (sysu/regdb/llcm x agw/caj/kglfr/kglfr_caj) each train one step on a small store
of their dataset; the published figures in their comments agree with ``kglfr.eval.published``."""

from __future__ import annotations

import pytest
import torch
from layouts import TINY_TRAIN, make_llcm, synthetic_store

from kglfr.data.datasets import load_dataset
from kglfr.data.store import prepare_store
from kglfr.data.synth import synthesize
from kglfr.eval.published import PUBLISHED
from kglfr.keypoints.backends.base import build_backend
from kglfr.keypoints.build import build_cache, build_pose_backend
from kglfr.train import config as C
from kglfr.train.trainer import Trainer

DATASETS = ("sysu", "regdb", "llcm")
METHODS = ("agw", "caj", "kglfr", "kglfr_caj")
TWELVE = [f"{d}/{m}" for d in DATASETS for m in METHODS]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A small store of each dataset with a keypoint cache (oracle for the synthetic ones; LLCM has no
    synthetic layout: a randomly initialised HRNet's keypoints on noise images)."""
    root = tmp_path_factory.mktemp("method-presets")
    sysu = synthetic_store(root / "sysu", ids=8)[0]
    synth = synthesize(root / "regdb" / "synth", "regdb", ids=8, seed=0, images_per_camera=2, height=64, width=32)
    regdb, _ = prepare_store(load_dataset("regdb", synth.root), root / "regdb" / "store", height=64, width=32,
                             progress=False)  # fmt: skip
    build_cache(regdb, build_pose_backend("oracle", regdb), progress=False)
    src = make_llcm(root / "llcm" / "src")
    llcm, _ = prepare_store(load_dataset("llcm", src), root / "llcm" / "store", height=64, width=32, progress=False)
    build_cache(llcm, build_backend("hrnet", random_init=True, input_size=(128, 64)), progress=False)
    return {"sysu": sysu, "regdb": regdb.path, "llcm": llcm.path}


def test_there_are_twelve_method_presets_in_the_package():
    assert set(TWELVE) <= set(C.presets())


@pytest.mark.parametrize("preset", TWELVE)
def test_each_method_preset_trains_one_step_on_its_dataset(preset, stores):
    dataset, method = preset.split("/")
    cfg = C.load_config(preset, [f"data.store={stores[dataset]}", *TINY_TRAIN, "optim.lr=0.0001",
                                 "train.epochs=1", "train.iters_per_epoch=1"])  # fmt: skip
    assert cfg.method.name == method
    trainer = Trainer(cfg)
    trainer.begin_epoch(0)
    batch = next(iter(trainer.data.epoch(0, prefetch=0)))
    losses = trainer.run_step(batch)
    assert torch.isfinite(losses.total)
    assert len(batch.labels) == trainer.data.batch_size
    views = 3 if "caj" in method else 1  # CAJ: visible, visible channel-exchanged, infrared
    assert len(trainer.data.views) == views and len(batch.labels) == 3 * 2 * (2 if views == 1 else 3)  # P=3, K=2
    assert ("local" in losses.parts) == method.startswith("kglfr")


def test_the_presets_quote_the_published_figures():
    for (method, protocol), fig in PUBLISHED.items():
        preset = {"sysu": f"sysu/{method}", "regdb": f"regdb/{method}"}[protocol.split("-")[0]]
        text = C.resolve_preset(preset).read_text()
        for key in ("rank1", "mAP", "mINP"):
            assert fig[key] is None or f"{fig[key]:.2f}" in text, (preset, protocol, key)
