"""``kglfr demo``: the whole pipeline on the built-in synthetic dataset, no download needed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kglfr.cli import add_command

EXAMPLES = """
  kglfr demo                                  # everything under runs/demo
  kglfr demo --out /tmp/demo --ids 60 --seed 1
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "demo",
        "Synthesise a visible-infrared dataset, prepare it, cache its keypoints and draw them.",
        EXAMPLES,
    )
    p.add_argument("--out", default="runs/demo", help="folder for everything the demo writes (default runs/demo)")
    p.add_argument("--ids", type=int, default=40, help="synthetic identities (default 40)")
    p.add_argument("--images-per-camera", type=int, default=4, help="images per identity and camera (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kglfr.data.datasets import load_dataset
    from kglfr.data.store import prepare_store
    from kglfr.data.synth import synthesize
    from kglfr.keypoints.cache import build_cache, build_pose_backend, format_summary
    from kglfr.viz.keypoints import keypoint_sheet

    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"[1/4] synthesising a SYSU-MM01-layout dataset ({args.ids} identities, seed {args.seed})")
    summary = synthesize(
        out / "synth-sysu", "sysu", ids=args.ids, seed=args.seed,
        images_per_camera=args.images_per_camera, force=True, progress=True,
    )  # fmt: skip
    print("      " + summary.line())

    print("[2/4] preparing the image store")
    dataset = load_dataset("sysu", summary.root)
    print("      " + dataset.summary().replace("\n", "\n      "))
    store, _ = prepare_store(dataset, out / "store", force=True)

    print("[3/4] caching keypoints (oracle backend: the synthetic ground truth)")
    result = build_cache(store, build_pose_backend("oracle", store), force=True)
    print(format_summary(result.summary))

    print("[4/4] drawing keypoints")
    sheet = keypoint_sheet(store, out / "keypoints.png", n=16)
    print(f"      {sheet}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; everything is in {out}")
    return 0
