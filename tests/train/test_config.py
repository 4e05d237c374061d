"""Training configs: presets, inheritance, overrides, unknown keys."""

import pytest

from kglfr.train import config as C
from kglfr.train.ablation import TABLE2, method_overrides


def test_every_preset_loads_and_the_table2_rows_differ_only_in_their_method():
    names = C.presets()
    for p in ("demo", "sysu/baseline", "sysu/kmlfr", "sysu/random_erasing", "sysu/kegfr", "sysu/kglfr",
              "regdb/kglfr", "llcm/kglfr"):  # fmt: skip
        assert p in names
        C.load_config(p)
    full = C.to_dict(C.load_config("sysu/kglfr"))
    methods = {}
    for row in TABLE2:
        preset, re_, kegfr, kmlfr = row.preset, row.random_erasing, row.kegfr, row.kmlfr
        cfg = C.load_config(preset)
        assert cfg.loss.kmlfr == kmlfr
        assert cfg.augment.erasing == ("keypoint" if kegfr else "random" if re_ else "none")
        changed = C.diff(C.to_dict(cfg), full)
        assert all(k.split(".")[0] in ("loss", "augment") for k in changed), changed
        methods[preset] = method_overrides(preset)
    assert methods["sysu/kglfr"] == []
    assert sorted(methods["sysu/baseline"]) == ["augment.erasing=none", "loss.global_weight=1.0", "loss.kmlfr=False"]
    assert C.load_config("sysu/kglfr").loss.global_weight == 0.5  # eq. 6
    assert C.load_config("sysu/baseline").loss.global_weight == 1.0  # Table 2 row 1: hardest triplet, weight 1


def test_base_inheritance_and_overrides(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"_base_: {C.PRESET_DIR / 'demo.yaml'}\ntrain:\n  epochs: 7\n")
    cfg = C.load_config(mine, ["data.store=/x", "optim.milestones=[2, 4]", "model.pretrained=null"])
    assert cfg.train.epochs == 7 and cfg.model.arch == "resnet18"  # from demo.yaml
    assert cfg.model.non_local is False and cfg.loss.kmlfr is True  # demo <- base
    assert list(cfg.optim.milestones) == [2, 4] and cfg.model.pretrained is None and cfg.data.store == "/x"
    again = C.config_from_dict(C.to_dict(cfg))
    assert C.diff(C.to_dict(again), C.to_dict(cfg)) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown config key 'train.epoch'; closest valid keys: train.epochs"),
        ("model.pretrain=x", "closest valid keys: model.pretrained"),
        ("train.epochs=abc", "bad value for 'train.epochs'"),
        ("model.arch=vgg16", "model.arch='vgg16' is not one of resnet18, resnet34, resnet50"),
        ("augment.erasing_prob=2", "augment.erasing_prob must be in [0, 1]"),
        ("epochs", "is not key=value"),
    ],
)
def test_bad_overrides_are_one_clear_error(override, message):
    with pytest.raises(C.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        C.load_config("sysu/kglfr", [override])


def test_unknown_key_in_a_file_and_unknown_preset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: " + str(C.PRESET_DIR / "base.yaml") + "\nloss:\n  kmlfr_weight: 0.5\n")
    with pytest.raises(C.ConfigError, match="unknown config key 'loss.kmlfr_weight'"):
        C.load_config(bad)
    with pytest.raises(C.ConfigError, match="presets: demo, llcm/kglfr"):
        C.load_config("sysu/kglrf")
    with pytest.raises(C.ConfigError, match="data.store is not set"):
        C.require(C.load_config("sysu/kglfr"), "data.store")
