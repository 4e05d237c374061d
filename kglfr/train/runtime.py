"""Where training runs: device, DDP rank (from ``torchrun``), AMP dtype, memory format, and signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from kglfr.errors import KglfrError

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def amp_name(self) -> str:
        """The autocast dtype as a report says it: ``off``, ``bfloat16`` or ``float16``."""
        return "off" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")


def _device(want: str, world: int, local: int) -> torch.device:
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KglfrError(f"train.device={want} was asked for but no CUDA device is available; use train.device=cpu")
        device = torch.device("cuda", local if world > 1 else (torch.device(want).index or 0))
        torch.cuda.set_device(device)
        return device
    if want == "cpu":
        return torch.device("cpu")
    raise KglfrError(f"unknown train.device {want!r}; use auto, cpu, cuda or cuda:N")


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp != "off":
            return torch.bfloat16 if amp == "bf16" else torch.float16
    elif amp in ("bf16", "fp16"):
        log.warning("train.amp=%s ignored on the CPU (no speed-up there); training in float32", amp)
    return None


def resolve_runtime(cfg: DictConfig) -> Runtime:
    """Device, DDP rank (from torchrun's environment), AMP dtype and memory format."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg.train.device, world, local)
    dtype = _amp_dtype(cfg.train.amp, device)
    cl = cfg.train.channels_last
    channels_last = device.type == "cuda" if cl == "auto" else cl == "on"
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return Runtime(device, rank, world, local, dtype, channels_last)


@contextmanager
def stop_on_signals():
    """Turn Ctrl-C and SIGTERM into a flag the loop checks after each step (main thread only)."""
    flag: dict = {"signal": None}
    old = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum, _frame):
            flag["signal"] = signal.Signals(signum).name

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
