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
    sidecar = json.loads((out / "synth-sysu" / "kglfr_keypoints.json").read_text())
    assert set(sidecar["images"]) == set(store.relpaths)
    printed = capsys.readouterr().out
    assert "demo finished" in printed and "chance Rank-1" in printed
