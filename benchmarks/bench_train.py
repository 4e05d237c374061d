"""Training throughput: one optimisation step of the baseline and of KGLFR-Net, and the data pipeline.

Usage: python benchmarks/bench_train.py [--arch resnet50] [--height 288 --width 144] [--steps 3] [--device auto]

On a synthetic SYSU-layout store at the training size, batch 8 x (4 + 4) = 64:
- ``step_*_images_per_s``: forward + backward + SGD step of the model on a ready batch (erasing and
  losses included), baseline preset (CE + triplet) and KGLFR preset (KEGFR erasing + KMLFR), their steps
  alternating;
  target: KGLFR step time at most 1.10x the baseline's (the ratio is taken in the same run);
- ``pipeline_images_per_s``: store read + keypoint cache + sampler + joint transform (batches made as the
  trainer makes them, no model); target: at least 3x what the KGLFR step consumes;
- on a GPU: AMP (bf16/fp16 as ``train.amp=auto``), channels_last, and the peak GPU memory of the KGLFR
  step (target at most 8 GB at batch 64, the paper's card).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import record  # noqa: E402

from kglfr.data.datasets import load_dataset  # noqa: E402
from kglfr.data.store import Store, prepare_store  # noqa: E402
from kglfr.data.synth import synthesize  # noqa: E402
from kglfr.keypoints.build import build_cache, build_pose_backend  # noqa: E402
from kglfr.keypoints.cache import KeypointCache  # noqa: E402
from kglfr.train import config as C  # noqa: E402
from kglfr.train.data import STREAM_ERASING, TrainData, step_generator  # noqa: E402
from kglfr.train.methods.kglfr import erase  # noqa: E402
from kglfr.train.trainer import Trainer, build_model, resolve_runtime  # noqa: E402


def make_store(tmp: Path, height: int, width: int, ids: int) -> Path:
    synth = synthesize(tmp / "synth", "sysu", ids=ids, seed=0, images_per_camera=4, height=height, width=width)
    store, _ = prepare_store(load_dataset("sysu", synth.root), tmp / "store", height=height, width=width,
                             progress=False)  # fmt: skip
    build_cache(store, build_pose_backend("oracle", store), progress=False)
    return store.path


def base_overrides(store: Path, args: argparse.Namespace) -> list[str]:
    """The config overrides every step benchmark starts from: the store, ``--arch``, ``--height``,
    ``--width``, ``--device``, random initial weights."""
    return [f"data.store={store}", f"model.arch={args.arch}", f"data.height={args.height}",
            f"data.width={args.width}", f"train.device={args.device}", "model.pretrained=none"]  # fmt: skip


def make_stepper(cfg) -> tuple[Callable[[int], None], int, torch.device]:
    """The trainer's own step (``Trainer.run_step``: SGD with Nesterov momentum and weight decay, AMP,
    channels_last, erasing and losses as in ``kglfr train``) on two ready batches, warmed up; returns
    (step, batch size, device)."""
    trainer = Trainer(cfg)
    data = trainer.data
    batches = [data.make_batch(b, 0, s) for s, b in zip(range(2), data.sampler, strict=False)]
    trainer.begin_epoch(0)

    def one(i: int) -> None:
        trainer.run_step(batches[i % len(batches)])
        if trainer.rt.device.type == "cuda":
            torch.cuda.synchronize()

    one(0)  # warm-up
    return one, data.batch_size, trainer.rt.device


def interleaved_rates(cfgs: dict, steps: int) -> dict[str, float]:
    """images/s of each preset's step, the presets' steps alternating so that each sees the same machine
    state (measured one after the other, the first preset's steps were 8-11% slower here)."""
    steppers = {name: make_stepper(cfg) for name, cfg in cfgs.items()}
    spent = dict.fromkeys(cfgs, 0.0)
    for i in range(steps):
        for name, (one, _, _) in steppers.items():
            t0 = time.perf_counter()
            one(i + 1)
            spent[name] += time.perf_counter() - t0
    return {name: steps * batch / spent[name] for name, (_, batch, _) in steppers.items()}


def peak_gpu_gib(cfg) -> float:
    """Peak GPU memory of one step with only this preset's model on the device (not interleaved, so that the
    other model's weights and optimiser state do not count)."""
    one, _, _ = make_stepper(cfg)
    torch.cuda.reset_peak_memory_stats()
    one(1)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del one
    torch.cuda.empty_cache()
    return peak


def pipeline_rate(cfg, store: Store, cache: KeypointCache, size, fmap, steps: int) -> float:
    """Batches as the trainer makes them (sampler, store, cache, joint transform, in the prefetch thread),
    then KEGFR erasing (in the training thread), no model."""
    data = TrainData(store, cache, size=size, seed=0, heatmap_size=fmap)
    data.sampler.iters_per_epoch = steps + 1
    it = data.epoch(0)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        erase(b.images, b, cfg, step_generator(0, 0, b.step, STREAM_ERASING))
        n += len(b.labels)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--width", type=int, default=144)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--ids", type=int, default=24)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_store(Path(tmp), args.height, args.width, args.ids)
        store = Store.open(path)
        cache = KeypointCache.open(store)
        common = base_overrides(path, args)
        figures: dict = {"arch": args.arch, "input": f"{args.height}x{args.width}", "batch": 64}
        cfgs = {p.split("/")[1]: C.load_config(p, common) for p in ("sysu/baseline", "sysu/kglfr")}
        cfg = cfgs["kglfr"]
        rt = resolve_runtime(cfg)
        if rt.device.type == "cuda":
            for name, c in cfgs.items():
                figures[f"peak_gpu_memory_{name}_gib"] = peak_gpu_gib(c)
        rates = interleaved_rates(cfgs, args.steps)
        for name, rate in rates.items():
            figures[f"step_{name}_images_per_s"] = rate
        figures["device"] = str(rt.device)
        figures["amp"] = None if rt.amp_dtype is None else str(rt.amp_dtype)
        figures["kglfr_over_baseline_step_time"] = rates["baseline"] / rates["kglfr"]
        figures["target_step_ratio_max"] = 1.10
        fmap = build_model(cfg, 2).feature_map_size((args.height, args.width))
        pipe = pipeline_rate(cfg, store, cache, (args.height, args.width), fmap, max(args.steps, 4))
        figures["pipeline_images_per_s"] = pipe
        figures["pipeline_over_kglfr_step"] = pipe / rates["kglfr"]
        figures["target_pipeline_ratio_min"] = 3.0
    record(f"train_{args.arch}_{args.height}x{args.width}", figures)


if __name__ == "__main__":
    main()
