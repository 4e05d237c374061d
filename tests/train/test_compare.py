"""``kglfr compare``: the plan (method -> preset, what --base gives), the rows and table, the published
figures, and end to end on a tiny store: resume by finished run, a failed run reported beside the others."""

from __future__ import annotations

import json
import logging

import pytest
from layouts import synthetic_store

from kglfr.cli import main
from kglfr.errors import KglfrError
from kglfr.eval.published import published
from kglfr.train.compare import (
    RUN_MARK,
    Outcome,
    aggregate,
    compare_payload,
    compare_table,
    format_seconds,
    merge_method,
    method_preset,
    plan_compare,
    run_config,
)

# One step of the demo's ResNet-18 at 64x32, evaluated on the table's protocol alone (one gallery draw).
TINY = ["data.ids_per_batch=3", "data.per_modality=2", "train.epochs=1", "train.iters_per_epoch=1", "eval.trials=1",
        "eval.batch_size=64", "eval.protocols=[sysu-all]", "train.tensorboard=false"]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("compare"), ids=10, keypoints=True)[0]


def test_a_method_name_is_the_preset_of_the_store_dataset():
    assert method_preset("caj", "sysu") == "sysu/caj"
    assert method_preset("kglfr", "regdb") == "regdb/kglfr"
    assert method_preset("sysu/baseline", "llcm") == "sysu/baseline"  # a preset name is kept
    with pytest.raises(KglfrError, match="custom.*no method presets"):
        method_preset("kglfr", "custom")


def test_the_method_sections_come_from_the_method_and_the_rest_from_the_base():
    base = {"data": {"height": 64}, "model": {"arch": "resnet18"}, "loss": {"kmlfr": True}, "train": {"epochs": 12}}
    method = {"data": {"height": 288}, "model": {"arch": "resnet50"}, "loss": {"kmlfr": False},
              "augment": {"erasing": "none"}, "train": {"epochs": 100}}  # fmt: skip
    assert merge_method(base, method) == {"data": {"height": 64}, "model": {"arch": "resnet18"},
                                          "loss": {"kmlfr": False}, "augment": {"erasing": "none"},
                                          "train": {"epochs": 12}}  # fmt: skip


def test_run_config_under_a_base_preset_and_without_one():
    cfg = run_config("sysu/baseline", "demo", "S", 3, ["train.epochs=2"])
    assert (cfg.model.arch, cfg.model.pretrained, cfg.data.height, cfg.optim.milestones) == ("resnet18", "none", 64,
                                                                                              [9, 11])  # fmt: skip
    assert (cfg.loss.kmlfr, cfg.loss.global_weight, cfg.augment.erasing) == (False, 1.0, "none")  # the method
    assert cfg.loss.label_smoothing == 0.0  # the loss section is the method's whole, not the demo's 0.1
    assert (cfg.data.store, cfg.train.seed, cfg.train.epochs) == ("S", 3, 2)
    own = run_config("sysu/baseline", None, "S", 0, [])
    assert (own.model.arch, own.data.height, own.train.epochs) == ("resnet50", 288, 100)
    with pytest.raises(KglfrError, match="override 'train.epochs=0'"):
        run_config("sysu/baseline", "demo", "S", 0, ["train.epochs=0"])


def test_the_plan_is_every_method_by_every_seed(tmp_path):
    plan = plan_compare(["baseline", "sysu/kglfr"], [0, 1], "sysu", "S", tmp_path, base="demo")
    assert [(r.method, r.seed, r.preset, r.folder.name) for r in plan] == [
        ("baseline", 0, "sysu/baseline", "baseline-seed0"),
        ("baseline", 1, "sysu/baseline", "baseline-seed1"),
        ("sysu/kglfr", 0, "sysu/kglfr", "sysu-kglfr-seed0"),
        ("sysu/kglfr", 1, "sysu/kglfr", "sysu-kglfr-seed1"),
    ]
    assert [r.cfg.train.seed for r in plan] == [0, 1, 0, 1]
    with pytest.raises(KglfrError, match="'nosuch' has no preset 'sysu/nosuch'"):
        plan_compare(["kglfr", "nosuch"], [0], "sysu", "S", tmp_path)
    with pytest.raises(KglfrError, match="twice"):
        plan_compare(["kglfr", "kglfr"], [0], "sysu", "S", tmp_path)


def test_published_figures():
    assert published("caj", "sysu-all") == {"rank1": 69.88, "mAP": 66.89, "mINP": 53.61,
                                            "source": published("caj", "regdb-v2i")["source"]}  # fmt: skip
    assert published("sysu/agw", "regdb-v2i")["mINP"] == 50.19
    assert published("kglfr", "sysu-all")["mINP"] is None and published("kglfr", "regdb-i2v")["rank1"] == 90.83
    assert published("kglfr_caj", "sysu-all") is None and published("agw", "llcm-i2v") is None


def _outcome(method, seed, r1, state="trained", seconds=10.0, reason=None):
    metrics = None if state == "failed" else {"rank1": r1, "mAP": r1 - 1, "mINP": r1 - 2}
    return Outcome(method, seed, f"sysu/{method}", f"OUT/{method}-seed{seed}", state, seconds, metrics, 5.0, reason)


def test_rows_are_mean_and_sample_std_over_seeds_and_a_failed_run_is_a_row():
    outcomes = [_outcome("caj", 0, 60.0), _outcome("caj", 1, 62.0, "kept", 20.0), _outcome("kglfr", 0, 0, "failed",
                3.0, "the loss became non-finite | at step 1"), _outcome("kglfr", 1, 70.0)]  # fmt: skip
    rows = aggregate(outcomes, "sysu-all")
    assert [r["method"] for r in rows] == ["caj", "kglfr"]
    assert rows[0]["rank1"]["mean"] == 61.0 and rows[0]["rank1"]["std"] == pytest.approx(1.41421356)
    assert rows[0]["seconds"]["mean"] == 15.0 and rows[0]["published"]["rank1"] == 69.88
    assert rows[1]["seeds"] == [1] and rows[1]["failed"] == [{"seed": 0, "reason": outcomes[2].reason}]
    table = compare_payload(outcomes, store="S", dataset="sysu", protocol="sysu-all",
                            protocol_title="SYSU-MM01 all-search", base="demo", overrides=[], synthetic=True,
                            caption="cap")  # fmt: skip
    text = compare_table(table)
    assert "| method | runs | Rank-1 | mAP | mINP | time per run | published (real SYSU-MM01 all-search)" in text
    assert "| caj | 2 | 61.00 ± 1.41 | 60.00 ± 1.41 | 59.00 ± 1.41 | 15 s | 69.88 / 66.89 / 53.61 |" in text
    assert "| kglfr | 1 | 70.00 | 69.00 | 68.00 | 10 s | 70.44 / 67.59 / – |" in text
    assert "| kglfr (seed 0) | failed: the loss became non-finite \\| at step 1 | – |" in text
    assert "not comparable" in text and "from the demo preset" in text
    plain = compare_table({**table, "synthetic": False})
    assert "published (SYSU-MM01 all-search)" in plain and "not comparable" not in plain


def test_format_seconds():
    assert [format_seconds(s) for s in (None, 4.25, 41.4, 125, 3725)] == ["–", "4.2 s", "41 s", "2 min 05 s",
                                                                        "1 h 02 min"]  # fmt: skip


def test_compare_trains_every_method_and_seed_then_a_rerun_only_prints_the_table(store, tmp_path, capsys, caplog):
    out = tmp_path / "cmp"
    argv = ["compare", "--store", str(store), "--out", str(out), "--methods", "baseline,kglfr", "--seeds", "2",
            "--base", "demo", "--no-progress", *TINY]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.count(": training sysu/") == 4 and "[4/4] kglfr seed 1: done in" in first
    table = json.loads((out / "compare.json").read_text())
    assert [(r["method"], r["seeds"], r["failed"]) for r in table["rows"]] == [("baseline", [0, 1], []),
                                                                               ("kglfr", [0, 1], [])]  # fmt: skip
    assert all(len(r["rank1"]["values"]) == 2 for r in table["rows"])
    assert "erasing: keypoint" in (out / "kglfr-seed1" / "config.yaml").read_text()
    assert "arch: resnet18" in (out / "baseline-seed0" / "config.yaml").read_text()
    md = (out / "compare.md").read_text()
    assert md in first and "| baseline | 2 |" in md and "| 70.44 / 67.59 / – |" in md
    page = (out / "compare.html").read_text()
    assert "kglfr seed 1" in page and f'data-key="rank1">{table["rows"][0]["rank1"]["mean"]:.2f}' in page

    assert main(argv) == 0  # every run finished with its config on this store: nothing trains
    again = capsys.readouterr().out
    assert ": training sysu/" not in again and "4 of 4 runs finished earlier" in again
    assert (out / "compare.md").read_text() == md and md in again

    caplog.set_level(logging.INFO, logger="kglfr.train.trainer")
    (out / "baseline-seed1" / RUN_MARK).unlink()  # as if stopped after its last checkpoint, before its mark
    assert main(argv) == 0
    third = capsys.readouterr().out
    assert third.count(": training sysu/") == 1 and "[2/4] baseline seed 1: done in" in third
    assert "is finished (1 of 1 epochs): nothing to train" in caplog.text and "3 of 4 runs finished earlier" in third


def test_a_failed_run_is_reported_and_the_others_finish(store, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--store",
        str(store),
        "--out",
        str(out),
        "--methods",
        "kglfr,baseline",
        "--base",
        "demo",
        "--no-progress",
        *TINY,
        "data.keypoints=hrnet",
    ]  # no hrnet cache: kglfr fails, the baseline needs none
    assert main(argv) == 2  # a kglfr error, after the table
    captured = capsys.readouterr()
    assert "[1/2] kglfr seed 0: failed after" in captured.out and "[2/2] baseline seed 0: done in" in captured.out
    assert "1 of 2 runs failed (kglfr seed 0" in captured.err and len(captured.err.strip().splitlines()) == 1
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert rows["baseline"]["seeds"] == [0] and rows["kglfr"]["seeds"] == []
    assert "keypoints" in rows["kglfr"]["failed"][0]["reason"]
    assert "| kglfr (seed 0) | failed: this config uses keypoints" in (out / "compare.md").read_text()


def test_a_bad_method_or_override_is_one_line_and_nothing_is_written(store, tmp_path, capsys):
    out = tmp_path / "cmp"
    for bad in (["--methods", "kglfr,nosuch"], ["--methods", "kglfr", "train.epochs=0"]):
        assert main(["compare", "--store", str(store), "--out", str(out), *bad]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and not out.exists()
        assert "--methods: 'nosuch' has no preset 'sysu/nosuch'" in err or "override 'train.epochs=0'" in err
