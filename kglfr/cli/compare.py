"""``kglfr compare``: several methods x seeds trained on one store under one budget, then one table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kglfr.cli import add_command, as_flags, positive_int

EXAMPLES = """
  kglfr compare --store stores/sysu --out runs/cmp --methods agw,caj,kglfr,kglfr_caj --seeds 3
  kglfr compare --store runs/demo/store --out runs/cmp-demo --methods agw,caj,kglfr,kglfr_caj --seeds 3 --base demo
  kglfr compare --store runs/demo/store --out runs/cmp-quick --methods baseline,kglfr --base demo train.epochs=4
  kglfr compare --store stores/regdb --out runs/cmp-regdb --methods kglfr,sysu/baseline data.trial=2

A method NAME is the preset <dataset>/NAME of the store's dataset (sysu, regdb, llcm; a synthetic store
is sysu); a name with a '/' is a preset itself. Without --base each method's preset is used as is. With
--base PRESET, a run's config is PRESET's (data: image size, padding, batch; model: backbone, pretrained
weights; optim and train: the schedule; eval) with the method, loss and augment sections of the method's
preset. key=value overrides apply to every run, last. Each run trains into OUT/<method>-seed<S> (its
resolved config.yaml beside its results) and is evaluated under the store's first protocol (SYSU:
all-search; RegDB: visible-to-thermal; LLCM: IR-to-VIS), BN feature. OUT/compare.md and OUT/compare.json
hold the table: per method Rank-1 / mAP / mINP as mean ± std over the seeds, the time per run, and the
published figures beside where the dataset has them. Run the same command again to resume: finished
runs are kept, an interrupted one continues from its checkpoint; when all finished it only prints the
table. A failed run is a row of its own with its reason; the others go on, and the exit status is 2.
"""

FLAGS = {"methods": "--methods"}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "compare", "Train several methods x seeds on one store under one budget; one table.",
                    EXAMPLES)  # fmt: skip
    p.add_argument("--store", required=True, help="a prepared store (kglfr prepare), with keypoints when a method "
                   "needs them")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the runs and the table")
    p.add_argument("--methods", required=True, metavar="M1,M2,...",
                   help="comma-separated method names (agw,caj,kglfr,kglfr_caj) or preset names")  # fmt: skip
    p.add_argument("--seeds", type=positive_int, default=1, help="training seeds per method (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the first seed (default 0): seeds SEED..SEED+SEEDS-1")
    p.add_argument("--base", default=None, metavar="PRESET",
                   help="the budget of every run (e.g. demo): this preset's sections except method, loss and "
                   "augment (default: each method's own preset as is)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-run lines stay)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of every run (train.epochs=5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kglfr.errors import KglfrError
    from kglfr.train.run_folder import Interrupted

    try:
        return _compare(args)
    except Interrupted as e:
        out = Interrupted(f"{e}; or run this kglfr compare command again: it continues that run and keeps the "
                          "finished ones")  # fmt: skip
        out.exit_code = e.exit_code
        raise out from None
    except KglfrError as e:
        raise as_flags(e, FLAGS) from None


def _compare(args: argparse.Namespace) -> int:
    from kglfr.data.store import Store
    from kglfr.errors import KglfrError
    from kglfr.eval.model_eval import default_protocols
    from kglfr.eval.protocols import PROTOCOLS
    from kglfr.io import folder_lock
    from kglfr.train import compare as K
    from kglfr.train.multirun import store_identity

    store = Store.open(args.store)
    protocols = default_protocols(store.dataset)
    if not protocols:
        raise KglfrError(f"--store {args.store} holds {store.dataset}, which has no published protocol to compare on")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = list(range(args.seed, args.seed + args.seeds))
    plan = K.plan_compare(methods, seeds, store.dataset, store.path, args.out, args.base, args.overrides)
    with folder_lock(Path(args.out), "comparison folder"):  # once every config resolved: a bad one writes nothing
        outcomes = K.run_compare(plan, store_identity(store.path), protocols[0], progress=not args.no_progress,
                                 notify=_progress_printer(time.monotonic()))  # fmt: skip
    kept = sum(o.state == "kept" for o in outcomes)
    if kept:
        print(f"{kept} of {len(outcomes)} runs finished earlier with these configs on this store: kept")
    chance = next((o.chance_rank1 for o in outcomes if o.chance_rank1 is not None), None)
    budget = "each method's own preset" if args.base is None else f"the {args.base} preset"
    caption = (f"{store.dataset} store, {len(seeds)} seed(s) per method ({', '.join(map(str, seeds))}), budget: "
               f"{budget}" + ("" if chance is None else f"; chance Rank-1 {chance:.2f}%"))  # fmt: skip
    table = K.compare_payload(outcomes, store=str(store.path), dataset=store.dataset, protocol=protocols[0],
                              protocol_title=PROTOCOLS[protocols[0]].title, base=args.base,
                              overrides=args.overrides, synthetic=K.is_synthetic(store), caption=caption)  # fmt: skip
    js, md, text = K.write_compare(args.out, table)
    print(text)
    print(f"wrote {md} and {js}")
    failed = [f"{o.method} seed {o.seed}" for o in outcomes if o.state == "failed"]
    if failed:
        raise KglfrError(f"{len(failed)} of {len(outcomes)} runs failed ({', '.join(failed)}; reasons in the table); "
                         "fix the cause and run the same command again: finished runs are kept")  # fmt: skip
    return 0


def _progress_printer(start: float):
    """The per-run lines: before a run trains and after it (its time, result or reason), with the elapsed time."""
    from kglfr.train.compare import format_seconds

    def notify(i: int, n: int, run, outcome) -> None:
        elapsed = format_seconds(time.monotonic() - start)
        head = f"[{i}/{n}] {run.method} seed {run.seed}"
        if outcome is None:
            print(f"{head}: training {run.preset} into {run.folder} (elapsed {elapsed})", flush=True)
        elif outcome.state == "failed":
            print(f"{head}: failed after {format_seconds(outcome.seconds)}: {outcome.reason} (elapsed {elapsed})",
                  flush=True)  # fmt: skip
        else:
            m = outcome.metrics
            print(f"{head}: done in {format_seconds(outcome.seconds)}, Rank-1 {m['rank1']:.2f} mAP {m['mAP']:.2f} "
                  f"mINP {m['mINP']:.2f} (elapsed {elapsed})", flush=True)  # fmt: skip

    return notify
