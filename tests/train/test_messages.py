"""Refusals in our words: no library internals (torch's advice to load a file unsafely, unpickler opcodes)
in what a user reads (issue 25)."""

import os
import pickle

import pytest
import torch

from kglfr.io import TorchLoadError, torch_load_safe
from kglfr.model.weights import WeightsError, _read_state_dict
from kglfr.train.checkpoint import CheckpointError, load_checkpoint


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def _files(tmp_path):
    evil_zip, evil_pickle, opcodes = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    torch.save({"format": "kglfr-checkpoint", "x": _Evil()}, evil_zip)
    evil_pickle.write_bytes(pickle.dumps(_Evil(), protocol=4))
    opcodes.write_bytes(b"\x80\x04garbage")
    return evil_zip, evil_pickle, opcodes


def test_unsafe_and_damaged_files_are_refused_without_torch_advice(tmp_path, capfd):
    evil_zip, evil_pickle, opcodes = _files(tmp_path)
    for path in (evil_zip, evil_pickle):
        with pytest.raises(TorchLoadError, match=r"refers to code |objects other than tensors") as e:
            torch_load_safe(path)
        assert e.value.unsafe
        with pytest.raises(CheckpointError, match="not a safe kglfr checkpoint: it (refers to code|holds obj)") as e:
            load_checkpoint(path)
        assert "weights_only" not in str(e.value) and "Re-running" not in str(e.value)
    for load, error in ((load_checkpoint, CheckpointError), (_read_state_dict, WeightsError)):
        with pytest.raises(error) as e:
            load(opcodes)
        assert "operand" not in str(e.value) and "weights_only" not in str(e.value) and "damaged" in str(e.value)
        assert "refused without running" in str(e.value)
    assert "UserWarning" not in capfd.readouterr().err  # torch's pickle-protocol warning is not shown
