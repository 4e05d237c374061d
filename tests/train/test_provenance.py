"""A run records the store and keypoint cache it trained on (RUN/data.json), saves its config resolved,
and ``--resume`` refuses a run whose data changed (issue 25)."""

from __future__ import annotations

import json
import shutil

import pytest
from layouts import TINY_TRAIN, synthetic_store

from kglfr.cli import main
from kglfr.keypoints.backends.oracle import OracleBackend
from kglfr.keypoints.build import build_cache
from kglfr.train import config as C
from kglfr.train.checkpoint import load_checkpoint
from kglfr.train.hooks import StopAfterSteps
from kglfr.train.trainer import check_resume, train

TINY = [*TINY_TRAIN, "train.epochs=2", "train.iters_per_epoch=1", "train.log_every=1", "eval.protocols=[sysu-all]"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    a = synthetic_store(tmp_path_factory.mktemp("a"), ids=8, images_per_camera=1)[0]
    b = synthetic_store(tmp_path_factory.mktemp("b"), ids=8, seed=5, images_per_camera=1)[0]
    return a, b


def _stopped_run(tmp_path, store, monkeypatch):
    """A run started with data.store=${oc.env:KGLFR_STORE}, stopped after its first epoch."""
    f = tmp_path / "run.yaml"
    f.write_text(f"_base_: {C.PRESET_DIR / 'sysu' / 'kglfr.yaml'}\ndata:\n  store: ${{oc.env:KGLFR_STORE}}\n")
    monkeypatch.setenv("KGLFR_STORE", str(store))
    out = tmp_path / "run"
    train(C.load_config(f, TINY), out, progress=False, hooks=[StopAfterSteps(1)])
    return out


def test_a_run_records_its_data_and_saves_its_config_resolved(stores, tmp_path, monkeypatch, caplog):
    a, b = stores
    with caplog.at_level("INFO", logger="kglfr.train.provenance"):
        out = _stopped_run(tmp_path, a, monkeypatch)
    data = json.loads((out / "data.json").read_text())
    assert data["store"] == str(a) and data["keypoints"]["backend"] == "oracle" and data["keypoints"]["checksum"]
    assert "keypoint cache oracle (oracle:" in caplog.text
    assert f"store: {a}" in (out / "config.yaml").read_text() and "${" not in (out / "config.yaml").read_text()
    monkeypatch.setenv("KGLFR_STORE", str(b))  # the variable now names another store: the run keeps its own
    cfg = check_resume(out, [], force=False)
    assert cfg.data.store == str(a)
    train(cfg, out, resume=True, progress=False, hooks=[StopAfterSteps(1)])  # its data check passes
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_resume_refuses_a_store_prepared_again_from_other_data(stores, tmp_path, monkeypatch, capsys):
    a, b = stores
    moved = tmp_path / "store"
    shutil.copytree(a, moved)
    out = _stopped_run(tmp_path, moved, monkeypatch)
    shutil.rmtree(moved)
    shutil.copytree(b, moved)  # the same path, other images
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the store is not the one the run started on" in err[0]


def test_resume_refuses_a_keypoint_cache_rebuilt_since(stores, tmp_path, monkeypatch, capsys):
    a, _ = stores
    moved = tmp_path / "store"
    shutil.copytree(a, moved)
    out = _stopped_run(tmp_path, moved, monkeypatch)
    build_cache(moved, OracleBackend(root=json.loads((moved / "manifest.json").read_text())["root"]),
                threshold=0.9, progress=False)  # fmt: skip
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the keypoint cache changed since the run started" in err and "Traceback" not in err
