import json

from kglfr.cli import main
from kglfr.data.store import Store
from kglfr.keypoints.cache import KeypointCache


def test_demo_runs_the_pipeline_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--ids", "12", "--test-ids", "6", "--images-per-camera", "2", "--seed", "5",
            "--no-progress", "data.ids_per_batch=3", "data.per_modality=2", "train.epochs=2", "train.iters_per_epoch=2",
            "eval.trials=2"]  # fmt: skip
    assert main(args) == 0
    store = Store.open(out / "store")
    cache = KeypointCache.open(store)
    assert len(cache) == len(store) > 0
    report = out / "report"
    assert (report / "keypoints.png").stat().st_size > 10_000
    assert (report / "loss_curves.png").stat().st_size > 10_000
    result = json.loads((report / "RESULT.json").read_text())
    assert result["protocol"] == "sysu-all" and result["feature"] == "bn" and result["num_trials"] == 2
    assert "| sysu-all | BN |" in (report / "report.md").read_text()
    assert (report / "checkpoint.pt").is_file() and (report / "config.yaml").is_file()
    assert (report / "report_files" / "cmc.png").is_file()  # the page, its pictures beside it
    assert 'id="headline-rank1"' in (report / "report.html").read_text()
    sidecar = json.loads((out / "synth-sysu" / "kglfr_keypoints.json").read_text())
    assert set(sidecar["images"]) == set(store.relpaths)
    printed = capsys.readouterr().out
    assert "demo finished" in printed and "chance Rank-1" in printed


def test_ablation_writes_the_table_and_keeps_finished_rows(tmp_path, capsys):
    out = tmp_path / "abl"
    args = ["demo", "--out", str(out), "--ids", "12", "--test-ids", "6", "--images-per-camera", "2", "--seed", "5",
            "--no-progress", "--ablation", "--seeds", "2", "data.ids_per_batch=3", "data.per_modality=2",
            "train.epochs=1", "train.iters_per_epoch=1", "eval.report_page=false", "eval.trials=2"]  # fmt: skip
    assert main(args) == 0
    table = json.loads((out / "report" / "ablation.json").read_text())
    assert table["seeds"] == 2 and [r["preset"] for r in table["rows"]] == [
        "sysu/baseline",
        "sysu/kmlfr",
        "sysu/random_erasing",
        "sysu/kegfr",
        "sysu/kglfr",
    ]
    assert all(len(r["rank1"]) == 2 for r in table["rows"])
    md = (out / "report" / "ablation.md").read_text()
    assert md.count(" ± ") == 1 + 10 and "| 5 |  | ✓ | ✓ |" in md  # the caption, then R-1 and mAP of 5 rows
    kegfr = (out / "ablation" / "kegfr-seed5" / "config.yaml").read_text()
    assert "erasing: keypoint" in kegfr and "kmlfr: false" in kegfr
    capsys.readouterr()

    assert main(args) == 0  # a second run keeps every finished row and writes the same table
    assert capsys.readouterr().out.count("finished earlier with this config and data: kept") == 10
    assert json.loads((out / "report" / "ablation.json").read_text()) == table

    assert main([*args[:-1], "eval.trials=3"]) == 0  # another config: every row is trained again
    assert "kept" not in capsys.readouterr().out
