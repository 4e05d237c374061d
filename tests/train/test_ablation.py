"""The Table 2 ablation runner on any store: ``kglfr ablation``, resume by finished run, the paper beside ours."""

from __future__ import annotations

import json

from layouts import synthetic_store

from kglfr.cli import main
from kglfr.train.ablation import CONTROL_ROWS, TABLE2, RowResult, ablation_table

TINY = ["data.height=64", "data.width=32", "data.pad=2", "data.ids_per_batch=3", "data.per_modality=2",
        "train.epochs=1", "train.iters_per_epoch=1", "eval.trials=2", "train.tensorboard=false"]  # fmt: skip


def test_ablation_on_a_store_puts_the_paper_beside_ours_and_resumes(tmp_path, capsys):
    store, _ = synthetic_store(tmp_path, ids=10, keypoints=True)
    out = tmp_path / "table2"
    argv = ["ablation", "--store", str(store), "--out", str(out), "--base", "demo", "--no-progress", *TINY]
    assert main(argv) == 0
    table = json.loads((out / "ablation.json").read_text())
    rows = [*TABLE2, *CONTROL_ROWS]  # the control row runs: its preset sysu/random_erasing_w05 ships
    assert [r["preset"] for r in table["rows"]] == [r.preset for r in rows]
    assert table["rows"][0]["paper"] == {"rank1": 52.88, "mAP": 51.45}
    md = (out / "ablation.md").read_text()
    assert "| paper R-1 | paper mAP |" in md and "| 70.44 | 67.59 |" in md and "| 5 |  | ✓ | ✓ |" in md
    assert "erasing: keypoint" in (out / "kegfr-seed0" / "config.yaml").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # every run finished with this config on this store: kept
    assert capsys.readouterr().out.count("kept") == len(rows)
    assert json.loads((out / "ablation.json").read_text()) == table


def test_the_control_row_is_labelled():
    results = [RowResult(TABLE2[2], [60.0], [58.0], 10.0), RowResult(CONTROL_ROWS[0], [61.0, 63.0], [59.0, 60.0])]
    text = ablation_table(results, 2, "caption", paper=True)
    assert "| 3b (control: triplet weight 0.5) | ✓ |  |  | 62.00 ± 1.41 |" in text
    assert "| 64.87 | 63.15 |" in text and text.splitlines()[-3].endswith("| – | – |")
