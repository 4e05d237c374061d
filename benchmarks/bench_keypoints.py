"""Keypoint cache: oracle speed, bytes per image, the cached resolution's effect on the KMLFR mask, and
heatmap read + joint transform throughput at batch 64 (target >= 2000 images/s on a 2-core CPU).

Usage: python benchmarks/bench_keypoints.py [--ids 40] [--images-per-camera 4] [--keep DIR]

Resolution study: the oracle's full-resolution heatmaps (80 x 40, HRNet's on a 320 x 160 input) of
synthetic images are cached at a candidate size (resampled, uint8 with a per-map scale), moved by the
training transform (pad 10, random crop, flip), and turned into the 18 x 9 KMLFR mask m = relu(k / max k)
(bilinear). The reference is the same mask from the 80 x 40 maps moved by the same transform. Reported:
the mean absolute error over mask cells, and the mean and 95th percentile over maps of the largest
cell error (maps of visible keypoints that stay inside the crop).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import record, timeit  # noqa: E402

from kglfr.data.datasets import load_dataset  # noqa: E402
from kglfr.data.store import prepare_store  # noqa: E402
from kglfr.data.synth import synthesize  # noqa: E402
from kglfr.data.transforms import TrainTransform, store_batch_to_tensor  # noqa: E402
from kglfr.keypoints.backends import BatchInfo, build_backend  # noqa: E402
from kglfr.keypoints.build import build_cache  # noqa: E402
from kglfr.keypoints.cache import DEFAULT_HEATMAP_HW, KeypointCache, bytes_per_image  # noqa: E402
from kglfr.keypoints.heatmaps import dequantise, quantise, resize_maps  # noqa: E402
from kglfr.keypoints.skeleton import coco_to_13_heatmaps, coco_to_13_keypoints  # noqa: E402

MASK_HW = (18, 9)
CANDIDATES = ((80, 40), (48, 24), (40, 20), (36, 18), (32, 16), (28, 14), (24, 12), (18, 9))


def mask(maps: torch.Tensor) -> np.ndarray:
    """KMLFR mask: relu, bilinear to 18 x 9 (a no-op if already there), normalised by the max."""
    m = F.interpolate(maps.float().clamp(min=0), size=MASK_HW, mode="bilinear", align_corners=False)
    return (m / m.amax((-2, -1), keepdim=True).clamp(min=1e-12)).numpy()


def errors(m: np.ndarray, ref: np.ndarray, sel: np.ndarray) -> dict:
    d = np.abs(m - ref)[sel]
    worst = d.reshape(len(d), -1).max(1)
    return {"mean_abs": float(d.mean()), "max_mean": float(worst.mean()), "max_p95": float(np.percentile(worst, 95))}


def resolution_study(store, backend, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(store), size=min(n, len(store)), replace=False))
    info = BatchInfo([store.relpaths[i] for i in idx], store.source_hw[idx], store.root)
    out = backend.predict(store.read_batch(idx), info)
    full = coco_to_13_heatmaps(out.heatmaps)  # B x 13 x 80 x 40
    kp = coco_to_13_keypoints(out.keypoints)
    t = TrainTransform(size=store.size, heatmap_mode="bilinear")
    params = t.sample(len(idx), torch.Generator().manual_seed(seed))
    kpt = t.transform_points(torch.from_numpy(kp), params).numpy()
    H, W = store.size
    sel = (kpt[..., 2] > 0) & (kpt[..., 0] > 0) & (kpt[..., 0] < W) & (kpt[..., 1] > 0) & (kpt[..., 1] < H)
    reference = mask(t.transform_heatmaps(torch.from_numpy(full), params))  # full res, then bilinear to 18 x 9
    figures: dict = {"study_maps": int(sel.sum())}
    for hw in CANDIDATES:
        for method in ("bilinear", "area"):
            if method == "area" and hw not in ((32, 16), (40, 20)):
                continue
            cached = torch.from_numpy(dequantise(*quantise(resize_maps(full, hw, method))))
            for mode in ("bilinear", "bicubic"):
                for path, out_hw in (("two_step", None), ("direct", MASK_HW)):
                    if path == "two_step" and (mode == "bicubic" or method == "area") and hw != (32, 16):
                        continue
                    tt = TrainTransform(size=store.size, heatmap_size=out_hw, heatmap_mode=mode)
                    e = errors(mask(tt.transform_heatmaps(cached, params)), reference, sel)
                    key = f"mask_err_{hw[0]}x{hw[1]}_{method}_{mode}_{path}"
                    figures[key] = {k: round(v, 4) for k, v in e.items()} | {"bytes_per_image": bytes_per_image(hw)}
    return figures


def read_transform_throughput(store, cache: KeypointCache, batch: int, iters: int, heatmap_size, threads: int) -> float:
    """Images/s of: random batch indices -> store pixels + cached heatmaps/centres -> TrainTransform (best of 3)."""
    t = TrainTransform(size=store.size, heatmap_size=heatmap_size)
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def run() -> None:
        for _ in range(iters):
            idx = rng.choice(len(store), size=batch, replace=False)
            images = store_batch_to_tensor(store.read_batch(idx))
            rows = cache.read_batch(idx)
            t(images, torch.from_numpy(rows["heatmaps"]), torch.from_numpy(rows["parts"]),
              torch.from_numpy(rows["part_valid"]), generator=g)  # fmt: skip

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return batch * iters / timeit(run, repeat=3, warmup=1)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=40)
    ap.add_argument("--images-per-camera", type=int, default=4)
    ap.add_argument("--study-images", type=int, default=512)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--keep", default=None, help="work in this folder instead of a temporary one")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        synthesize(work / "synth", layout="sysu", ids=args.ids, seed=0, images_per_camera=args.images_per_camera,
                   size_jitter=0.3, force=True)  # fmt: skip
        store, _ = prepare_store(load_dataset("sysu", work / "synth"), work / "store", progress=False, force=True)
        backend = build_backend("oracle", root=store.root)

        idx = np.arange(min(256, len(store)))
        info = BatchInfo([store.relpaths[i] for i in idx], store.source_hw[idx], store.root)
        images = store.read_batch(idx)
        t0 = time.perf_counter()
        for s in range(0, len(idx), 64):
            backend.predict(images[s : s + 64], BatchInfo(info.relpaths[s : s + 64], info.source_hw[s : s + 64],
                                                          info.root))  # fmt: skip
        oracle_ips = len(idx) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        result = build_cache(store, backend, batch_size=64, force=True, progress=False)
        build_ips = len(store) / (time.perf_counter() - t0)
        cache = result.cache
        t0 = time.perf_counter()
        KeypointCache.open(store)
        open_s = time.perf_counter() - t0

        figures = {
            "load_average_1m": round(os.getloadavg()[0], 2),  # other processes skew the throughput
            "images": len(store),
            "oracle_predict_images_per_s": round(oracle_ips, 1),
            "cache_build_images_per_s": round(build_ips, 1),
            "cache_heatmap_hw": "x".join(map(str, DEFAULT_HEATMAP_HW)),
            "cache_bytes_per_image": bytes_per_image(DEFAULT_HEATMAP_HW),
            "cache_open_with_checksum_s": round(open_s, 4),
        }
        for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
            for name, hw in (("mask18x9", MASK_HW), ("cache_size", None)):
                ips = read_transform_throughput(store, cache, 64, args.iters, hw, threads)
                figures[f"read_transform_b64_{name}_{threads}thr_images_per_s"] = round(ips, 1)
        figures.update(resolution_study(store, backend, args.study_images))
    record("keypoints", figures)


if __name__ == "__main__":
    main()
