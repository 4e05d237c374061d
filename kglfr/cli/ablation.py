"""``kglfr ablation``: the paper's Table 2 (baseline, +KMLFR, +Random Erasing, +KEGFR, KEGFR+KMLFR) on a store."""

from __future__ import annotations

import argparse

from kglfr.cli import add_command, positive_int

EXAMPLES = """
  kglfr ablation --store stores/sysu --out runs/table2                 # the five sysu/* presets + the control
  kglfr ablation --store stores/sysu --out runs/table2 --seeds 3 train.epochs=60
  kglfr ablation --store runs/demo/store --out runs/abl --base demo    # each row's method at the demo's scale

Each row is trained into OUT/<preset>-seed<N> and evaluated under the store's first protocol (SYSU:
all-search), BN feature; OUT/ablation.md and OUT/ablation.json hold the table (mean ± std over seeds),
with the paper's Table 2 figures beside ours on a SYSU-MM01 store. A run that finished with the same
config on the same store is kept, so an interrupted ablation picks up where it stopped. The control row
3b (sysu/random_erasing_w05: Random Erasing at triplet weight 0.5, as KEGFR) is trained when that preset
exists, unless --no-control.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "ablation", "Train and tabulate the paper's Table 2 ablation on a prepared store.", EXAMPLES)
    p.add_argument("--store", required=True, help="a prepared store (kglfr prepare)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the runs and the table")
    p.add_argument("--seeds", type=positive_int, default=1, help="training seeds per row (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    p.add_argument(
        "--base",
        default=None,
        metavar="PRESET",
        help="train each row's method (loss and augment keys) at this preset's scale (e.g. demo) instead of "
        "the row's own sysu/* preset",
    )
    p.add_argument("--no-control", action="store_true", help="leave out the control row (random_erasing_w05)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of every row (train.epochs=5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kglfr.data.store import Store
    from kglfr.errors import KglfrError
    from kglfr.eval.model_eval import default_protocols
    from kglfr.train.ablation import run_ablation, write_ablation

    store = Store.open(args.store)
    protocols = default_protocols(store.dataset)
    if not protocols:
        raise KglfrError(f"--store {args.store} holds {store.dataset}, which has no published protocol to tabulate")

    def notify(row, seed: int, run_dir: Path, kept: bool) -> None:
        state = "finished earlier with this config and store: kept" if kept else "training"
        print(f"Table 2 row {row.idx} ({row.preset}), seed {seed}: {run_dir} {state}")

    results = run_ablation(store.path, Path(args.out), seeds=args.seeds, seed=args.seed, base=args.base,
                           overrides=args.overrides, protocol=protocols[0], controls=not args.no_control,
                           progress=not args.no_progress, notify=notify)  # fmt: skip
    caption = (f"{protocols[0]} on {store.path} ({store.dataset}), {args.seeds} seed(s) per row (mean ± std), "
               f"BN feature, chance Rank-1 {results[0].chance_rank1:.2f}%")  # fmt: skip
    js, md, text = write_ablation(args.out, results, args.seeds, caption, paper=protocols[0] == "sysu-all")
    print(text)
    print(f"wrote {md} and {js}")
    return 0
