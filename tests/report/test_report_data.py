"""The report page's data as pure functions: camera-pair Rank-1, result tables, query rows, CMC means."""

from __future__ import annotations

import numpy as np

from kglfr.eval.features import FeatureSet
from kglfr.inference.failures import Ranking
from kglfr.report.data import camera_pair_rank1, mean_cmc, query_rows, results_table, used_images
from kglfr.report.page import heat_colour


def test_camera_pair_rank1_counts_each_gallery_camera_alone():
    # two infrared queries (cam 3: pid 1, cam 6: pid 2); gallery: cam 1 holds pids 1, 2; cam 2 holds pid 1 only
    q_pids, q_cams = np.array([1, 2]), np.array([3, 6])
    g_pids, g_cams = np.array([1, 2, 1, 2]), np.array([1, 1, 2, 4])
    # query 1: right in cam 1 and in cam 2 (cam 4 holds no pid 1); query 2: wrong in cam 1 (pid 1 wins), right in cam 4
    sim = np.array([[0.9, 0.1, 0.2, 0.95], [0.8, 0.7, 0.1, 0.6]])
    out = camera_pair_rank1(sim, q_pids, g_pids, q_cams, g_cams)
    assert out["query_cams"] == [3, 6] and out["gallery_cams"] == [1, 2, 4]
    assert out["cells"] == {(3, 1): (100.0, 1), (6, 1): (0.0, 1), (3, 2): (100.0, 1), (6, 4): (100.0, 1)}
    removed = (q_cams[:, None] == 3) & (g_cams[None, :] == 2)  # SYSU: camera-3 queries never see camera 2
    assert (3, 2) not in camera_pair_rank1(sim, q_pids, g_pids, q_cams, g_cams, removed)["cells"]


def test_results_table_holds_the_json_figures():
    keys = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
    trials = [{k: 10.0 * i + j for j, k in enumerate(keys)} for i in range(3)]
    mean = {k: float(np.mean([t[k] for t in trials])) for k in keys}
    result = {"trial_ids": [0, 1, 2], "trials": trials, "mean": mean, "std": {k: 1.5 for k in keys}}
    table = results_table(result, {"rank1": 70.44, "mAP": 67.59, "source": "paper"})
    assert table["columns"] == ["Rank-1", "Rank-5", "Rank-10", "Rank-20", "mAP", "mINP"]
    assert [r["values"] for r in table["rows"]] == [[t[k] for k in keys] for t in trials]
    assert table["mean"] == [result["mean"][k] for k in keys] and table["std"] == [1.5] * 6
    assert table["published"] == [70.44, None, None, None, 67.59, None]
    assert results_table(result)["published"] is None


def test_query_rows_and_the_images_they_use():
    fs = FeatureSet(np.eye(4, dtype=np.float32), np.array([1, 2, 1, 2]), np.array([3, 3, 1, 1]),
                    np.array(["q1.jpg", "q2.jpg", "g1.jpg", "g2.jpg"]), np.array([1, 1, 0, 0]))  # fmt: skip
    r = Ranking("sysu-all", q=np.array([0, 1]), g=np.array([2, 3]), top=np.array([[0, 1], [0, 1]]),
                sim=np.array([[0.9, 0.2], [0.8, 0.7]]), ap=np.array([1.0, 0.5]), first_rank=np.array([1, 2]),
                valid=np.array([True, True]))  # fmt: skip
    thumbs = {int(i): t for t, i in enumerate(used_images([r]))}
    assert sorted(thumbs) == [0, 1, 2, 3]
    rows = query_rows(r, fs, thumbs)
    assert rows[0] == [thumbs[0], "q1.jpg", 1, 3, 100.0, 1, [thumbs[2], thumbs[3]], "10", [0.9, 0.2]]
    assert rows[1][4:8] == [50.0, 2, [thumbs[2], thumbs[3]], "01"]
    assert r.worst(1) == [1]


def test_mean_cmc_and_heat_colours():
    assert np.allclose(mean_cmc([np.array([0.5, 1.0, 1.0]), np.array([0.0, 0.5])]), [25.0, 75.0])
    assert heat_colour(0) == "rgb(255, 140, 150)" and heat_colour(100) == "rgb(130, 255, 150)"
    assert heat_colour(-5) == heat_colour(0) and heat_colour(250) == heat_colour(100)
