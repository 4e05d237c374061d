"""``kglfr search``: rank a gallery of one modality for query images of the other."""

from __future__ import annotations

import argparse
import sys

from kglfr.cli import add_amp_option, add_command, positive_int, resolve_amp

EXAMPLES = """
  kglfr search --checkpoint ckpt.pt --query ir_probe.jpg --query-modality infrared --gallery visible_gallery/
  kglfr search --checkpoint ckpt.pt --query probes/ --query-modality infrared --gallery visible_gallery/ \\
      --top 10 --out grid.png
  kglfr search --checkpoint ckpt.pt --query probes/ --query-modality visible --gallery ir_feats.npz \\
      --gallery-root ir_images/ --out grid.png
  kglfr search --checkpoint ckpt.pt --query probes/ --query-modality infrared --gallery visible_gallery/ --amp int8

A gallery folder is embedded once and cached in DIR/.kglfr-features-<checkpoint sha>.npz, reused while
its files (names, sizes, mtimes) and the checkpoint are unchanged. The gallery's modality is the other
one unless --gallery-modality says otherwise: a folder cannot tell, so name it when it is not. A gallery of
the query's own modality (from --gallery-modality, or recorded in a features file) is warned about.
Identities come from the DIR/<pid>/<camera>_*.jpg layout where the folders are numbers: then the grid
has green (same identity) and red (another) borders, else grey. Galleries from 20,000 images are
searched with faiss's exact flat index when it is installed (pip install kglfr[search]);
--method faiss-ivf asks for the approximate IVF index (faster, lower recall).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "search", "Rank a gallery for query images (cross-modality retrieval) and draw the grid.",
                    EXAMPLES)  # fmt: skip
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="kglfr train checkpoint (file or run folder)")
    p.add_argument("--query", required=True, metavar="IMG_OR_DIR", help="a query image or a folder of them")
    p.add_argument("--query-modality", required=True, choices=("visible", "infrared"), help="the queries' modality")
    p.add_argument(
        "--gallery",
        required=True,
        metavar="DIR_OR_FEATS.npz",
        help="a folder of gallery images, or a features file (kglfr extract)",
    )
    p.add_argument(
        "--gallery-modality",
        choices=("visible", "infrared"),
        default=None,
        help="a gallery folder's modality (default: the other one than the query's)",
    )
    p.add_argument(
        "--gallery-root",
        default=None,
        metavar="DIR",
        help="with a features file: the folder its paths are relative to (to draw its images)",
    )
    p.add_argument("--top", type=positive_int, default=10, metavar="K", help="gallery images per query (default 10)")
    p.add_argument("--out", default=None, metavar="GRID.png", help="draw the retrieval grid")
    p.add_argument("--rows", type=positive_int, default=20, help="queries drawn in the grid at most (default 20)")
    p.add_argument(
        "--method",
        choices=("auto", "exact", "faiss-flat", "faiss-ivf"),
        default="auto",
        help="search method (default auto: exact below 20,000 gallery images or without faiss)",
    )
    p.add_argument("--flip", action="store_true", help="average image and mirror features")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the gallery feature cache")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    add_amp_option(p)
    p.set_defaults(func=run)


def warn(text: str) -> None:
    print(f"kglfr search: warning: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from kglfr.api import load
    from kglfr.errors import KglfrError
    from kglfr.inference.search import have_faiss, search

    if args.method.startswith("faiss") and not have_faiss():
        raise KglfrError(f"--method {args.method} needs faiss: pip install 'kglfr[search]'")

    if args.out:
        from kglfr.io import check_writable
        from kglfr.viz import check_figure_format

        check_figure_format(args.out, option="--out")  # before the work, not after it
        check_writable(args.out, option="--out")
    if args.gallery_root and not str(args.gallery).endswith(".npz"):
        warn("--gallery-root applies to a features file gallery; a folder gallery draws its own images")
    resolve_amp(args, "search")  # an --amp the device cannot run: one line, before the checkpoint is read
    model = load(args.checkpoint, args.device, args.amp, "search")
    print(f"model: {model.policy.describe()}")
    res = search(model, args.query, args.query_modality, args.gallery, gallery_modality=args.gallery_modality,
                 gallery_root=args.gallery_root, top=args.top, method=args.method, flip=args.flip,
                 cache=not args.no_cache, batch_size=args.batch_size, progress=True)  # fmt: skip
    if res.gallery_source.startswith("folder"):
        how = res.gallery_source.split("(", 1)[1].rstrip(")")
        print(f"gallery {args.gallery}: {len(res.gallery_paths)} {res.gallery_modality.name.lower()} images ({how})")
    else:
        print(f"gallery {args.gallery}: {len(res.gallery_paths)} images from a features file")
    for w in res.warnings:
        warn(w)
    _print_ranking(res)
    if args.out:
        if res.gallery_root is None:
            warn("the grid's gallery tiles are blank: pass --gallery-root DIR (the folder the features file's "
                 "paths are relative to) to draw the gallery images")  # fmt: skip
        print(f"wrote {res.draw(args.out, args.rows)}")
    return 0


def _print_ranking(res) -> None:
    index, scores, correct = res.index, res.scores, res.correct
    print(f"{len(index)} queries, top {index.shape[1]} of {len(res.gallery_paths)} ({res.method} search)")
    for i, name in enumerate(res.query_names):
        pid = res.query_pids[i]
        print(f"query {name}" + (f" (pid {pid})" if pid >= 0 else ""))
        for j in range(index.shape[1]):
            g = int(index[i, j])
            mark = "" if correct[i, j] is None else ("  match" if correct[i, j] else "  wrong")
            gpid = f"  pid {res.gallery_pids[g]}" if res.gallery_pids[g] >= 0 else ""
            print(f"  {j + 1:3d}  {scores[i, j]:.4f}  {res.gallery_paths[g]}{gpid}{mark}")
