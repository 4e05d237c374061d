"""Methods are modules: a toy method registers and trains without a line of the trainer changing; presets
inherit from a list of bases and from preset names; a method's defaults sit under the preset."""

from __future__ import annotations

import pytest
import torch
from layouts import TINY_TRAIN, synthetic_store

from kglfr.data.records import Modality
from kglfr.data.views import View
from kglfr.errors import KglfrError
from kglfr.train import config as C
from kglfr.train import methods
from kglfr.train.methods import Method, get_method, method_names, register_method
from kglfr.train.trainer import Trainer


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("methods"), ids=8, keypoints=False)[0]


@pytest.fixture
def toy():
    """A method with infrared first, then visible, and one extra loss term; unregistered afterwards."""

    @register_method("toy")
    class Toy(Method):
        defaults = {"loss": {"triplet": "wrt", "kmlfr": False}, "augment": {"erasing": "none"}}

        def views(self, cfg):
            return (View("infrared", Modality.INFRARED), View("visible", Modality.VISIBLE))

        def terms(self, out, batch, cfg, extra):
            losses = super().terms(out, batch, cfg, extra)
            spread = out["global"].float().var(0).mean()
            losses.total = losses.total + 0.01 * spread
            losses.parts["spread"] = spread.detach()
            return losses

    yield Toy
    del methods._REGISTRY["toy"]


def test_a_toy_method_trains_a_step_without_touching_the_trainer(store, toy):
    cfg = C.load_config("sysu/kglfr", [f"data.store={store}", *TINY_TRAIN, "method.name=toy", "optim.lr=0.0001"])
    assert cfg.loss.triplet == "wrt" and cfg.augment.erasing == "none"  # the method's defaults
    trainer = Trainer(cfg)
    assert trainer.cache is None  # the toy needs no keypoints
    trainer.begin_epoch(0)
    batch = next(iter(trainer.data.epoch(0, prefetch=0)))
    assert batch.modalities.tolist() == [int(Modality.INFRARED)] * 6 + [int(Modality.VISIBLE)] * 6
    assert batch.view.tolist() == [0] * 6 + [1] * 6 and trainer.data.batch_size == 12
    losses = trainer.run_step(batch)
    assert list(losses.parts) == ["id", "triplet", "acc", "spread", "loss"]
    assert torch.isfinite(losses.total)


def test_an_unknown_method_lists_the_registered_ones():
    assert {"agw", "caj", "kglfr", "kglfr_caj"} <= set(method_names())
    with pytest.raises(C.ConfigError, match="method.name must be a registered method .*agw, caj"):
        C.load_config("sysu/kglfr", ["method.name=cja"])
    with pytest.raises(KglfrError, match="unknown method 'cja'"):
        get_method("cja")


def test_a_method_refuses_what_it_cannot_do():
    with pytest.raises(C.ConfigError, match="override 'augment.erasing=keypoint': augment.erasing keypoint erasing"):
        C.load_config("sysu/agw", ["augment.erasing=keypoint"])
    assert C.load_config("sysu/agw", ["augment.erasing=random"]).augment.erasing == "random"


def test_bases_are_a_list_merged_in_order_and_may_be_preset_names(tmp_path):
    (tmp_path / "small.yaml").write_text("data:\n  height: 64\n  width: 32\ntrain:\n  epochs: 3\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("_base_: [sysu/caj, small.yaml]\ntrain:\n  epochs: 5\n")
    cfg = C.load_config(mine)
    assert cfg.method.name == "caj" and cfg.loss.triplet == "adp"  # from the preset name, with CAJ's defaults
    assert (cfg.data.height, cfg.data.width, cfg.train.epochs) == (64, 32, 5)  # the later base, then the file
    assert list(cfg.optim.milestones) == [20, 50]
    mine.write_text("_base_: [sysu/nothing]\n")
    with pytest.raises(C.ConfigError, match="'_base_' 'sysu/nothing' is neither a file beside it nor a preset"):
        C.load_config(mine)


def test_the_table2_presets_keep_the_kglfr_method():
    for p in ("sysu/baseline", "sysu/kmlfr", "sysu/random_erasing", "sysu/kegfr", "sysu/kglfr", "demo"):
        assert C.load_config(p).method.name == "kglfr"


def test_each_method_names_itself_and_its_published_figures_for_reports():
    from kglfr.train import config as C

    def of(preset):
        cfg = C.load_config(preset, ["data.store=S"])
        m = get_method(cfg.method.name)
        return m.label(cfg), m.published(cfg, "sysu-all")

    label, fig = of("sysu/baseline")  # a Table 2 row of the kglfr method: the paper's Table 2
    assert label == "baseline" and (fig["rank1"], fig["mAP"]) == (52.88, 51.45) and "Table 2 row 1" in fig["source"]
    label, fig = of("demo")
    assert label == "KGLFR" and (fig["rank1"], fig["mAP"]) == (70.44, 67.59)
    label, fig = of("sysu/caj")
    assert label == "caj" and (fig["rank1"], fig["mAP"], fig["mINP"]) == (69.88, 66.89, 53.61)
    assert of("sysu/kglfr_caj") == ("kglfr_caj", None)
