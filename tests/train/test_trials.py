"""RegDB's ten trials in one command: a model per trial, each labelled with its own number, and one table
across them (``kglfr train --trial all``, ``--resume`` of such a folder, ``kglfr evaluate --checkpoint R``)."""

from __future__ import annotations

import json
import shutil

import pytest
from layouts import TINY_TRAIN

from kglfr.cli import main
from kglfr.errors import KglfrError
from kglfr.eval.aggregate import combine_trials, describe_trials, spans
from kglfr.train.trials import PAPER, PLAN

TRIAL_RUN = (*TINY_TRAIN, "train.epochs=1", "train.iters_per_epoch=1", "train.eval_every=0")


def row(v: float) -> dict:
    return {"rank1": v, "rank5": v + 1, "rank10": v + 2, "rank20": v + 3, "mAP": v - 1, "mINP": v - 2}


def one_trial(t: int, v: float, **extra) -> dict:
    base = {"protocol": "regdb-v2i", "title": "RegDB visible-to-thermal", "shot": "all images", "distance": "cosine",
            "reranking": False, "rerank_params": None, "feature": "bn", "num_trials": 1, "trial_ids": [t],
            "trials": [row(v)], "mean": row(v), "std": row(0), "num_queries": [4], "num_gallery": [4],
            "queries_without_positive": [0], "features": [f"t{t}"], "features_sha256": [None], "epoch": 3}  # fmt: skip
    return {**base, **extra}


def test_combine_trials_stacks_rows_in_trial_order_with_mean_and_sample_std():
    out = combine_trials([one_trial(10, 60.0), one_trial(2, 20.0), one_trial(1, 40.0)])
    assert out["trial_ids"] == [1, 2, 10] and out["num_trials"] == 3
    assert [r["rank1"] for r in out["trials"]] == [40.0, 20.0, 60.0]
    assert out["features"] == ["t1", "t2", "t10"] and out["epochs"] == [3, 3, 3] and "epoch" not in out
    assert out["mean"]["rank1"] == pytest.approx(40.0) and out["mean"]["mAP"] == pytest.approx(39.0)
    assert out["std"]["rank1"] == pytest.approx(20.0)  # sample std (n - 1), as kglfr evaluate
    assert combine_trials([one_trial(3, 50.0)])["std"]["rank1"] == 0.0


@pytest.mark.parametrize(
    "bad, words",
    [
        ([one_trial(1, 1.0), one_trial(2, 1.0, feature="pool")], "feature"),
        ([one_trial(1, 1.0), one_trial(2, 1.0, protocol="regdb-i2v")], "protocol"),
        ([one_trial(1, 1.0), one_trial(1, 2.0)], "twice"),
        ([], "no trial"),
    ],
)
def test_combine_trials_refuses_results_that_do_not_belong_together(bad, words):
    with pytest.raises(KglfrError, match=words):
        combine_trials(bad)


def test_describe_trials_names_every_trial_left_out():
    assert spans([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8" and spans([]) == "none"
    line = describe_trials(range(1, 9), range(1, 11), {10: "failed: boom", 9: "unfinished"})
    assert line == "trials 1-8 of 10; 9 unfinished, 10 failed: boom"
