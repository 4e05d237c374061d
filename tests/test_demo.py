import json

from kglfr.cli import main
from kglfr.data.store import Store
from kglfr.keypoints.cache import KeypointCache


def test_demo_runs_the_pipeline_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--ids", "8", "--images-per-camera", "2", "--seed", "5"]) == 0
    store = Store.open(out / "store")
    cache = KeypointCache.open(store)
    assert len(cache) == len(store) > 0
    assert (out / "keypoints.png").stat().st_size > 10_000
    sidecar = json.loads((out / "synth-sysu" / "kglfr_keypoints.json").read_text())
    assert set(sidecar["images"]) == set(store.relpaths)
    assert "demo finished" in capsys.readouterr().out
