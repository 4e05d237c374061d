"""``kglfr demo``: the whole pipeline on the built-in synthetic dataset, no download needed.

synthesise -> prepare -> keypoints (oracle) -> train the ``demo`` preset -> evaluate SYSU all-search and
indoor-search -> a report folder. ``--ablation`` trains the five rows of the paper's Table 2 at demo scale instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from kglfr.cli import add_command

EXAMPLES = """
  kglfr demo                                  # everything under runs/demo, the report in runs/demo/report
  kglfr demo --out /tmp/demo --seed 1 train.epochs=10
  kglfr demo --ablation --seeds 2             # the five rows of Table 2 at demo scale, 2 seeds each
"""

DEMO_DEFAULTS = {"ids": 400, "test_ids": 48, "images_per_camera": 2, "height": 128, "width": 64}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "demo",
        "Synthesise a visible-infrared dataset, prepare it, cache its keypoints, train KGLFR-Net on it and "
        "evaluate it under the SYSU-MM01 all-search and indoor-search protocols.",
        EXAMPLES,
    )
    p.add_argument("--out", default="runs/demo", help="folder for everything the demo writes (default runs/demo)")
    p.add_argument(
        "--ids",
        type=int,
        default=DEMO_DEFAULTS["ids"],
        help=f"synthetic identities, --test-ids of them held out (default {DEMO_DEFAULTS['ids']})",
    )
    p.add_argument(
        "--test-ids",
        type=int,
        default=DEMO_DEFAULTS["test_ids"],
        help=f"identities held out for testing (default {DEMO_DEFAULTS['test_ids']})",
    )
    p.add_argument(
        "--images-per-camera",
        type=int,
        default=DEMO_DEFAULTS["images_per_camera"],
        help=f"images per identity and camera (default {DEMO_DEFAULTS['images_per_camera']})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset and of training (default 0)")
    p.add_argument("--ablation", action="store_true", help="train the five Table 2 presets at demo scale")
    p.add_argument("--seeds", type=int, default=1, help="with --ablation: training seeds per row (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo preset (train.epochs=5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kglfr.cli.synth import as_synth_flags
    from kglfr.data.datasets import load_dataset
    from kglfr.data.store import prepare_store
    from kglfr.data.synth import synthesize
    from kglfr.errors import KglfrError
    from kglfr.keypoints.build import build_cache, build_pose_backend, format_summary
    from kglfr.viz.keypoints import keypoint_sheet

    if args.seeds < 1:
        raise KglfrError("--seeds must be at least 1")
    out = Path(args.out)
    report = out / "report"
    t0 = time.perf_counter()
    steps = 5
    print(f"[1/{steps}] synthesising a SYSU-MM01-layout dataset ({args.ids} identities, seed {args.seed})")
    try:
        summary = synthesize(
            out / "synth-sysu", "sysu", ids=args.ids, seed=args.seed, images_per_camera=args.images_per_camera,
            test_ids=args.test_ids,
            height=DEMO_DEFAULTS["height"], width=DEMO_DEFAULTS["width"], force=True, progress=not args.no_progress,
        )  # fmt: skip
    except KglfrError as e:
        raise KglfrError(as_synth_flags(str(e))) from None
    print("      " + summary.line())

    print(f"[2/{steps}] preparing the image store")
    dataset = load_dataset("sysu", summary.root)
    print("      " + dataset.summary().replace("\n", "\n      "))
    store, _ = prepare_store(dataset, out / "store", height=DEMO_DEFAULTS["height"], width=DEMO_DEFAULTS["width"],
                             force=True, progress=not args.no_progress)  # fmt: skip

    print(f"[3/{steps}] caching keypoints (oracle backend: the synthetic ground truth)")
    result = build_cache(store, build_pose_backend("oracle", store), force=True, progress=not args.no_progress)
    print(format_summary(result.summary))
    sheet = keypoint_sheet(store, report / "keypoints.png", n=16)
    print(f"      {sheet}")

    if args.ablation:
        _ablation(args, store.path, out, report)
    else:
        _train_demo(args, store.path, out, report)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; the report is in {report}")
    return 0


def _overrides(args: argparse.Namespace, store: Path, seed: int) -> list[str]:
    return [f"data.store={store}", f"train.seed={seed}", *args.overrides]


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def _train_demo(args: argparse.Namespace, store: Path, out: Path, report: Path) -> None:
    from kglfr.train import config as C
    from kglfr.train.trainer import train
    from kglfr.viz.curves import loss_curves

    print("[4/5] training KGLFR-Net (demo preset: two-stream half-width ResNet-18, KEGFR + KMLFR)")
    cfg = C.load_config("demo", _overrides(args, store, args.seed))
    run_dir = out / "train"
    _fresh(run_dir)
    res = train(cfg, run_dir, progress=not args.no_progress)
    print(res.tables)  # the library returns the per-trial tables; it no longer prints them
    print("[5/5] report")
    report.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "summary.json", "config.yaml"):
        shutil.copy2(run_dir / name, report / name)
    shutil.copy2(run_dir / "results" / "sysu-all_bn.json", report / "RESULT.json")
    if (run_dir / "report.html").is_file():  # the page and its pictures (relative links: they move together)
        shutil.rmtree(report / "report_files", ignore_errors=True)
        shutil.copytree(run_dir / "report_files", report / "report_files")
        shutil.copy2(run_dir / "report.html", report / "report.html")
    _link(run_dir / "checkpoint.pt", report / "checkpoint.pt")
    loss_curves(run_dir, report / "loss_curves.png")
    s = res.summary["protocols"]["sysu-all"]
    r1, mp, chance = s["bn"]["mean"]["rank1"], s["bn"]["mean"]["mAP"], s["chance_rank1"]
    print(f"      SYSU all-search (infrared -> visible), BN feature: Rank-1 {r1:.2f}%, mAP {mp:.2f}% "
          f"(chance Rank-1 {chance:.2f}%, {r1 / chance:.1f}x chance)")  # fmt: skip
    print(f"      {report}: report.html, RESULT.json, report.md, loss_curves.png, keypoints.png, checkpoint.pt")


def _link(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def synth_options(args: argparse.Namespace) -> dict:
    """What the demo's synthetic data depends on (its bytes are a function of these and the version)."""
    from kglfr import __version__

    return {
        "ids": args.ids,
        "test_ids": args.test_ids,
        "images_per_camera": args.images_per_camera,
        "seed": args.seed,
        "size": [DEMO_DEFAULTS["height"], DEMO_DEFAULTS["width"]],
        "kglfr": __version__,
    }


def _ablation(args: argparse.Namespace, store: Path, out: Path, report: Path) -> None:
    import json

    import numpy as np

    from kglfr.train.ablation import run_ablation, write_ablation

    def notify(row, seed: int, run_dir: Path, kept: bool) -> None:
        print(f"[4/5] Table 2 row {row.idx} ({row.preset}) at demo scale, seed {seed}")
        if kept:
            print(f"      {run_dir} finished earlier with this config and data: kept")

    results = run_ablation(store, out / "ablation", seeds=args.seeds, seed=args.seed, base="demo",
                           overrides=args.overrides, data=synth_options(args), controls=False,
                           progress=not args.no_progress, notify=notify)  # fmt: skip
    print("[5/5] ablation table")
    caption = (f"SYSU all-search on the synthetic demo data, {args.seeds} seed(s) per row (mean ± std), BN feature, "
               f"chance Rank-1 {results[0].chance_rank1:.2f}%")  # fmt: skip
    _, _, text = write_ablation(report, results, args.seeds, caption)
    print(text)
    print(json.dumps({r.row.preset: round(float(np.mean(r.rank1)), 2) for r in results}))
