"""``kglfr synth``: write the built-in synthetic visible-infrared dataset in a real dataset layout."""

from __future__ import annotations

import argparse

from kglfr.cli import add_command
from kglfr.errors import KglfrError

# The defaults of kglfr.data.synth.DEFAULTS, for --help without importing the generator (cv2);
# tests/test_cli.py checks that they agree.
HELP_DEFAULTS = {
    "sysu": {"ids": 40, "images_per_camera": 4, "height": 288, "width": 144},
    "regdb": {"ids": 40, "images_per_camera": 4, "height": 128, "width": 64},
}

EXAMPLES = """
  kglfr synth --layout sysu --out runs/synth-sysu                  # 40 ids, 4 images per camera, 288x144
  kglfr synth --layout regdb --out runs/synth-regdb --ids 40 --seed 1   # 128x64 BMPs, 10 trial splits
  kglfr synth --layout sysu --out runs/big --ids 200 --images-per-camera 8 --size-jitter 0.3
  kglfr synth --layout sysu --out runs/demo-like --ids 400 --test-ids 48 --images-per-camera 2
  kglfr synth --layout sysu --out runs/synth-sysu --seed 2 --force # replace an earlier synth output
"""


def register(sub: argparse._SubParsersAction) -> None:
    s, r = HELP_DEFAULTS["sysu"], HELP_DEFAULTS["regdb"]
    p = add_command(
        sub,
        "synth",
        "Draw a synthetic visible-infrared dataset in the SYSU-MM01 or RegDB layout, with ground-truth keypoints.",
        EXAMPLES,
    )
    p.add_argument("--layout", choices=("sysu", "regdb"), default="sysu", help="folder layout to write (default sysu)")
    p.add_argument(
        "--out", required=True, help="folder to create: new, empty, or an earlier 'kglfr synth' output with --force"
    )
    p.add_argument("--ids", type=int, default=None, help=f"identities, at least 4 (default {s['ids']})")
    p.add_argument(
        "--seed", type=int, default=0, help="seed; the same seed and options give the same bytes (default 0)"
    )
    p.add_argument(
        "--images-per-camera",
        type=int,
        default=None,
        help=f"images of each identity per camera (default {s['images_per_camera']})",
    )
    p.add_argument(
        "--height", type=int, default=None, help=f"image height (default sysu {s['height']}, regdb {r['height']})"
    )
    p.add_argument(
        "--width", type=int, default=None, help=f"image width (default sysu {s['width']}, regdb {r['width']})"
    )
    p.add_argument(
        "--occlusion", type=float, default=0.15, help="share of images with part of the body covered (default 0.15)"
    )
    p.add_argument(
        "--camera-dropout",
        type=float,
        default=0.1,
        help="sysu: chance that a camera never saw an identity, as in the real data (default 0.1)",
    )
    p.add_argument(
        "--size-jitter",
        type=float,
        default=0.0,
        help="shrink each image by a random factor in [1 - J, 1], like SYSU's varying sizes (default 0)",
    )
    p.add_argument(
        "--test-ids",
        type=int,
        default=None,
        help="identities held out for testing (default half of --ids; SYSU-MM01 holds out 96 of 491)",
    )
    p.add_argument("--force", action="store_true", help="replace an earlier 'kglfr synth' output in --out")
    p.set_defaults(func=run)


# The parameters of kglfr.data.synth.synthesize that its errors name, and their flags.
PARAMETER_FLAGS = {
    "out": "--out",
    "layout": "--layout",
    "ids": "--ids",
    "seed": "--seed",
    "images_per_camera": "--images-per-camera",
    "height": "--height",
    "width": "--width",
    "occlusion": "--occlusion",
    "camera_dropout": "--camera-dropout",
    "size_jitter": "--size-jitter",
    "test_ids": "--test-ids",
    "force=True": "--force",
}


def as_synth_flags(message: str) -> str:
    """A ``synthesize`` error worded with the command's flags (by position, unlike ``kglfr.cli.as_flags``:
    parameter names such as ``ids`` also occur inside its words): its first word, when a parameter
    (``test_ids must be`` -> ``--test-ids must be``, ``height and width`` -> ``--height and --width``),
    and the advice ``force=True`` -> ``--force``."""
    first, space, rest = message.partition(" ")
    if first in PARAMETER_FLAGS:
        first = PARAMETER_FLAGS[first]
        if rest.startswith("and "):
            second, _, tail = rest[4:].partition(" ")
            rest = f"and {PARAMETER_FLAGS.get(second, second)} {tail}"
    return (first + space + rest).replace("force=True", "--force")


def run(args: argparse.Namespace) -> int:
    from kglfr.data.synth import synthesize

    try:
        summary = synthesize(
            args.out,
            layout=args.layout,
            ids=args.ids,
            seed=args.seed,
            images_per_camera=args.images_per_camera,
            height=args.height,
            width=args.width,
            occlusion=args.occlusion,
            camera_dropout=args.camera_dropout,
            size_jitter=args.size_jitter,
            test_ids=args.test_ids,
            force=args.force,
            progress=True,
        )
    except KglfrError as e:
        raise KglfrError(as_synth_flags(str(e))) from None
    print(summary.line())
    return 0
