"""``kglfr extract``: features of a store split or an image folder, in the ``kglfr evaluate`` npz format."""

from __future__ import annotations

import argparse

from kglfr.cli import add_amp_option, add_command, positive_int, resolve_amp
from kglfr.errors import KglfrError

EXAMPLES = """
  kglfr extract --checkpoint runs/sysu-kglfr/checkpoint.pt --store stores/sysu --out sysu_test.npz
  kglfr evaluate --features sysu_test.npz --protocol sysu-all
  kglfr extract --checkpoint runs/demo/train --store runs/demo/store --split all --flip --out all.npz
  kglfr extract --checkpoint ckpt.pt --images my_ir_images/ --modality infrared --out ir.npz
  kglfr extract --checkpoint runs/sysu-kglfr --store stores/sysu --amp int8 --out fast.npz   # CPU, int8
  kglfr extract --checkpoint runs/regdb/trial1 --store stores/regdb --trial 2 --out t2.npz   # another trial's split

--images DIR: every .jpg/.jpeg/.png/.bmp under DIR (recursively, hidden files skipped, sorted). An image
at DIR/<pid>/<camera>_<anything>.jpg (the custom layout, e.g. 0007/3_0001.jpg, 0007/c3_0001.jpg or
0007/cam3_0001.jpg) gets
that identity and camera; otherwise pid -1 and camera 0. paths are relative to DIR.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "extract", "Extract features of a store split or an image folder into a features .npz.",
                    EXAMPLES)  # fmt: skip
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="kglfr train checkpoint (file or run folder)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", default=None, help="a prepared store (kglfr prepare)")
    src.add_argument("--images", default=None, metavar="DIR", help="a folder of images of one modality")
    p.add_argument(
        "--split",
        choices=("test", "train", "all"),
        default="test",
        help="with --store: which images (default test: what kglfr evaluate scores)",
    )
    p.add_argument("--modality", default=None, choices=("visible", "infrared"), help="with --images: their modality")
    p.add_argument("--feature", choices=("bn", "pool"), default="bn", help="BN feature (default) or pooled")
    p.add_argument("--out", required=True, metavar="FEATS.npz", help="features file to write")
    p.add_argument("--flip", action="store_true", help="average image and mirror features")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--trial",
        type=positive_int,
        default=None,
        metavar="T",
        help="with --store: the split of trial T (RegDB 1..10); default the trial the checkpoint was trained on",
    )
    add_amp_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kglfr.api import load
    from kglfr.eval.extract import folder_feature_set, store_feature_set
    from kglfr.eval.features import save_features
    from kglfr.io import check_writable

    check_writable(args.out, option="--out")
    if args.images and not args.modality:
        raise KglfrError("--images needs --modality visible|infrared (one folder holds one modality)")
    if args.trial is not None and not args.store:
        raise KglfrError("--trial picks a store's split; it needs --store")
    if args.store and args.modality:
        raise KglfrError("--modality is for --images; a store knows the modality of every image")
    if args.images and Path(args.images).expanduser().is_file():
        raise KglfrError(f"--images {args.images} is a file, not a folder; give the folder that holds the images")
    resolve_amp(args, "extract")  # an --amp the device cannot run: one line, before the checkpoint is read
    model = load(args.checkpoint, args.device, args.amp, "extract")
    print(f"model: {model.policy.describe()}")
    if args.store:
        from kglfr.data.store import Store
        from kglfr.eval.extract import checkpoint_trial

        trial = args.trial if args.trial is not None else checkpoint_trial(model)
        if trial is not None:
            print(f"trial {trial}" + (" (the checkpoint's; --trial T for another)" if args.trial is None else ""))
        fs = store_feature_set(model, Store.open(args.store), args.split, args.feature, args.flip, args.batch_size,
                               progress=True, trial=trial)  # fmt: skip
    else:
        fs = folder_feature_set(model, args.images, args.modality, args.feature, args.flip, args.batch_size,
                                progress=True)  # fmt: skip
    path = save_features(args.out, fs.feats, fs.pids, fs.cams, fs.paths, fs.modalities, amp=model.policy.amp_name)
    known = int((fs.pids >= 0).sum())
    print(f"wrote {path}: {len(fs)} images x {fs.feats.shape[1]} ({args.feature} feature, "
          f"amp {model.policy.amp_name}), {known} with a known identity")  # fmt: skip
    return 0
