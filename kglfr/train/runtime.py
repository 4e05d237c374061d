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
from kglfr.runtime import Policy, resolve_policy

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    why: str = ""  # why this precision (kglfr.runtime.Policy.why)
    eval_policy: Policy | None = None  # the evaluations' (eval.amp; auto: float32); None: the training's

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def policy(self) -> Policy:
        return Policy(self.device, self.amp_dtype, self.channels_last, why=self.why)

    @property
    def evaluation(self) -> Policy:
        """The policy the training's evaluations run under (``eval.amp``)."""
        return self.policy if self.eval_policy is None else self.eval_policy

    def record(self) -> dict:
        """The metrics record of both policies: ``{"type": "runtime", "train": {...}, "eval": {...}}``."""
        return {"type": "runtime", "train": self.policy.record(), "eval": self.evaluation.record()}

    @property
    def amp_name(self) -> str:
        """The autocast dtype as a report says it: ``off``, ``bfloat16`` or ``float16``."""
        return self.policy.amp_name


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


def resolve_runtime(cfg: DictConfig) -> Runtime:
    """Device, DDP rank (from torchrun's environment), and the runtime policy's AMP dtype and memory format
    (:func:`kglfr.runtime.resolve_policy`; ``train.amp`` / ``train.channels_last`` override it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg.train.device, world, local)
    policy = resolve_policy(device, cfg.train.amp, cfg.train.channels_last, name="train.amp", training=True)
    # the evaluations' own memory format (auto: channels_last on the CPU too, 1.3x a float32 ResNet-50 at 288x144)
    evaluation = resolve_policy(device, cfg.eval.amp, "auto", name="eval.amp", command="evaluate")
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return Runtime(device, rank, world, local, policy.amp_dtype, policy.channels_last, policy.why, evaluation)


def end_distributed() -> None:
    """Shut down the process group :func:`resolve_runtime` started, once every process is past its last
    collective: its communication threads then stop while Python still runs, rather than during interpreter
    exit (where NCCL warns about leaked resources and gloo can abort a run that succeeded)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


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
