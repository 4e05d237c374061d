"""``kglfr viz WHAT``: pictures of data and results.

Each picture is a sub-subcommand. ``keypoints`` lives here; others (retrieval grids, Grad-CAM) are
added by writing a module ``kglfr/cli/viz_<name>.py`` with ``register(viz_subparsers)`` and naming it
in ``VIZ_COMMANDS``; a module not written yet is skipped, as in ``kglfr.cli``.
"""

from __future__ import annotations

import argparse
import importlib

from kglfr.cli import add_command

VIZ_COMMANDS = ("retrieval", "gradcam")  # modules kglfr.cli.viz_<name>, after the built-in "keypoints"

EXAMPLES = """
  kglfr viz keypoints --store runs/store --out runs/keypoints.png
  kglfr viz keypoints --store stores/sysu --n 32 --augment --seed 3 --out aug.png
"""

KEYPOINT_EXAMPLES = """
  kglfr viz keypoints --store runs/store --out runs/keypoints.png               # 8 visible + 8 infrared
  kglfr viz keypoints --store stores/sysu --n 32 --split test --no-heatmaps --out kp.png
  kglfr viz keypoints --store stores/sysu --augment --out aug.png   # after pad/crop/flip: still aligned?
  kglfr viz keypoints --store stores/sysu --keypoints hrnet --out hrnet.png   # one cache of several
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "viz", "Draw pictures of data and results: keypoint sheets and Grad-CAM maps.", EXAMPLES)
    vsub = p.add_subparsers(dest="viz_command", metavar="WHAT", required=True)
    register_keypoints(vsub)
    for name in VIZ_COMMANDS:
        try:
            module = importlib.import_module(f"kglfr.cli.viz_{name}")
        except ModuleNotFoundError as e:
            if e.name == f"kglfr.cli.viz_{name}":
                continue
            raise
        module.register(vsub)


def register_keypoints(vsub: argparse._SubParsersAction) -> None:
    p = add_command(
        vsub,
        "keypoints",
        "Draw visible and infrared images (half each) with their cached keypoints, skeleton, the 11 part "
        "centres and the heatmaps (needs 'kglfr keypoints' first).",
        KEYPOINT_EXAMPLES,
    )
    p.add_argument("--store", required=True, help="prepared store with a keypoint cache")
    p.add_argument("--out", required=True, help="picture to write (.png, .pdf, .svg ...)")
    p.add_argument("--n", type=int, default=16, help="number of images, half visible, half infrared (default 16)")
    p.add_argument("--seed", type=int, default=0, help="which images (and transform draws) to pick (default 0)")
    p.add_argument("--split", choices=("train", "test"), default=None, help="only images of this split")
    p.add_argument("--cols", type=int, default=8, help="images per row (default 8)")
    p.add_argument("--no-heatmaps", action="store_true", help="no heatmap overlay")
    p.add_argument("--augment", action="store_true", help="show them after the training transform (pad, crop, flip)")
    p.add_argument(
        "--keypoints",
        default=None,
        metavar="NAME",
        help="the backend whose cache to draw when the store has several (default: the most recently finished one, "
        "as training takes unless data.keypoints=NAME)",
    )
    p.set_defaults(func=run_keypoints)


def run_keypoints(args: argparse.Namespace) -> int:
    from kglfr.errors import KglfrError
    from kglfr.viz import check_figure_format
    from kglfr.viz.keypoints import keypoint_sheet

    if args.n < 1 or args.cols < 1:
        raise KglfrError("--n and --cols must be at least 1")
    check_figure_format(args.out, option="--out")
    out = keypoint_sheet(args.store, args.out, n=args.n, seed=args.seed, heatmaps=not args.no_heatmaps,
                         augment=args.augment, split=args.split, ncols=args.cols,
                         keypoints=args.keypoints)  # fmt: skip
    print(f"wrote {out}")
    return 0
