"""Pose backends, images/s: HRNet-W32 (random weights; the speed does not depend on them) on the CPU
with 2 threads at batch 16, with and without the flip test; fp16 on CUDA when there is a GPU; and
BlazePose (when ``kglfr[pose]`` and the model are installed). Inputs are 288 x 144 store images, so the
figures include the resize to the network input and the decoding.

    python benchmarks/bench_pose.py [--threads 2] [--batch 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import record, timeit  # noqa: E402

from kglfr.errors import KglfrError  # noqa: E402
from kglfr.keypoints.backends import BatchInfo, build_backend  # noqa: E402


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 288, 144, 3), dtype=np.uint8)


def _info(n: int) -> BatchInfo:
    return BatchInfo(relpaths=[f"{i}.jpg" for i in range(n)], source_hw=np.full((n, 2), 288), root=Path("."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cuda-batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    figures: dict = {"threads": args.threads, "batch": args.batch}

    hr = build_backend("hrnet", random_init=True, device="cpu", batch_size=args.batch)
    figures["hrnet_w32_params"] = sum(p.numel() for p in hr.model.parameters())
    imgs, info = _images(args.batch), _info(args.batch)
    t = timeit(lambda: hr.predict(imgs, info), repeat=args.repeat)
    figures["hrnet_w32_cpu_images_per_s"] = args.batch / t
    x = hr.preprocess(imgs)
    with torch.inference_mode():
        t = timeit(lambda: hr.model(x), repeat=args.repeat)
    figures["hrnet_w32_cpu_network_only_images_per_s"] = args.batch / t
    hr_flip = build_backend("hrnet", random_init=True, device="cpu", batch_size=args.batch, flip=True)
    t = timeit(lambda: hr_flip.predict(imgs, info), repeat=max(1, args.repeat - 1))
    figures["hrnet_w32_cpu_flip_images_per_s"] = args.batch / t

    if torch.cuda.is_available():
        n = args.cuda_batch
        gimgs, ginfo = _images(n), _info(n)
        for fp16 in (True, False):
            g = build_backend("hrnet", random_init=True, device="cuda", batch_size=n, fp16=fp16)

            def run(g=g) -> None:
                g.predict(gimgs, ginfo)
                torch.cuda.synchronize()

            t = timeit(run, repeat=5, warmup=2)
            figures[f"hrnet_w32_cuda_{'fp16' if fp16 else 'fp32'}_images_per_s"] = n / t
            gx = g.preprocess(gimgs).cuda()

            def net(g=g, gx=gx, fp16=fp16) -> None:
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
                    g.model(gx)
                torch.cuda.synchronize()

            t = timeit(net, repeat=10, warmup=3)
            figures[f"hrnet_w32_cuda_{'fp16' if fp16 else 'fp32'}_network_only_images_per_s"] = n / t
        figures["cuda_batch"] = n
        figures["cuda_device"] = torch.cuda.get_device_name(0)

    try:
        bp = build_backend("blazepose", threads=args.threads)
    except KglfrError as e:
        figures["blazepose"] = f"skipped: {e}"
    else:
        n = 64
        bimgs, binfo = _images(n, 1), _info(n)
        t = timeit(lambda: bp.predict(bimgs, binfo), repeat=args.repeat)
        figures["blazepose_cpu_images_per_s"] = n / t
        one = bp.model_input(bimgs[0])
        t = timeit(lambda: bp.run_model(one), repeat=20)
        figures["blazepose_cpu_model_only_images_per_s"] = 1 / t

    record("pose", figures)


if __name__ == "__main__":
    main()
