"""Synthetic dataset benchmark: ``synthesize`` throughput, images/s, encoding and file writes included.

Times the default SYSU layout (288x144 JPEG) and the RegDB layout (128x64 BMP), best of ``--repeat``
runs, and the share of one image spent drawing (render only, no encoding). Target: at least 200
images/s for the SYSU layout on a 2-core machine.

    python benchmarks/bench_synth.py [--ids 40] [--images-per-camera 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import record, timeit

from kglfr.data.synth import synthesize
from kglfr.data.synth.body import STREAM_IMAGE, rng_for, sample_identity
from kglfr.data.synth.figure import sample_pose
from kglfr.data.synth.render import SYSU_CAMERAS, render

TARGET = 200.0


def render_only(n: int, height: int, width: int) -> float:
    """Images/s of drawing alone (no encoding, no files), cycling over identities and cameras."""
    idents = [sample_identity(0, pid) for pid in range(1, 21)]
    t0 = time.perf_counter()
    for i in range(n):
        ident, cam = idents[i % len(idents)], 1 + i % 6
        pose = sample_pose(rng_for(0, 99, ident.pid, cam, i), ident)
        render(ident, SYSU_CAMERAS[cam], pose, rng_for(0, STREAM_IMAGE, ident.pid, cam, i), height, width)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=40)
    ap.add_argument("--images-per-camera", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    figures: dict = {"ids": args.ids, "images_per_camera": args.images_per_camera}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("sysu", "regdb"):
            out = Path(tmp) / layout
            counts = []

            def run(layout=layout, out=out, counts=counts):
                counts.append(synthesize(out, layout, args.ids, 0, args.images_per_camera, force=True).images)

            seconds = timeit(run, repeat=args.repeat, warmup=1)
            figures[f"{layout}_images"] = counts[-1]
            figures[f"{layout}_seconds"] = seconds
            figures[f"{layout}_images_per_s"] = counts[-1] / seconds
    figures["render_only_288x144_images_per_s"] = render_only(300, 288, 144)
    figures["target_sysu_images_per_s"] = TARGET
    figures["meets_target"] = bool(figures["sysu_images_per_s"] >= TARGET)
    record("synth", figures)


if __name__ == "__main__":
    main()
