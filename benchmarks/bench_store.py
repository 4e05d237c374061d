"""Prepared-store benchmark: `prepare` throughput and random batch reads of 64 images.

Reference in the same run: decoding the same 64 images from their JPEG files (what a loader without
a store does every step). Target: at least 5000 images/s for store batch reads on a 2-core machine.

    python benchmarks/bench_store.py [--ids 60] [--images-per-camera 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import record

from kglfr.data.datasets import load_dataset
from kglfr.data.store import Store, decode_image, prepare_store, resize
from kglfr.data.synth import synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=60)
    ap.add_argument("--images-per-camera", type=int, default=6)
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "synth", Path(tmp) / "store"
        synthesize(root, layout="sysu", ids=args.ids, seed=0, images_per_camera=args.images_per_camera)
        dataset = load_dataset("sysu", root)
        n = len(dataset.records)

        t0 = time.perf_counter()
        prepare_store(dataset, out, progress=False)
        prepare_s = time.perf_counter() - t0

        store = Store.open(out)
        rng = np.random.default_rng(0)
        batches = [rng.choice(len(store), 64, replace=False) for _ in range(args.batches)]
        store.read_batch(batches[0])  # page the file in, as after the first epoch
        t0 = time.perf_counter()
        for b in batches:
            store.read_batch(b)
        store_s = time.perf_counter() - t0

        paths = [r.path(dataset.root) for r in dataset.records]
        ref_batches = batches[: max(5, args.batches // 20)]
        t0 = time.perf_counter()
        for b in ref_batches:
            for i in b:
                resize(decode_image(paths[i]), 288, 144)
        jpeg_s = time.perf_counter() - t0

    store_ips = 64 * len(batches) / store_s
    jpeg_ips = 64 * len(ref_batches) / jpeg_s
    record(
        "store",
        {
            "images": n,
            "prepare_seconds": prepare_s,
            "prepare_images_per_s": n / prepare_s,
            "store_batch64_images_per_s": store_ips,
            "jpeg_decode_batch64_images_per_s": jpeg_ips,
            "store_vs_jpeg_ratio": store_ips / jpeg_ips,
            "target_store_images_per_s": 5000,
            "meets_target": bool(store_ips >= 5000),
        },
    )


if __name__ == "__main__":
    main()
