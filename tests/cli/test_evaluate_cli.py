"""``kglfr evaluate``: the JSON result and table for good input, one clear line for bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from layouts import evaluate_error

from kglfr.cli import main
from kglfr.eval.features import load_features, save_features
from kglfr.eval.metrics import METRIC_KEYS


def sysu_arrays(seed=0, n_ids=8, drop_gallery_of=()):
    """A SYSU-like test set written as another codebase would: plain arrays, cam{c}/{pid:04d}/{n:04d}.jpg."""
    rng = np.random.default_rng(seed)
    pids, cams, paths = [], [], []
    for pid in range(1, n_ids + 1):
        for cam in range(1, 7):
            if pid in drop_gallery_of and cam not in (3, 6):
                continue
            for n in range(1, int(rng.integers(2, 6)) + 1):
                pids.append(pid)
                cams.append(cam)
                paths.append(f"cam{cam}/{pid:04d}/{n:04d}.jpg")
    pids = np.array(pids)
    feats = (rng.standard_normal((n_ids + 1, 32))[pids] + rng.standard_normal((len(pids), 32))).astype(np.float32)
    return {"feats": feats, "pids": pids, "cams": np.array(cams), "paths": np.array(paths)}


def write(tmp_path, name="feats.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_sysu_all_result_file_and_table(tmp_path, capsys):
    npz = write(tmp_path, **sysu_arrays())
    out = tmp_path / "res" / "sysu.json"
    assert main(["evaluate", "--features", npz, "--protocol", "sysu-all", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == "sysu-all" and res["reranking"] is False and res["distance"] == "cosine"
    assert res["shot"] == "single-shot" and res["trial_ids"] == list(range(10))
    assert len(res["trials"]) == 10
    for row in [*res["trials"], res["mean"], res["std"]]:
        assert list(row) == list(METRIC_KEYS)
        assert all(0.0 <= v <= 100.0 for v in row.values())
    assert res["mean"]["rank1"] == pytest.approx(np.mean([r["rank1"] for r in res["trials"]]))
    assert res["num_gallery"] == [8 * 4] * 10  # one image per identity and visible camera
    text = capsys.readouterr().out
    assert "SYSU-MM01 all-search" in text and "re-ranking: off" in text and "10 trials" in text
    for col in ("Rank-1", "Rank-5", "Rank-10", "Rank-20", "mAP", "mINP"):
        assert col in text
    assert "±" in text.splitlines()[-2] and "results written to" in text


def test_multi_shot_rerank_and_trials(tmp_path, capsys):
    npz = write(tmp_path, **sysu_arrays())
    out = tmp_path / "r.json"
    argv = [
        "evaluate",
        "--features",
        npz,
        "--protocol",
        "sysu-indoor",
        "--multi-shot",
        "--trials",
        "2",
        "--rerank",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["reranking"] is True and res["rerank_params"] == {"k1": 20, "k2": 6, "lambda": 0.3}
    assert res["shot"] == "multi-shot (10)" and len(res["trials"]) == 2
    assert "re-ranking: on" in capsys.readouterr().out


def test_regdb_one_file_per_trial(tmp_path, capsys):
    files = []
    for t in range(2):
        rng = np.random.default_rng(t)
        pids = np.repeat(np.arange(10), 4)
        cams = np.tile([1, 1, 2, 2], 10)
        paths = np.array(
            [f"{'Visible' if c == 1 else 'Thermal'}/{p}/{i}.bmp" for i, (p, c) in enumerate(zip(pids, cams))]
        )
        feats = rng.standard_normal((40, 16)).astype(np.float32)
        files += ["--features", str(save_features(tmp_path / f"t{t}.npz", feats, pids, cams, paths))]
    out = tmp_path / "regdb.json"
    assert main(["evaluate", *files, "--protocol", "regdb-i2v", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["trial_ids"] == [1, 2] and len(res["trials"]) == 2 and res["shot"] == "all images"
    err = evaluate_error(capsys, ["evaluate", *files, "--protocol", "regdb-i2v", "--trials", "10"])
    assert "one trial" in err


def test_save_features_round_trip(tmp_path):
    a = sysu_arrays()
    path = save_features(tmp_path / "sub" / "f.npz", a["feats"], a["pids"], a["cams"], a["paths"].tolist())
    fs = load_features(path)
    assert (fs.paths == a["paths"]).all() and (fs.pids == a["pids"]).all() and fs.feats.dtype == np.float32
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("drop,match", [("cams", "lacks key(s) cams"), ("paths", "lacks key(s) paths")])
def test_missing_key(tmp_path, capsys, drop, match):
    arrays = sysu_arrays()
    del arrays[drop]
    err = evaluate_error(capsys, ["evaluate", "--features", write(tmp_path, **arrays), "--protocol", "sysu-all"])
    assert match in err


def test_mismatched_lengths(tmp_path, capsys):
    arrays = sysu_arrays()
    arrays["pids"] = arrays["pids"][:-1]
    err = evaluate_error(capsys, ["evaluate", "--features", write(tmp_path, **arrays), "--protocol", "sysu-all"])
    assert "lengths differ" in err and "'pids' has" in err


def test_protocol_cameras_absent(tmp_path, capsys):
    arrays = sysu_arrays()
    vis = ~np.isin(arrays["cams"], (3, 6))
    arrays = {k: v[vis] for k, v in arrays.items()}
    err = evaluate_error(capsys, ["evaluate", "--features", write(tmp_path, **arrays), "--protocol", "sysu-all"])
    assert "cameras 3, 6" in err or "camera(s) 3, 6" in err


def test_other_bad_files(tmp_path, capsys):
    err = evaluate_error(capsys, ["evaluate", "--features", str(tmp_path / "nope.npz"), "--protocol", "sysu-all"])
    assert "does not exist" in err
    arrays = sysu_arrays()
    arrays["paths"] = arrays["paths"].astype(object)
    err = evaluate_error(capsys, ["evaluate", "--features", write(tmp_path, **arrays), "--protocol", "sysu-all"])
    assert "string array" in err
    (tmp_path / "junk.npz").write_text("not a zip")
    err = evaluate_error(capsys, ["evaluate", "--features", str(tmp_path / "junk.npz"), "--protocol", "sysu-all"])
    assert "not a readable .npz" in err
    arrays = sysu_arrays()
    err = evaluate_error(
        capsys, ["evaluate", "--features", write(tmp_path, **arrays), "--protocol", "regdb-v2i", "--multi-shot"]
    )
    assert "multi-shot" in err
    err = evaluate_error(capsys, ["evaluate", "--features", write(tmp_path, **arrays), "--protocol", "llcm-i2v"])
    assert "modality" in err


def test_query_identity_without_gallery_warns_and_is_left_out(tmp_path, capsys, caplog):
    arrays = sysu_arrays(drop_gallery_of=(3,))
    out = tmp_path / "r.json"
    with caplog.at_level(logging.WARNING):
        rc = main(
            [
                "evaluate",
                "--features",
                write(tmp_path, **arrays),
                "--protocol",
                "sysu-all",
                "--trials",
                "2",
                "--out",
                str(out),
            ]
        )
    assert rc == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warnings = [w for w in warnings if "the official test set has" not in w]  # a small synthetic set
    assert len(warnings) == 1 and "no gallery image of their identity" in warnings[0]
    res = json.loads(out.read_text())
    n_ir_of_3 = int(((arrays["pids"] == 3) & np.isin(arrays["cams"], (3, 6))).sum())
    assert res["queries_without_positive"] == [n_ir_of_3] * 2


def test_features_of_another_dataset_are_refused(tmp_path, capsys):
    npz = write(tmp_path, **sysu_arrays())
    err = evaluate_error(capsys, ["evaluate", "--features", npz, "--protocol", "regdb-v2i"])
    assert "camera(s) 3, 4, 5, 6, which RegDB does not have" in err and "another dataset" in err


def test_zero_and_constant_features_and_unofficial_sizes_warn(tmp_path, caplog):
    arrays = sysu_arrays()
    arrays["feats"][:3] = 0
    with caplog.at_level(logging.WARNING):
        npz = write(tmp_path, **arrays)
        assert main(["evaluate", "--features", npz, "--protocol", "sysu-all", "--trials", "1"]) == 0
    assert "3 of" in caplog.text and "all zero" in caplog.text
    assert "the official test set has 96, 3803 and 301" in caplog.text
    caplog.clear()
    arrays["feats"][:] = 1.0
    with caplog.at_level(logging.WARNING):
        main(["evaluate", "--features", write(tmp_path, "c.npz", **arrays), "--protocol", "sysu-all", "--trials", "1"])
    assert "every image has the same feature vector" in caplog.text


def test_result_records_the_features_sha256_and_version(tmp_path):
    import hashlib

    import kglfr

    npz = write(tmp_path, **sysu_arrays())
    out = tmp_path / "r.json"
    assert main(["evaluate", "--features", npz, "--protocol", "sysu-all", "--trials", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sha = hashlib.sha256(Path(npz).read_bytes()).hexdigest()
    assert res["features_sha256"] == [sha, sha] and res["kglfr_version"] == kglfr.__version__


@pytest.mark.parametrize("where", ["file-as-folder", "folder"])
def test_unwritable_out_is_refused_before_any_trial_runs(tmp_path, capsys, monkeypatch, where):
    import kglfr.eval.protocols as ev

    def must_not_run(*a, **k):
        raise AssertionError("the trials ran before --out was checked")

    monkeypatch.setattr(ev, "evaluate_protocol", must_not_run)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "r.json" if where == "file-as-folder" else tmp_path
    err = evaluate_error(capsys, ["evaluate", "--features", write(tmp_path, **sysu_arrays()), "--protocol", "sysu-all",
                                  "--out", str(out)])  # fmt: skip
    assert str(out) in err and ".tmp" not in err
