"""``kglfr keypoints``: run a pose backend once over a prepared store and cache its keypoints there."""

from __future__ import annotations

import argparse

from kglfr.cli import add_command, as_flags, fraction, positive_int
from kglfr.errors import KglfrError, StoreError
from kglfr.keypoints.coco import VALID_THRESHOLD

# The registered pose backends (kglfr.keypoints.backends), named here so that --help does not import
# them (torch); tests/test_cli.py checks that they agree. An unknown name is refused by the registry.
BACKEND_NAMES = ("blazepose", "hrnet", "oracle")

# How the library's parameter advice reads as this command's flags.
FLAGS = {
    "force=True": "--force",
    "batch_size": "--batch-size",
    "device='cpu'": "--device cpu",
    "device=": "--device ",
    "takes no weights": "takes no --weights",
    "weights=": "--weights ",
    "url=": "--url ",
}

EXAMPLES = """
  kglfr keypoints --store stores/sysu --backend hrnet --weights pose_hrnet_w32_256x192.pth --device cuda
  kglfr keypoints --store stores/sysu --backend blazepose            # needs: pip install 'kglfr[pose]'
  kglfr keypoints --store runs/store --backend oracle                # synthetic data: ground truth
  kglfr keypoints --store stores/sysu --backend hrnet --weights w.pth --force   # rebuild
  kglfr keypoints --fetch-model      # once: the BlazePose model from the mediapipe 0.10.21 wheel on PyPI
  kglfr keypoints --fetch-model hrnet             # once: mmpose's HRNet-W32 COCO weights, sha256-checked
  kglfr keypoints --store stores/sysu --backend hrnet            # then: no --weights needed
  KGLFR_HRNET_URL=http://mirror/hrnet_w32_coco_256x192-c78dce93_20200708.pth kglfr keypoints --fetch-model hrnet
"""


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 32x16), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "keypoints",
        "Run a pose backend over a prepared store and cache the 13 heatmaps, keypoints and part centres "
        "in STORE/keypoints/BACKEND (resumes an interrupted run; caches of other backends are kept).",
        EXAMPLES,
    )
    p.add_argument("--store", help="prepared store (from 'kglfr prepare')")
    p.add_argument("--backend", help=f"pose backend: {', '.join(BACKEND_NAMES)}")
    p.add_argument("--weights", default=None,
                   help="weights file of the pose network (hrnet: .pth; blazepose: .tflite, optional)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per backend call (default 32)")
    p.add_argument("--heatmap-size", type=_size, default=None, metavar="HxW",
                   help="size of the cached heatmaps (default 32x16)")  # fmt: skip
    p.add_argument("--threshold", type=fraction, default=VALID_THRESHOLD,
                   help=f"keypoint confidence a part needs to be valid, 0..1 (default {VALID_THRESHOLD})")  # fmt: skip
    p.add_argument("--head", choices=("max", "sum"), default="max", help="head heatmap from the face maps")
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild even if the cache is up to date (built beside it "
        "and swapped in when complete: a failed rebuild keeps the old cache)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fetch-model",
        nargs="?",
        const="blazepose",
        choices=("blazepose", "hrnet"),
        help="download a pose model into $KGLFR_HOME or ~/.cache/kglfr, then run --store/--backend if given. "
        "Bare --fetch-model or 'blazepose': the BlazePose model (pip download of the mediapipe 0.10.21 wheel; "
        "nothing is installed); 'hrnet': mmpose's HRNet-W32 COCO 256x192 checkpoint, checked against the "
        "sha256 prefix in its file name, saved as pose_hrnet_w32_256x192.pth",
    )
    p.add_argument("--url", default=None,
                   help="with --fetch-model hrnet: a mirror's URL of the mmpose file (default $KGLFR_HRNET_URL, "
                        "else download.openmmlab.com)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KglfrError as e:
        raise as_flags(e, FLAGS) from None


def _run(args: argparse.Namespace) -> int:
    from kglfr.data.store import Store
    from kglfr.keypoints.build import build_cache, build_pose_backend, format_summary
    from kglfr.keypoints.cache import DEFAULT_HEATMAP_HW

    if args.url is not None and args.fetch_model != "hrnet":
        raise KglfrError("--url goes with --fetch-model hrnet")
    if args.fetch_model == "hrnet":
        from kglfr.keypoints.weights import fetch_hrnet_model

        print(f"hrnet weights: {fetch_hrnet_model(args.url, progress=not args.no_progress)}")
    elif args.fetch_model:
        from kglfr.keypoints.weights import fetch_blazepose_model

        print(f"blazepose model: {fetch_blazepose_model()}")
    if args.fetch_model and args.store is None and args.backend is None:
        return 0
    if args.store is None or args.backend is None:
        raise KglfrError("--store and --backend are required (or --fetch-model alone)")
    store = Store.open(args.store)
    if len(store) == 0:  # checked before the backend loads its weights
        raise StoreError(f"store {store.path} holds no images; prepare it from a dataset with images first")
    # an unknown backend name is refused here, by the backend registry, listing the valid ones
    backend = build_pose_backend(args.backend, store, weights=args.weights, device=args.device)
    result = build_cache(
        store,
        backend,
        heatmap_size=args.heatmap_size or DEFAULT_HEATMAP_HW,
        batch_size=args.batch_size,
        threshold=args.threshold,
        head=args.head,
        force=args.force,
        progress=not args.no_progress,
    )
    cache = result.cache
    state = "resumed and finished" if result.resumed else "written"
    state = "up to date (--force rebuilds it)" if result.computed == 0 else state
    print(f"keypoint cache {cache.path}: {len(cache)} images, backend {cache.backend}, {state}")
    print(format_summary(result.summary))
    total = len(cache)
    none = int(cache.no_person.sum())
    if none:
        print(f"{none} of {total} images have no valid part (no person found); "
              "training uses random erasing centres for them")  # fmt: skip
    return 0
