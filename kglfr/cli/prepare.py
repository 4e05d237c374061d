"""``kglfr prepare``: decode a dataset once into a prepared store."""

from __future__ import annotations

import argparse
import sys

from kglfr.cli import add_command, as_flags, int_range, positive_int
from kglfr.data.datasets import dataset_names, load_dataset
from kglfr.errors import KglfrError

# How the library's parameter advice reads as this command's flags.
FLAGS = {
    "force=True": "--force",
    "skip_bad=True": "--skip-bad",
    "another out folder": "another --out",
    "value_range": "--bit-depth-range",
}


EXAMPLES = """
  kglfr prepare --dataset sysu --root ~/data/SYSU-MM01 --out stores/sysu
  kglfr prepare --dataset regdb --root ~/data/RegDB --out stores/regdb      # one store serves all 10 trials
  kglfr prepare --dataset custom --root ~/data/mine --out stores/mine --test-fraction 0.3
  kglfr prepare --dataset sysu --root runs/synth --out runs/store --height 256 --width 128 --skip-bad
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "prepare", "Decode every image of a dataset once into a memory-mapped store.", EXAMPLES)
    p.add_argument("--dataset", required=True, choices=dataset_names(), help="dataset layout of --root")
    p.add_argument("--root", required=True, help="folder of the dataset as downloaded")
    p.add_argument("--out", required=True, help="store folder to create")
    p.add_argument("--height", type=int_range(16, 2048), default=288, help="image height, 16..2048 (default 288)")
    p.add_argument("--width", type=int_range(16, 2048), default=144, help="image width, 16..2048 (default 144)")
    p.add_argument("--trial", type=positive_int, default=1, help="RegDB trial whose split is the default (default 1)")
    p.add_argument("--test-fraction", type=float, default=0.5, help="custom: share of identities for testing")
    p.add_argument("--split-seed", type=int, default=0, help="custom: seed of the identity split")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed) instead of failing")
    p.add_argument("--force", action="store_true", help="rebuild even if the store is up to date")
    p.add_argument("--workers", type=positive_int, default=None, help="decoding threads (default: up to 4)")
    p.add_argument("--bit-depth-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="16/32-bit images: map LO..HI to 0..255 (clipped) for every image; default: each "
                   "image's own min..max. 8-bit images are read as they are")  # fmt: skip
    p.set_defaults(func=run)


def dataset_options(args: argparse.Namespace) -> dict:
    """The reader options that apply to ``args.dataset``."""
    if args.dataset == "regdb":
        return {"trial": args.trial}
    if args.dataset == "custom":
        return {"test_fraction": args.test_fraction, "split_seed": args.split_seed}
    return {}


def run(args: argparse.Namespace) -> int:
    from kglfr.data.store import prepare_store

    dataset = load_dataset(args.dataset, args.root, **dataset_options(args))
    print(dataset.summary())
    try:
        store, bad = prepare_store(
            dataset,
            args.out,
            height=args.height,
            width=args.width,
            skip_bad=args.skip_bad,
            force=args.force,
            workers=args.workers,
            progress=True,
            value_range=args.bit_depth_range,
        )
    except KglfrError as e:
        raise as_flags(e, FLAGS) from None
    for b in bad:
        print(f"skipped {b.relpath}: {b.reason}", file=sys.stderr)
    print(f"store {store.path}: {len(store)} images of {store.size[0]}x{store.size[1]}, {len(bad)} skipped")
    return 0
