"""The one feature extractor: one backbone pass per batch, the same features everywhere, RegDB trial labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layouts import eval_net, make_regdb, synthetic_store

from kglfr.api import ReIDModel
from kglfr.data.datasets import load_dataset
from kglfr.data.records import TEST, Modality
from kglfr.data.store import Store, prepare_store
from kglfr.eval.extract import embed_images, store_features
from kglfr.eval.model_eval import evaluate_model
from kglfr.model import AGWNet


@pytest.fixture(scope="module")
def sysu_store(tmp_path_factory):
    path, _ = synthetic_store(tmp_path_factory.mktemp("extract"), ids=8, keypoints=False)
    return Store.open(path)


def count_forward_features(monkeypatch, net: AGWNet) -> list[int]:
    """Wrap the real forward_features (it still runs) to count its calls."""
    calls: list[int] = []
    real = net.forward_features

    def counted(images, modalities):
        calls.append(len(images))
        return real(images, modalities)

    monkeypatch.setattr(net, "forward_features", counted)
    return calls


@pytest.mark.parametrize("flip", [False, True])
def test_store_features_run_the_backbone_once_per_batch(sysu_store, monkeypatch, flip):
    net = eval_net()
    idx = sysu_store.indices(TEST)
    batch = 5
    batches = sum(-(-int((sysu_store.modalities[idx] == int(m)).sum()) // batch) for m in Modality)
    calls = count_forward_features(monkeypatch, net)
    feats = store_features(net, sysu_store, idx, sysu_store.size, batch_size=batch, flip=flip)
    assert len(calls) == batches * (2 if flip else 1)  # BN and pooled feature from the same pass
    assert set(feats) == {"bn", "pool"} and feats["bn"].shape == feats["pool"].shape == (len(idx), 512)
    assert not np.allclose(feats["bn"], feats["pool"])
    assert np.allclose(np.linalg.norm(feats["bn"], axis=1), 1.0, atol=1e-5)


def test_embed_runs_the_backbone_once_per_batch_and_matches_extract(sysu_store, monkeypatch):
    net = eval_net()
    images = list(sysu_store.read_batch(np.arange(7)))
    x = ReIDModel(net, {"input_size": list(sysu_store.size)}).preprocess(images)
    with torch.no_grad():
        want = {w: torch.nn.functional.normalize(net.extract(x, 1, which=w, normalise=False), dim=1).numpy()
                for w in ("bn", "pool")}  # fmt: skip
    calls = count_forward_features(monkeypatch, net)
    for which in ("bn", "pool"):
        got = embed_images(net, images, "infrared", sysu_store.size, which=which, batch_size=4)
        assert np.array_equal(got, want[which])
    assert calls == [4, 3, 4, 3]
    calls.clear()
    embed_images(net, images, "infrared", sysu_store.size, flip=True, batch_size=4)
    assert calls == [4, 4, 3, 3]  # the image batch, then its mirror: one pass each


def test_forward_head_is_the_training_forward(sysu_store):
    net = eval_net().train()
    x = torch.randn(4, 3, *sysu_store.size)
    torch.manual_seed(1)
    out = net(x, Modality.VISIBLE)
    net.bnneck.running_mean.zero_()  # the second pass updates the running stats again; the outputs are the same
    pooled, bn = net.forward_head(out["feature_map"])
    assert torch.equal(pooled, out["global"]) and torch.allclose(bn, out["bn"])


def test_a_regdb_result_records_the_trial_it_evaluated(tmp_path):
    root = make_regdb(tmp_path / "RegDB", ids=range(1, 9))
    store, _ = prepare_store(load_dataset("regdb", root), tmp_path / "store", height=64, width=32, progress=False)
    ev = evaluate_model(eval_net(), store, ["regdb-v2i", "regdb-i2v"], trial=10, size=(64, 32))
    for by in ev.results.values():
        for result in by.values():
            assert [t.trial for t in result.trials] == [10]
    from kglfr.eval.report import result_to_dict

    assert result_to_dict(ev.results["regdb-v2i"]["bn"])["trial_ids"] == [10]
    default = evaluate_model(eval_net(), store, ["regdb-v2i"], size=(64, 32))  # the store's prepared trial
    assert [t.trial for t in default.results["regdb-v2i"]["bn"].trials] == [store.manifest["trial"]]
