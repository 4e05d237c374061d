"""Training configs: presets, inheritance, overrides, unknown keys."""

import json
import math
from pathlib import Path
from typing import get_args

import pytest

from kglfr.model import Arch, model_names
from kglfr.train import config as C
from kglfr.train.ablation import TABLE2, method_overrides

# Every preset as resolved before the schema became the one source of defaults (captured from that code).
RESOLVED = json.loads((Path(__file__).parent / "presets_resolved.json").read_text())


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
    cfg = C.load_config(mine, ["data.store=/x", "optim.milestones=[2, 4]", "model.width=64", "model.pretrained=w.pth"])
    assert cfg.train.epochs == 7 and cfg.model.arch == "resnet18"  # from demo.yaml
    assert cfg.model.non_local is False and cfg.loss.kmlfr is True  # demo <- schema
    assert list(cfg.optim.milestones) == [2, 4] and cfg.model.pretrained == "w.pth" and cfg.data.store == "/x"
    again = C.config_from_dict(C.to_dict(cfg))
    assert C.diff(C.to_dict(again), C.to_dict(cfg)) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown config key 'train.epoch'; closest valid keys: train.epochs"),
        ("model.pretrain=x", "closest valid keys: model.pretrained"),
        ("train.epochs=abc", "bad value for 'train.epochs'"),
        ("model.arch=vgg16", "model.arch='vgg16' is not one of resnet18, resnet34, resnet50"),
        ("augment.erasing_prob=2", "override 'augment.erasing_prob=2': augment.erasing_prob must be at most 1"),
        ("data.height=-5", "override 'data.height=-5': data.height must be at least 1, got -5"),
        ("optim.lr=nan", "override 'optim.lr=nan': optim.lr must be a finite number, got nan"),
        ("optim.lr=.inf", "optim.lr must be a finite number"),
        ("train.amp=of", "override 'train.amp=of': train.amp='of' is not one of auto, off, bf16, fp16"),
        ("train.device=gpu", "train.device must be auto, cpu, cuda or cuda:N"),
        ("model.pretrained=null", "model.pretrained must be imagenet, none"),
        ("epochs", "is not key=value"),
    ],
)
def test_bad_overrides_are_one_clear_error(override, message):
    with pytest.raises(C.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        C.load_config("sysu/kglfr", [override])


def test_unknown_key_in_a_file_and_unknown_preset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: " + str(C.PRESET_DIR / "sysu" / "kglfr.yaml") + "\nloss:\n  kmlfr_weight: 0.5\n")
    with pytest.raises(C.ConfigError, match="unknown config key 'loss.kmlfr_weight'"):
        C.load_config(bad)
    with pytest.raises(C.ConfigError, match="presets: demo, demo_caj, llcm/agw, llcm/caj, llcm/kglfr"):
        C.load_config("sysu/kglrf")
    with pytest.raises(C.ConfigError, match="data.store is not set"):
        C.require(C.load_config("sysu/kglfr"), "data.store")


def test_every_preset_resolves_to_the_values_it_had_before_the_schema_held_the_defaults():
    """Only model.pretrained changed meaning: null (hub cache, else random) became imagenet or, for the
    demo, none (its setting when the hub cache is empty); random_erasing_w05 and optim.scale_lr are new.
    Issue 26 added method.name, model.nl_width, loss.adp_*, augment.channel_erasing_prob / grey_prob (in the
    file with their defaults) and the method presets (agw, caj, kglfr_caj per dataset, demo_caj); issue 27
    added model.width (64; the demo's recipe went to 32)."""
    expected = {p: v for p, v in RESOLVED.items() if p != "base"}  # base.yaml became the schema
    expected["sysu/random_erasing_w05"] = json.loads(json.dumps(expected["sysu/random_erasing"]))
    expected["sysu/random_erasing_w05"]["loss"]["global_weight"] = 0.5
    assert sorted(C.presets()) == sorted(expected)
    for preset, values in expected.items():
        assert values["model"].pop("pretrained") is None
        got = C.to_dict(C.load_config(preset))
        assert got["optim"].pop("scale_lr") is False, preset  # a key added since, off by default
        assert got["train"].pop("compile") == "off", preset  # a key added since, off by default
        assert got["eval"].pop("amp") == "auto", preset  # a key added since: auto evaluates in float32
        assert got["model"].pop("pretrained") == ("none" if preset.startswith("demo") else "imagenet"), preset
        assert got["model"].pop("width") == (32 if preset.startswith("demo") else 64), preset  # added since
        assert got == values, (preset, C.diff(got, values))


def test_random_erasing_control_row_differs_from_kegfr_in_the_erasing_alone():
    control, kegfr = (C.to_dict(C.load_config(p)) for p in ("sysu/random_erasing_w05", "sysu/kegfr"))
    assert C.diff(control, kegfr) == ["augment.erasing"]
    assert C.diff(control, C.to_dict(C.load_config("sysu/random_erasing"))) == ["loss.global_weight"]


def test_choices_come_from_the_types_and_arch_from_the_model_registry():
    assert C.choices()["train.amp"] == ("auto", "off", "bf16", "fp16")
    assert C.choices()["model.arch"] == get_args(Arch) == tuple(model_names())
    with pytest.raises(C.ConfigError, match="model.last_stride=3 is not one of 1, 2"):
        C.load_config("demo", ["model.last_stride=3"])


@pytest.mark.parametrize("text", ["off", "'off'", '"off"', "on", "bf16", "fp16", "auto"])
def test_every_documented_choice_is_accepted_as_typed(text):
    key = "train.channels_last" if text == "on" else "train.amp"
    assert C.load_config("demo", [f"{key}={text}"])[key.split(".")[0]][key.split(".")[1]] == text.strip("'\"")


@pytest.mark.parametrize(("text", "want"), [("false", "off"), ("true", "on"), ("False", "off"), ("off", "off")])
def test_on_off_keys_take_true_and_false(text, want, tmp_path):
    assert C.load_config("demo", [f"train.channels_last={text}"]).train.channels_last == want
    assert C.load_config("demo", [f"train.compile={text}"]).train.compile == want
    f = tmp_path / "mine.yaml"
    f.write_text("_base_: " + str(C.PRESET_DIR / "demo.yaml") + f"\ntrain:\n  channels_last: {text}\n")
    assert C.load_config(f).train.channels_last == want
    if want == "off":  # amp and eval.amp have off (no on): false is off
        cfg = C.load_config("demo", [f"train.amp={text}", f"eval.amp={text}"])
        assert cfg.train.amp == cfg.eval.amp == "off"
    else:
        with pytest.raises(C.ConfigError, match="train.amp=True is not one of auto, off, bf16, fp16"):
            C.load_config("demo", [f"train.amp={text}"])


def test_yaml_words_stay_strings_in_files_and_booleans_still_read(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("_base_: " + str(C.PRESET_DIR / "demo.yaml") + "\ntrain:\n  amp: off\n  channels_last: on\n"
                 "  tensorboard: false\nmodel:\n  non_local: off\n")  # fmt: skip
    cfg = C.load_config(f, ["eval.flip=true", "model.pretrained=none"])
    assert cfg.train.amp == "off" and cfg.train.channels_last == "on" and cfg.train.tensorboard is False
    assert cfg.model.non_local is False and cfg.eval.flip is True and cfg.model.pretrained == "none"


def test_a_bad_value_in_a_file_is_blamed_on_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("_base_: " + str(C.PRESET_DIR / "demo.yaml") + "\ndata:\n  height: -5\n")
    with pytest.raises(C.ConfigError, match=f"^{f.resolve()}.*data.height must be at least 1"):
        C.load_config(f.resolve())
    with pytest.raises(C.ConfigError, match=r"^override 'data.height=-5'"):
        C.load_config("demo", ["data.height=-5"])
    assert math.isclose(C.load_config("demo", ["optim.lr=1e-3"]).optim.lr, 1e-3)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    f = tmp_path / "empty.yaml"
    f.write_text(text)
    with pytest.raises(C.ConfigError, match="is empty; give at least one key"):
        C.load_config(f)


def test_a_run_saved_with_pretrained_null_still_reads():
    saved = C.to_dict(C.load_config("demo", ["data.store=/x"]))
    saved["model"]["pretrained"] = None
    assert C.config_from_dict(saved).model.pretrained == "none"
