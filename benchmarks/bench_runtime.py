"""The runtime policy's speed-up on this machine: training step and extraction, as ratios in one run.

Usage: python benchmarks/bench_runtime.py [--arch resnet18 --height 64 --width 32] [--ids-per-batch 8]
       [--steps 6] [--device auto]

Paths, each measured with the others' steps alternating (so each sees the same machine state):
- ``fp32``: float32, contiguous (``train.amp=off train.channels_last=off``, ``--amp off``), the reference;
- ``channels_last``: float32, channels_last;
- ``bf16_channels_last``: bf16 autocast + channels_last (what ``auto`` picks on a CPU with native bf16);
- ``policy``: what ``auto`` picks on this machine (kglfr.runtime.resolve_policy), for training (the step)
  and for inference (extraction);
- ``int8`` (CPU, extraction only): ``--amp int8``, int8 up to layer3 (kglfr.model.quantize).
On the CPU also the fp32 training loop with batches made ahead in a thread against batches made in the
training thread (``Trainer.fit`` on the CPU): ``loop_*_images_per_s`` and their ratio.
Figures: ``step_<path>_images_per_s`` (the KGLFR preset's ``Trainer.run_step``: KEGFR erasing, forward,
CE + triplet + KMLFR losses, backward, SGD), ``extract_<path>_images_per_s`` (``embed_batch``, eval mode,
one backbone pass), and ``*_over_fp32`` ratios. Targets on a CPU with native bf16: extraction >= 2.5x,
training step >= 1.6x (for the policy's path).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import base_overrides, make_store  # noqa: E402
from harness import record  # noqa: E402

from kglfr.eval.extract import embed_batch  # noqa: E402
from kglfr.runtime import Policy, cpu_has_bf16, cpu_has_vnni, int8_engine, resolve_policy  # noqa: E402
from kglfr.train import config as C  # noqa: E402
from kglfr.train.trainer import Trainer  # noqa: E402

PATHS = {"fp32": ("off", "off"), "channels_last": ("off", "on"), "bf16_channels_last": ("bf16", "on"),
         "policy": ("auto", "auto")}  # fmt: skip


class Runner(NamedTuple):
    """One path, warmed up: its training step and extraction pass (None where it has none), the batch size,
    the inference and training policies, the trainer."""

    step: Callable[[int], None] | None
    extract: Callable[[int], None]
    batch: int
    policy: Policy
    train_policy: Policy | None
    trainer: Trainer | None


def steppers(common: list[str]) -> dict[str, Runner]:
    """A :class:`Runner` per path."""
    out = {}
    for name, (amp, cl) in PATHS.items():
        torch.manual_seed(0)
        cfg = C.load_config("sysu/kglfr", [*common, f"train.amp={amp}", f"train.channels_last={cl}"])
        trainer = Trainer(cfg)
        data = trainer.data
        batches = [data.make_batch(b, 0, s) for s, b in zip(range(2), data.sampler, strict=False)]
        trainer.begin_epoch(0)
        # extraction on a copy, under the inference policy for "policy" (it may differ from training's)
        policy = resolve_policy(trainer.rt.device) if name == "policy" else trainer.rt.policy
        model = policy.model(copy.deepcopy(trainer.model)).eval()
        x = batches[0].images.to(policy.device)

        def step(i: int, trainer=trainer, batches=batches) -> None:
            trainer.run_step(batches[i % 2])

        def extract(_i: int, model=model, x=x, policy=policy) -> None:
            embed_batch(model, x, 0, amp_dtype=policy.amp_dtype)

        for fn in (step, extract):
            fn(0)
        out[name] = Runner(step, extract, len(x), policy, trainer.rt.policy, trainer)
        if name == "fp32" and policy.device.type == "cpu" and int8_engine() is not None:
            out["int8"] = int8_extraction(trainer.model, x, policy)
    return out


def int8_extraction(model: torch.nn.Module, x: torch.Tensor, fp32: Policy) -> Runner:
    """The int8 path (``--amp int8``): extraction only, calibrated on the batch itself (as extraction
    calibrates on the first images it embeds); no training step."""
    policy = resolve_policy(fp32.device, "int8")
    int8 = policy.model(copy.deepcopy(model)).eval()
    int8.calibrate(0, x)

    def extract(_i: int) -> None:
        embed_batch(int8, x, 0)

    extract(0)
    return Runner(None, extract, len(x), policy, None, None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rates(runners: dict[str, Runner], steps: int, which: str) -> dict[str, float]:
    """Images/s of each runner's ``which`` ("step" or "extract"), the runners alternating."""
    fns = {name: getattr(r, which) for name, r in runners.items() if getattr(r, which) is not None}
    spent = dict.fromkeys(fns, 0.0)
    for i in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(i + 1)
            sync(runners[name].policy.device)
            spent[name] += time.perf_counter() - t0
    return {name: steps * runners[name].batch / spent[name] for name in fns}


def loop_rates(runners: dict[str, Runner], steps: int) -> dict[str, float]:
    """The fp32 training loop's images/s with its batches made ahead in a thread and made in the training
    thread (what ``Trainer.fit`` does on the CPU), alternating, ``steps`` steps each."""
    trainer = runners["fp32"].trainer
    trainer.data.sampler.iters_per_epoch = steps
    spent = {"loop_prefetch_thread": 0.0, "loop_in_thread": 0.0}
    for epoch in range(4):
        for name, options in (("loop_prefetch_thread", {}), ("loop_in_thread", {"prefetch": 0})):
            t0 = time.perf_counter()
            for batch in trainer.data.epoch(epoch, **options):
                trainer.run_step(batch)
            spent[name] += time.perf_counter() - t0
    return {name: 4 * steps * trainer.data.batch_size / t for name, t in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--ids-per-batch", type=int, default=8, help="batch = ids x (4 visible + 4 infrared)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--ids", type=int, default=24)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_store(Path(tmp), args.height, args.width, args.ids)
        # a random ResNet-50 stays finite after a step only at a low learning rate
        common = [*base_overrides(path, args), f"data.ids_per_batch={args.ids_per_batch}", "optim.lr=0.0001"]
        runners = steppers(common)
        policy = runners["policy"].policy
        figures: dict = {"arch": args.arch, "input": f"{args.height}x{args.width}", "batch": runners["fp32"].batch,
                         "device": str(policy.device), "cpu_native_bf16": cpu_has_bf16(), "cpu_vnni": cpu_has_vnni(),
                         "policy_training": runners["policy"].train_policy.describe(),
                         "policy_inference": policy.describe(), "threads": torch.get_num_threads()}  # fmt: skip
        for kind in ("step", "extract"):
            r = rates(runners, args.steps, kind)
            for name, v in r.items():
                figures[f"{kind}_{name}_images_per_s"] = v
            for name, v in r.items():
                if name != "fp32":
                    figures[f"{kind}_{name}_over_fp32"] = v / r["fp32"]
        if policy.device.type == "cpu":
            loop = loop_rates(runners, args.steps)
            figures.update({f"{k}_images_per_s": v for k, v in loop.items()})
            figures["loop_in_thread_over_prefetch_thread"] = loop["loop_in_thread"] / loop["loop_prefetch_thread"]
        figures["target_extract_over_fp32_min"] = 2.5
        figures["target_step_over_fp32_min"] = 1.6
    record(f"runtime_{args.arch}_{args.height}x{args.width}", figures)


if __name__ == "__main__":
    main()
