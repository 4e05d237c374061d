"""``kglfr search``: rank a gallery of one modality for query images of the other."""

from __future__ import annotations

import argparse
import sys

from kglfr.cli import add_command, positive_int
from kglfr.errors import KglfrError

EXAMPLES = """
  kglfr search --checkpoint ckpt.pt --query ir_probe.jpg --query-modality infrared --gallery visible_gallery/
  kglfr search --checkpoint ckpt.pt --query probes/ --query-modality infrared --gallery visible_gallery/ \\
      --top 10 --out grid.png
  kglfr search --checkpoint ckpt.pt --query probes/ --query-modality visible --gallery ir_feats.npz \\
      --gallery-root ir_images/ --out grid.png

A gallery folder is embedded once and cached in DIR/.kglfr-features-<checkpoint sha>.npz, reused while
its files (names, sizes, mtimes) and the checkpoint are unchanged. The gallery's modality is the other
one unless --gallery-modality says otherwise (a gallery of the query's own modality is warned about).
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
    p.set_defaults(func=run)


def warn(text: str) -> None:
    print(f"kglfr search: warning: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from kglfr.api import list_images, load, parse_layout, parse_modality
    from kglfr.data.records import Modality
    from kglfr.inference.search import gallery_features, have_faiss, top_k

    if args.out:
        from kglfr.io import check_writable

        check_writable(args.out)
    qmod = parse_modality(args.query_modality)
    query = Path(args.query).expanduser()
    if query.is_dir():
        qfiles = list_images(query)
        qrel = [f.relative_to(query) for f in qfiles]
    elif query.is_file():
        qfiles, qrel = [query], [Path(query.parent.name) / query.name]
    else:
        raise KglfrError(f"query {query} does not exist")
    qpids = np.asarray([parse_layout(r)[0] for r in qrel])
    gallery = Path(args.gallery).expanduser()
    if not gallery.exists():
        raise KglfrError(f"gallery {gallery} does not exist")
    model = load(args.checkpoint, args.device)
    other = Modality(1 - int(qmod))
    if gallery.is_dir():
        gmod = parse_modality(args.gallery_modality) if args.gallery_modality else other
        feats, gpids, _, gpaths, gmods, reused = gallery_features(
            model, gallery, gmod, flip=args.flip, batch_size=args.batch_size, progress=True, cache=not args.no_cache
        )
        root = gallery
        print(f"gallery {gallery}: {len(feats)} {gmod.name.lower()} images "
              f"({'cached features reused' if reused else 'features extracted'})")  # fmt: skip
    else:
        from kglfr.eval.features import load_features

        fs = load_features(gallery)
        feats, gpids, gpaths, gmods = fs.feats, fs.pids, fs.paths, fs.modalities
        if args.gallery_modality:
            gmods = np.full(len(feats), int(parse_modality(args.gallery_modality)))
        root = Path(args.gallery_root).expanduser() if args.gallery_root else None
        print(f"gallery {gallery}: {len(feats)} images from a features file")
        if feats.shape[1] != model.feature_dim:
            raise KglfrError(f"gallery {gallery} has {feats.shape[1]}-d features, the model gives "
                             f"{model.feature_dim}-d: extract it with this checkpoint")  # fmt: skip
    if gmods is not None and len(gmods):
        same = int((np.asarray(gmods) == int(qmod)).sum())
        if same:
            warn(f"{same} of {len(gmods)} gallery images are {qmod.name.lower()}, the query's own modality; "
                 f"cross-modality search expects a {other.name.lower()} gallery")  # fmt: skip
    q = model.embed(qfiles, qmod, flip=args.flip, batch_size=args.batch_size)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if args.method.startswith("faiss") and not have_faiss():
        raise KglfrError(f"--method {args.method} needs faiss: pip install 'kglfr[search]'")
    scores, index, method = top_k(q, feats, args.top, method=args.method)
    known = (qpids[:, None] >= 0) & (gpids[index] >= 0)
    correct = np.where(known, qpids[:, None] == gpids[index], None)
    print(f"{len(q)} queries, top {index.shape[1]} of {len(feats)} ({method} search)")
    for i, f in enumerate(qrel):
        print(f"query {f.as_posix()}" + (f" (pid {qpids[i]})" if qpids[i] >= 0 else ""))
        for j in range(index.shape[1]):
            g = int(index[i, j])
            mark = "" if correct[i, j] is None else ("  match" if correct[i, j] else "  wrong")
            pid = f"  pid {gpids[g]}" if gpids[g] >= 0 else ""
            print(f"  {j + 1:3d}  {scores[i, j]:.4f}  {gpaths[g]}{pid}{mark}")
    if args.out:
        from kglfr.viz.retrieval import retrieval_grid

        rows = min(len(qfiles), args.rows)
        ranked = [[(root / gpaths[g]) if root is not None else None for g in index[i]] for i in range(rows)]
        out = retrieval_grid(
            qfiles[:rows],
            ranked,
            args.out,
            correct=correct[:rows],
            scores=scores[:rows],
            query_labels=[f"query {qpids[i]}" if qpids[i] >= 0 else "query" for i in range(rows)],
        )
        print(f"wrote {out}")
    return 0
