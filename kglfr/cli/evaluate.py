"""``kglfr evaluate``: score features of any model with a published VI-ReID protocol."""

from __future__ import annotations

import argparse
import os
import time

from kglfr.cli import add_amp_option, add_command, resolve_amp
from kglfr.errors import KglfrError
from kglfr.io import check_writable

# kglfr.eval.metrics.DISTANCES, named here so that --help does not import kglfr.eval (tests/test_cli.py
# checks that they agree, and that PROTOCOL_HELP names every protocol of kglfr.eval.protocols.PROTOCOLS)
DISTANCES = ("cosine", "euclidean")

EXAMPLES = """
  kglfr evaluate --features sysu_test.npz --protocol sysu-all --out sysu_all.json
  kglfr evaluate --features sysu_test.npz --protocol sysu-indoor --multi-shot
  kglfr evaluate --features regdb_t1.npz --features regdb_t2.npz --protocol regdb-v2i   # one file per trial
  kglfr evaluate --features llcm_test.npz --protocol llcm-i2v --rerank --out llcm.json
  kglfr evaluate --checkpoint runs/demo/train/checkpoint.pt --store runs/demo/store --protocol sysu-all
  kglfr evaluate --checkpoint runs/demo/train --store runs/demo/store --amp int8   # a run folder; CPU int8
  kglfr evaluate --checkpoint runs/regdb --out runs/regdb-eval   # a 'kglfr train --trial all' folder
  kglfr evaluate --checkpoint runs/demo/train --store runs/demo/store --report runs/demo/page   # report.html
  kglfr evaluate --features sysu_test.npz --protocol sysu-all --gallery-draw official --gallery-perm rand_perm_cam.mat

The features file (.npz) holds every test image of the dataset: feats (N x D), pids (N), cams (N),
paths (N, relative to the dataset root, e.g. cam3/0001/0005.jpg); write it with
kglfr.eval.save_features. SYSU and LLCM: one file, the gallery (LLCM VIS->IR: the probe set) is
drawn from it per trial with seeds 0..trials-1; SYSU --gallery-draw official takes the dataset
authors' fixed draw from exp/rand_perm_cam.mat instead (runs 1..trials, needs scipy; with --checkpoint
the file defaults to the store's source root). RegDB: each trial has its own model, so pass one file
per trial (each gives one row). --checkpoint FOLDER of 'kglfr train --trial all' (trial1..trial10):
each trial's model on its own trial split, one table across the trials (--out DIR: DIR/report.md and
DIR/RESULT.json).
"""

PROTOCOL_HELP = {
    "sysu-all": "SYSU-MM01 all-search: IR cams 3, 6 -> one visible image per identity and camera 1, 2, 4, 5",
    "sysu-indoor": "SYSU-MM01 indoor-search: gallery from cameras 1, 2 only",
    "regdb-v2i": "RegDB visible -> thermal, all test images",
    "regdb-i2v": "RegDB thermal -> visible, all test images",
    "llcm-i2v": "LLCM IR -> VIS: every NIR image vs one VIS image per identity and camera",
    "llcm-v2i": "LLCM VIS -> IR as the published DEEN code computes it: one NIR image per identity and "
    "camera ranks every VIS image",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "evaluate",
        "Evaluate saved features with a published protocol (CMC Rank-1/5/10/20, mAP, mINP over trials).",
        EXAMPLES,
    )
    p.add_argument(
        "--features",
        action="append",
        default=None,
        metavar="FILE.npz",
        help="features file; RegDB: repeat once per trial",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="CKPT",
        help="evaluate a trained model (kglfr train) on --store instead of saved features",
    )
    p.add_argument("--store", default=None, help="with --checkpoint: the prepared store whose test split is scored")
    p.add_argument(
        "--feature",
        choices=("bn", "pool"),
        default="bn",
        help="with --checkpoint: BN feature (default, the headline) or the pooled feature before it",
    )
    p.add_argument("--flip", action="store_true", help="with --checkpoint: average image and mirror features")
    p.add_argument("--device", default="cpu", help="with --checkpoint: cpu (default) or cuda")
    add_amp_option(p, "with --checkpoint: ", evaluate=True)
    p.add_argument(
        "--protocol",
        default=None,
        choices=list(PROTOCOL_HELP),
        metavar="P",
        help="; ".join(f"{k}: {v}" for k, v in PROTOCOL_HELP.items()),
    )
    p.add_argument(
        "--multi-shot", action="store_true", help="SYSU only: ten gallery images per identity and camera instead of one"
    )
    p.add_argument(
        "--gallery-draw",
        choices=("seeded", "official"),
        default="seeded",
        help="SYSU only: seeded (default, random.seed(trial) as AGW) or official (the dataset "
        "authors' fixed permutations, exp/rand_perm_cam.mat, as their MATLAB code; needs scipy)",
    )
    p.add_argument(
        "--gallery-perm",
        default=None,
        metavar="FILE.mat",
        help="with --gallery-draw official: the rand_perm_cam.mat to use (default with --checkpoint: "
        "<the store's SYSU root>/exp/rand_perm_cam.mat; required with --features)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="gallery draws, seeds 0..N-1 (official: runs 1..N; default 10; RegDB: the number of files)",
    )
    p.add_argument(
        "--distance",
        choices=DISTANCES,
        default="cosine",
        help="cosine of L2-normalised features (default) or Euclidean of the raw features",
    )
    p.add_argument(
        "--rerank",
        action="store_true",
        help="k-reciprocal re-ranking (off by default; memory grows as (queries + gallery)^2)",
    )
    p.add_argument("--rerank-k1", type=int, default=20, help="re-ranking k1 (default 20)")
    p.add_argument("--rerank-k2", type=int, default=6, help="re-ranking k2 (default 6)")
    p.add_argument("--rerank-lambda", type=float, default=0.3, help="re-ranking lambda (default 0.3)")
    p.add_argument("--out", default=None, metavar="RESULT.json", help="write the results as JSON")
    p.add_argument(
        "--worst",
        type=int,
        default=None,
        metavar="N",
        help="with --checkpoint: draw the N queries with the lowest AP (trial 0) with their top-10; "
        "--out is then a folder: DIR/<protocol>.json, DIR/worst_<protocol>.png and .json",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="with --checkpoint: write DIR/report.html, the report page (results, CMC, camera pairs, worst "
        "queries with Grad-CAM, a searchable query list; opens offline) and its pictures in DIR/report_files",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kglfr.eval.features import load_features
    from kglfr.eval.protocols import evaluate_protocol
    from kglfr.eval.report import format_table, write_result
    from kglfr.eval.rerank import RerankConfig

    if args.checkpoint and os.path.isdir(args.checkpoint):
        from kglfr.train.run_folder import CHECKPOINT

        if not os.path.isfile(os.path.join(args.checkpoint, CHECKPOINT)):
            return run_trials_folder(args)  # the ten runs of 'kglfr train --trial all'
        args.checkpoint = os.path.join(args.checkpoint, CHECKPOINT)  # a run folder: its checkpoint
    if args.worst is not None:
        if not args.checkpoint or not args.out:
            raise KglfrError("--worst N needs --checkpoint CKPT --store STORE and --out DIR")
        if args.worst < 1:
            raise KglfrError(f"--worst must be at least 1, got {args.worst}")
        check_writable(f"{args.out}/.probe", option="--out")
    elif args.out:
        check_writable(args.out, option="--out")  # before the trials run
    if args.report is not None:
        if not args.checkpoint:
            raise KglfrError("--report DIR needs --checkpoint CKPT --store STORE (the page shows a model's rankings)")
        check_writable(f"{args.report}/report.html", option="--report")
    if args.gallery_perm and args.gallery_draw != "official":
        raise KglfrError("--gallery-perm applies to --gallery-draw official only")
    if args.gallery_draw == "official" and args.protocol and not args.protocol.startswith("sysu"):
        raise KglfrError(f"--gallery-draw official is SYSU-MM01's (rand_perm_cam.mat); {args.protocol} has none")
    if args.checkpoint:
        return run_checkpoint(args)
    if not args.features or not args.protocol:
        raise KglfrError("give --features FILE.npz and --protocol P, or --checkpoint CKPT --store STORE")
    official = None
    if args.gallery_draw == "official":
        from kglfr.eval.sysu_official import load_permutations

        if not args.gallery_perm:
            raise KglfrError("--gallery-draw official with --features needs --gallery-perm FILE "
                             "(the dataset's <SYSU root>/exp/rand_perm_cam.mat)")  # fmt: skip
        official = load_permutations(args.gallery_perm)
    features = [load_features(f) for f in args.features]
    rerank = RerankConfig(args.rerank_k1, args.rerank_k2, args.rerank_lambda) if args.rerank else None
    result = evaluate_protocol(
        features if len(features) > 1 else features[0],
        args.protocol,
        trials=args.trials,
        shots=10 if args.multi_shot else 1,
        distance=args.distance,
        rerank=rerank,
        official=official,
    )
    print(format_table(result))
    if args.out:
        try:
            path = write_result(result, args.out)
        except OSError as e:  # the destination changed while the trials ran: name it, not the temp file
            raise KglfrError(f"cannot write --out {args.out}: {e.strerror or e}") from None
        print(f"results written to {path}")
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    """Score a trained model on a store's test split (its dataset's protocols, or --protocol)."""
    from kglfr.data.store import Store
    from kglfr.eval.model_eval import check_protocols, evaluate_model, store_permutations
    from kglfr.eval.report import format_table, write_result
    from kglfr.train.checkpoint import load_model

    if args.features:
        raise KglfrError("give either --features or --checkpoint, not both")
    if not args.store:
        raise KglfrError("--checkpoint needs --store STORE (the prepared store to evaluate on)")
    store = Store.open(args.store)
    protocols = check_protocols(store.dataset, [args.protocol] if args.protocol else None)
    if not protocols:
        raise KglfrError(f"no published protocol for dataset {store.dataset!r}; pass --protocol")
    official = store_permutations(store, args.gallery_perm) if args.gallery_draw == "official" else None
    policy = resolve_amp(args, "evaluate")
    model, data = load_model(args.checkpoint, args.device)
    model = policy.model(model)
    made_by = made_by_checkpoint(args, store)
    size = tuple(data.get("input_size", store.size))
    trial = data.get("config", {}).get("data", {}).get("trial")
    t0 = time.perf_counter()
    ev = evaluate_model(
        model,
        store,
        protocols,
        trial=trial,
        size=size,
        trials=args.trials or 10,
        device=args.device,
        flip=args.flip,
        amp_dtype=policy.amp_dtype,
        progress=True,
        official=official,
    )
    for name, by in ev.results.items():
        result = by[args.feature]
        print(f"{args.feature} feature of {args.checkpoint} (amp {policy.amp_name}: {policy.why}; "
              f"chance Rank-1 {ev.chance_rank1[name]:.2f})")  # fmt: skip
        print(format_table(result))
        if args.worst is not None:
            print(f"results written to {write_result(result, f'{args.out}/{name}.json', policy.amp_name, made_by)}")
        elif args.out:
            out = args.out if len(ev.results) == 1 else str(args.out).replace(".json", f"_{name}.json")
            print(f"results written to {write_result(result, out, policy.amp_name, made_by)}")
    if args.worst is not None:
        from kglfr.api import ReIDModel
        from kglfr.inference.failures import worst_queries

        reid = ReIDModel(model, data, args.device, args.checkpoint, args.amp, "evaluate")
        reid.input_size = tuple(int(v) for v in size)
        fs = ev.features[args.feature]  # the features just scored: no second extraction
        for name in ev.results:
            png, js = worst_queries(reid, store, name, args.worst, args.out, which=args.feature, features=fs)
            print(f"worst {args.worst} queries of {name}: {png}, {js}")
    if args.report is not None:
        print(f"report page written to {write_page(args, store, ev, model, data, policy, time.perf_counter() - t0)}")
    return 0


def write_page(args: argparse.Namespace, store, ev, model, data: dict, policy, seconds: float):
    """--report DIR: the report page of the evaluation just run (the run folder's curves when it has them)."""
    from pathlib import Path

    from kglfr.train import config as C
    from kglfr.train.report_page import write_run_page

    try:
        cfg = C.config_from_dict(dict(data["config"]), f"{args.checkpoint}'s config")
    except (KeyError, TypeError, KglfrError):
        cfg = None  # a checkpoint without a readable config: the page says less about the run
    run_folder, size = Path(args.checkpoint).parent, tuple(data.get("input_size", store.size))
    return write_run_page(Path(args.report), cfg, store, ev, model=model, size=size, device=args.device,
                          weights=data.get("weights", "unknown"), amp=policy.amp_name, stages={"evaluation": seconds},
                          checkpoint=args.checkpoint, feature=args.feature,
                          run_folder=run_folder if (run_folder / "metrics.jsonl").is_file() else None)  # fmt: skip


def made_by_checkpoint(args: argparse.Namespace, store) -> dict:
    """What a result of --checkpoint was made from, for --out: the checkpoint (path, sha256), the store."""
    from kglfr.io import file_sha256

    return {"checkpoint": os.path.abspath(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
            "store": str(store.path.resolve()), "dataset": store.dataset, "feature": args.feature,
            "flip": bool(args.flip)}  # fmt: skip


def run_trials_folder(args: argparse.Namespace) -> int:
    """--checkpoint FOLDER of 'kglfr train --trial all': every trial's model on its own split, one table."""
    from pathlib import Path

    from kglfr.train.trials import (
        evaluate_trials,
        format_trials_report,
        is_trials_folder,
        trials_table,
        write_trials_report,
    )

    folder = Path(args.checkpoint)
    if not is_trials_folder(folder):
        raise KglfrError(f"--checkpoint {folder} is a folder that holds no checkpoint.pt and no trial runs "
                         f"(trial1 .. trial10 of 'kglfr train --trial all'); give a run folder or a checkpoint "
                         f"file")  # fmt: skip
    for flag, given in (("--features", args.features), ("--protocol", args.protocol), ("--worst", args.worst),
                        ("--rerank", args.rerank), ("--trials", args.trials), ("--report", args.report)):  # fmt: skip
        if given:
            raise KglfrError(f"{flag} does not apply to a folder of trial runs ({folder}): each trial's model is "
                             "scored under RegDB's protocols on its own split")  # fmt: skip
    if args.out:
        check_writable(Path(args.out) / "RESULT.json", option="--out")
    table = trials_table(*evaluate_trials(folder, args.store, args.device, args.flip, progress=True), folder)
    if args.out:
        print(write_trials_report(Path(args.out), table))
        print(f"results written to {Path(args.out) / 'report.md'} and {Path(args.out) / 'RESULT.json'}")
    else:
        print(format_trials_report(table))
    return 0
