"""Checkpoints: written atomically, read without executing pickled code.

A checkpoint is a ``torch.save`` of plain data only (tensors, numbers, strings, lists, dicts), read
back with ``torch.load(weights_only=True)``, whose unpickler refuses every object that is not one of
those: a file that carries code (a crafted pickle) is refused before anything in it runs. Contents::

    format, version            "kglfr-checkpoint", 1
    model                      the model's state dict
    model_config               AGWNet(**model_config) rebuilds the architecture
    num_classes, label_pids    the classifier's size and the identity of each of its rows
    config                     the run's resolved config (a dict)
    epoch, step                progress: ``epoch`` epochs done, plus ``step`` steps of the next one
    optimizer                  the optimiser's state dict (absent in a model-only export)
    history                    per-epoch losses (for the curves)
    scaler                     the fp16 GradScaler's state (only when training in fp16)
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import torch

from kglfr.errors import DiskFullError, KglfrError
from kglfr.io import TorchLoadError, human_bytes, not_a_file, torch_load_safe, write_atomic

FORMAT = "kglfr-checkpoint"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive; a pickle (the legacy format) starts with 0x80, protocol
VERSION = 1


class CheckpointError(KglfrError):
    """A checkpoint that is missing, damaged, unsafe or of another model."""


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it: torch wraps the writer's OSError) is a full disk or a size quota."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if isinstance(e, RuntimeError) and "file write failed" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain data only) atomically: a reader sees the old file or the new one. A full
    disk raises ``DiskFullError`` saying how much space the checkpoint needs; the old file stays."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    path = Path(path)
    try:
        return write_atomic(path, lambda f: torch.save(data, f), binary=True)
    except (OSError, RuntimeError) as e:
        if not _disk_full(e):
            raise
        free = shutil.disk_usage(path.parent).free
        kept = "the previous checkpoint is kept" if path.is_file() else "no checkpoint was written"
        raise DiskFullError(f"not enough disk space to save checkpoint {path}: it needs about "
                            f"{human_bytes(_nbytes(data))}, {human_bytes(free)} are free ({kept}); free some space "
                            "and resume with 'kglfr train --resume'") from None  # fmt: skip


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; one clear ``CheckpointError`` for anything that is not a kglfr checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "checkpoint.pt").exists():
            raise CheckpointError(f"checkpoint {path} is a folder without checkpoint.pt (not a run folder); give "
                                  "a checkpoint file or a run folder")  # fmt: skip
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(not_a_file(path, "checkpoint"))
    _check_magic(path)
    try:
        data = torch_load_safe(path, map_location)
    except TorchLoadError as e:
        if e.unsafe:
            raise CheckpointError(f"{path} is not a safe kglfr checkpoint: {e.reason}") from None
        raise CheckpointError(f"{path} is not a kglfr checkpoint ({e.reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a kglfr checkpoint (no '{FORMAT}' format tag)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path} is a kglfr checkpoint of version {data.get('version')}, this kglfr reads "
                              f"version {VERSION}")  # fmt: skip
    for key in ("model", "model_config", "num_classes"):
        if key not in data:
            raise CheckpointError(f"{path} is damaged: no '{key}'")
    return data


def _check_magic(path: Path) -> None:
    """Refuse a file that is not a ``torch.save`` archive (a zip) or a pickle, before torch reads it."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return
    size = path.stat().st_size
    what = "an empty file" if size == 0 else f"{size} bytes, not a torch.save archive"
    raise CheckpointError(f"{path} is not a kglfr checkpoint ({what})")


def load_model_state(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load ``state`` strictly, with one line naming what does not fit (another architecture or class count)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]  # fmt: skip
    if missing or unexpected or shapes:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise CheckpointError(f"{source} does not fit this model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a checkpoint (eval mode, on ``device``) and the checkpoint's data."""
    from kglfr.model import AGWNet

    data = load_checkpoint(path)
    cfg = dict(data["model_config"])
    cfg.pop("num_classes", None)
    try:
        model = AGWNet(int(data["num_classes"]), **cfg, pretrained=None)
    except TypeError as e:
        raise CheckpointError(f"{path}: its model_config does not describe a kglfr model ({e})") from None
    load_model_state(model, data["model"], str(path))
    return model.to(device).eval(), data
