"""Training input refused up front, before a run folder exists (issue 25)."""

import pytest
from layouts import TINY_TRAIN, make_sysu

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.store import prepare_store


@pytest.fixture(scope="module")
def sysu_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    out = root / "store"
    prepare_store(load_dataset("sysu", make_sysu(root / "sysu")), out, height=32, width=16, progress=False)
    return out


def test_trial_all_on_a_sysu_store_is_refused_before_training(sysu_store, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["train", "--config", "sysu/kglfr", "--out", str(out), "--trial", "all", f"data.store={sysu_store}",
                 *TINY_TRAIN])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--trial all trains one model per trial split" in err[0] and "train once without --trial all" in err[0]
    assert not (out / "trial1").exists() and not (out / "trials.json").exists()


def test_threads_beyond_the_machine_are_refused_and_leave_no_folder(sysu_store, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", "sysu/baseline", "--out", str(out), f"data.store={sysu_store}",
                 "train.threads=100000", *TINY_TRAIN])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train.threads=100000 does not fit this machine" in err[0]
    assert not out.exists()
