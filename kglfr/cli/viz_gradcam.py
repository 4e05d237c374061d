"""``kglfr viz gradcam``: Grad-CAM of layer4 for the BN feature, visible and infrared side by side."""

from __future__ import annotations

import argparse

from kglfr.cli import add_amp_option, add_command, positive_int, resolve_amp
from kglfr.errors import KglfrError

EXAMPLES = """
  kglfr viz gradcam --checkpoint ckpt.pt --store stores/sysu --pid 7 --out gradcam_7.png    # 4 pairs of pid 7
  kglfr viz gradcam --checkpoint ckpt.pt --images a.jpg b.jpg --modality infrared --out ir.png
  kglfr viz gradcam --checkpoint ckpt.pt --images v1.jpg v2.jpg --infrared i1.jpg i2.jpg --out pairs.png

The map explains the cosine similarity of each image's BN feature to the mean feature of all the images
drawn (one identity's), so it works for test identities the classifier never saw.
"""


def register(vsub: argparse._SubParsersAction) -> None:
    p = add_command(vsub, "gradcam", "Grad-CAM (layer4, BN feature) overlaid on images; visible and infrared "
                    "pairs side by side.", EXAMPLES)  # fmt: skip
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="kglfr train checkpoint")
    p.add_argument("--images", nargs="+", default=None, metavar="IMG", help="images of --modality")
    p.add_argument("--modality", choices=("visible", "infrared"), default=None, help="the modality of --images")
    p.add_argument(
        "--infrared",
        nargs="+",
        default=None,
        metavar="IMG",
        help="infrared images drawn beside --images (then --images are visible)",
    )
    p.add_argument("--store", default=None, help="a prepared store: draw pairs of identity --pid")
    p.add_argument("--pid", type=int, default=None, help="with --store: the identity")
    p.add_argument("--n", type=positive_int, default=4, help="with --store: pairs to draw (default 4)")
    p.add_argument("--out", required=True, help="picture to write (.png, .pdf ...)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    add_amp_option(p, int8=False)  # Grad-CAM needs gradients
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from kglfr.api import load
    from kglfr.io import check_writable
    from kglfr.viz import check_figure_format
    from kglfr.viz.gradcam import gradcam_figure

    check_figure_format(args.out, option="--out")  # before the work, not after it
    check_writable(args.out, option="--out")
    if args.store:
        if args.images or args.infrared:
            raise KglfrError("give --store with --pid, or --images, not both")
        if args.pid is None:
            raise KglfrError("--store needs --pid P (the identity to draw)")
        from kglfr.data.records import Modality
        from kglfr.data.store import Store

        store = Store.open(args.store)
        sel = {m: np.flatnonzero((store.pids == args.pid) & (store.modalities == int(m)))[: args.n] for m in Modality}
        if not any(len(v) for v in sel.values()):
            raise KglfrError(f"store {store.path} has no images of pid {args.pid}")
        visible = list(store.read_batch(sel[Modality.VISIBLE])) if len(sel[Modality.VISIBLE]) else []
        infrared = list(store.read_batch(sel[Modality.INFRARED])) if len(sel[Modality.INFRARED]) else []
        title = f"pid {args.pid}"
    elif args.images:
        if args.infrared:
            if args.modality == "infrared":
                raise KglfrError("with --infrared, --images are the visible images")
            visible, infrared = args.images, args.infrared
        elif not args.modality:
            raise KglfrError("--images needs --modality visible|infrared (or --infrared IMG ... beside them)")
        else:
            visible, infrared = (args.images, []) if args.modality == "visible" else ([], args.images)
        title = None
    else:
        raise KglfrError("give --images IMG ... --modality M, or --store S --pid P")
    resolve_amp(args, "gradcam")  # an --amp the device cannot run: one line, before the checkpoint is read
    model = load(args.checkpoint, args.device, args.amp, "gradcam")
    print(f"model: {model.policy.describe()}")
    print(f"wrote {gradcam_figure(model, visible, infrared, args.out, title)}")
    return 0
