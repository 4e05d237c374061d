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
from kglfr.train.trials import PAPER, PLAN, collect_trials

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


@pytest.fixture(scope="module")
def ten_trials(tmp_path_factory):
    """A synthetic RegDB store (10 trial splits) and ``kglfr train --trial all`` on it at tiny size, run once."""
    from kglfr.data.datasets import load_dataset
    from kglfr.data.store import prepare_store
    from kglfr.data.synth import synthesize
    from kglfr.keypoints.build import build_cache, build_pose_backend

    root = tmp_path_factory.mktemp("regdb")
    synth = synthesize(root / "synth", "regdb", ids=8, seed=0, images_per_camera=2, height=64, width=32)
    store, _ = prepare_store(load_dataset("regdb", synth.root), root / "store", height=64, width=32, progress=False)
    build_cache(store, build_pose_backend("oracle", store), progress=False)
    out = root / "R"
    # the overrides stand after --trial all, as a user types them
    rc = main(["train", "--config", "regdb/kglfr", "--out", str(out), f"data.store={store.path}", "--trial", "all",
               "--no-progress", *TRIAL_RUN])  # fmt: skip
    return rc, out, store.path


def test_trial_all_ends_with_one_table_of_the_ten_trials(ten_trials, capsys):
    rc, out, _ = ten_trials
    assert rc == 0
    table = json.loads((out / "RESULT.json").read_text())
    assert table["trial_ids"] == list(range(1, 11)) and table["complete"] and table["missing"] == {}
    assert table["trials"] == "trials 1-10 of 10"
    assert set(table["results"]) == {"regdb-v2i", "regdb-i2v"}
    for p, by in table["results"].items():
        assert set(by) == {"bn", "pool"}
        for kind, r in by.items():
            assert r["trial_ids"] == list(range(1, 11)) and r["num_trials"] == 10 and len(r["trials"]) == 10
            for t in range(1, 11):  # every row is its own trial's model on its own split
                own = json.loads((out / f"trial{t}" / "results" / f"{p}_{kind}.json").read_text())
                assert own["trial_ids"] == [t] and own["num_trials"] == 1
                assert r["trials"][t - 1] == own["trials"][0]
            assert r["mean"]["rank1"] == pytest.approx(sum(x["rank1"] for x in r["trials"]) / 10)
    report = (out / "report.md").read_text()
    assert "trials 1-10 of 10" in report and "mean ± std (10 trials)" in report
    assert f"| KGLFR paper | {PAPER['regdb-v2i']['rank1']:.2f}" in report and "90.83" in report
    for t in range(1, 11):
        assert f"\n| {t} | " in report


def test_evaluate_checkpoint_of_a_trials_folder_scores_each_trial_on_its_own_split(ten_trials, tmp_path, capsys):
    _, out, _ = ten_trials
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--out", str(tmp_path / "E")]) == 0
    assert "trials 1-10 of 10" in capsys.readouterr().out
    trained = json.loads((out / "RESULT.json").read_text())["results"]
    again = json.loads((tmp_path / "E" / "RESULT.json").read_text())
    assert again["trial_ids"] == list(range(1, 11)) and (tmp_path / "E" / "report.md").is_file()
    for p, by in trained.items():
        for kind, r in by.items():
            assert again["results"][p][kind]["trial_ids"] == list(range(1, 11))
            assert again["results"][p][kind]["mean"] == pytest.approx(r["mean"], abs=1e-6)


def test_a_failed_trial_is_named_left_out_and_resumed(ten_trials, tmp_path, capsys):
    _, src, store = ten_trials
    out = tmp_path / "R"
    shutil.copytree(src, out)
    shutil.rmtree(out / "trial10")  # never started
    (out / "trial9" / "summary.json").unlink()  # stopped after its last checkpoint, before its report
    assert collect_trials(out)[1] == {9: "unfinished", 10: "not started"}
    plan = json.loads((out / PLAN).read_text())
    good = plan["config"]["data"]["store"]
    plan["config"]["data"]["store"] = str(tmp_path / "gone")  # trial 10 (started from the plan) fails; 9 resumes
    (out / PLAN).write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress"]) != 0
    captured = capsys.readouterr()
    assert "trial 10 failed" in captured.err and "trial(s) 10 of" in captured.err
    table = json.loads((out / "RESULT.json").read_text())
    assert table["trial_ids"] == list(range(1, 10)) and not table["complete"]
    assert table["missing"]["10"].startswith("failed: ") and "gone" in table["missing"]["10"]
    assert table["trials"].startswith("trials 1-9 of 10; 10 failed: ")
    assert table["results"]["regdb-v2i"]["bn"]["num_trials"] == 9
    assert "trials 1-9 of 10; 10 failed" in (out / "report.md").read_text()

    plan["config"]["data"]["store"] = good
    (out / PLAN).write_text(json.dumps(plan))
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    table = json.loads((out / "RESULT.json").read_text())
    assert table["trial_ids"] == list(range(1, 11)) and table["complete"]
    assert json.loads((out / PLAN).read_text())["failed"] == {}


def test_trial_all_into_a_trials_folder_is_refused(ten_trials, capsys):
    _, out, store = ten_trials
    rc = main(["train", "--config", "regdb/kglfr", "--out", str(out), f"data.store={store}", "--trial", "all"])
    assert rc != 0 and "--resume" in capsys.readouterr().err


def test_evaluate_checkpoint_of_a_folder_without_trials_says_what_to_give(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "holds no checkpoint.pt and no trial runs" in err
