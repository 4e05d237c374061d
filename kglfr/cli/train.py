"""``kglfr train``: train KGLFR-Net (or an ablation) from a YAML preset with key=value overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kglfr.cli import add_command
from kglfr.data.conventions import REGDB_TRIALS

EXAMPLES = """
  kglfr train --config sysu/kglfr --out runs/sysu-kglfr data.store=stores/sysu   # ImageNet weights fetched once
  kglfr train --config sysu/kglfr --out runs/offline data.store=stores/sysu model.pretrained=resnet50-0676ba61.pth
  kglfr train --config sysu/baseline --out runs/sysu-base data.store=stores/sysu train.seed=1
  kglfr train --config regdb/kglfr --out runs/regdb data.store=stores/regdb --trial all   # runs/regdb/trial1..10
  kglfr train --config demo --out runs/mine data.store=runs/demo/store train.epochs=5
  kglfr train --config sysu/caj --out runs/sysu-caj data.store=stores/sysu    # CAJ; also sysu/agw, sysu/kglfr_caj
  kglfr train --config demo_caj --out runs/demo-caj data.store=runs/demo/store   # CAJ at demo size, random init
  kglfr train --config demo --out runs/demo-agw data.store=runs/demo/store method.name=agw   # another method
  kglfr train --config demo --out runs/fp32 data.store=runs/demo/store train.amp=off train.channels_last=false
  kglfr train --resume runs/sysu-kglfr                  # continue an interrupted run where it stopped
  torchrun --nproc_per_node 2 -m kglfr train --config sysu/kglfr --out runs/ddp data.store=stores/sysu

Presets: {presets}; or a YAML file of your own ('_base_: [sysu/caj, mine.yaml]' inherits from preset
names or files, in order). demo_caj and {sysu,regdb,llcm}/{agw,caj,kglfr,kglfr_caj} are the methods
(method.name); sysu/{baseline,kmlfr,random_erasing,kegfr,kglfr} the paper's Table 2. Every key of the
schema can be overridden as section.key=value (data.store, model.arch, model.pretrained, train.epochs,
train.seed, ...); an unknown key is an error naming the closest ones. The run folder keeps config.yaml
(resolved), checkpoint.pt (every epoch), metrics.jsonl, train.log, results/ and report.md.
--trial all: RUN/trial1..10, then RUN/report.md and RUN/RESULT.json, every trial's row and the mean ± std
over the ten models beside the paper's figures; a failed trial is recorded and the next one trains (exit
non-zero at the end, naming it); --resume RUN continues the unfinished trials and writes the table again.
Precision: train.amp=auto trains under bf16 autocast + channels_last on a GPU with bf16 (fp16 on older GPUs)
and in float32 on the CPU, one with native bf16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo) too: bf16
training cost the demo 2.6 Rank-1 points there (train.amp=bf16 asks for it); eval.amp=auto evaluates in float32
on every device. train.log, metrics.jsonl (type runtime) and summary.json
say which was chosen and why. On/off keys (train.channels_last, train.compile) take true/false too.
"""


def preset_names() -> list[str]:
    """The shipped presets, read from ``kglfr/configs`` (as ``kglfr.train.config.presets``, without torch)."""
    root = Path(__file__).resolve().parents[1] / "configs"
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def register(sub: argparse._SubParsersAction) -> None:
    examples = EXAMPLES.replace("{presets}", ", ".join(preset_names()))
    p = add_command(sub, "train", "Train KGLFR-Net or an ablation preset on a prepared store.", examples)
    p.add_argument("--config", default=None, metavar="PRESET_OR_FILE", help="preset name or YAML file")
    p.add_argument("--out", default=None, metavar="RUN", help="run folder to create")
    p.add_argument(
        "--resume", default=None, metavar="RUN", help="continue the run in this folder with its saved config"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: accept overrides that change the run; with --out: write into a folder that holds "
        "other files",
    )
    p.add_argument("--trial", default=None, metavar="T|all", help="RegDB/LLCM trial (sets data.trial); 'all': 1..10")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kglfr.train.runtime import end_distributed

    code = _train(args)
    end_distributed()  # under torchrun: every process reaches here once its training finished
    return code


def _train(args: argparse.Namespace) -> int:
    from kglfr.errors import KglfrError
    from kglfr.train import config as C
    from kglfr.train.trainer import check_resume, train
    from kglfr.train.trials import is_trials_folder

    if args.resume:
        if args.config or args.out:
            raise KglfrError("--resume RUN takes the run's saved config and folder; leave out --config and --out")
        folder = Path(args.resume)
        if is_trials_folder(folder):
            return resume_trials(folder, args)
        cfg = check_resume(folder, args.overrides, args.force)
        _print_tables(train(cfg, folder, resume=True, progress=not args.no_progress))
        return 0
    if not args.config or not args.out:
        raise KglfrError("give --config PRESET_OR_FILE and --out RUN (or --resume RUN); presets: "
                         + ", ".join(C.presets()))  # fmt: skip
    trials: list[int | None] = [None]
    if args.trial is not None:
        if args.trial == "all":
            return train_all_trials(Path(args.out), args)
        elif args.trial.isdigit() and int(args.trial) >= 1:
            trials = [int(args.trial)]
        else:
            raise KglfrError(f"--trial must be a trial number (1..10) or 'all', got {args.trial!r}")
    for t in trials:
        overrides = list(args.overrides) + ([] if t is None else [f"data.trial={t}"])
        cfg = C.load_config(args.config, overrides)
        _print_tables(train(cfg, Path(args.out), progress=not args.no_progress, force=args.force))
    return 0


def train_all_trials(folder: Path, args: argparse.Namespace) -> int:
    """--trial all: R/trial1..10, each trained on its own split, then the table across them."""
    from kglfr.train import config as C
    from kglfr.train.trainer import train
    from kglfr.train.trials import start_plan, trial_folder

    trials = list(range(1, REGDB_TRIALS + 1))
    start_plan(folder, C.load_config(args.config, args.overrides), trials)

    def job(t: int):
        cfg = C.load_config(args.config, [*args.overrides, f"data.trial={t}"])
        return lambda: train(cfg, trial_folder(folder, t), progress=not args.no_progress, force=args.force)

    return _run_trials(folder, [(t, job(t)) for t in trials])


def resume_trials(folder: Path, args: argparse.Namespace) -> int:
    """--resume of a --trial all folder: continue the unfinished trials, start the ones never started (or that
    failed before their first checkpoint), keep the finished ones; then the table."""
    from kglfr.train.trainer import CHECKPOINT, check_resume, train
    from kglfr.train.trials import read_plan, trial_config, trial_folder, trial_state

    plan, jobs = read_plan(folder), []
    progress = not args.no_progress
    for t in plan["trials"]:
        run = trial_folder(folder, t)
        if trial_state(folder, t, plan) == "finished":
            print(f"trial {t}: finished, kept ({run})")
        elif (run / CHECKPOINT).is_file():
            cfg = check_resume(run, args.overrides, args.force)
            jobs.append((t, lambda cfg=cfg, run=run: train(cfg, run, resume=True, progress=progress)))
        else:
            cfg = trial_config(folder, t, args.overrides, args.force)
            jobs.append((t, lambda cfg=cfg, run=run: train(cfg, run, progress=progress, force=args.force)))
    return _run_trials(folder, jobs)


def _run_trials(folder: Path, jobs: list) -> int:
    """Train the trials in turn; a failed one is recorded and the next one trains; Ctrl-C stops them all. The
    table across the finished trials is written (and printed) in every case; failures make the exit non-zero."""
    import traceback

    from kglfr.errors import KglfrError
    from kglfr.eval.aggregate import spans
    from kglfr.train.trainer import Interrupted
    from kglfr.train.trials import collect_trials, record_failure, trials_table, write_trials_report

    failed = []
    try:
        for t, job in jobs:
            print(f"== trial {t} ({folder / f'trial{t}'}) ==", flush=True)
            try:
                result = job()
            except Interrupted:
                raise
            except Exception as e:  # one trial's failure must not lose the others: record it, go on
                msg = str(e) if isinstance(e, KglfrError) else f"{type(e).__name__}: {e}"
                if not isinstance(e, KglfrError):
                    traceback.print_exc()
                print(f"kglfr train: trial {t} failed: {msg}", file=sys.stderr)
                record_failure(folder, t, msg)
                failed.append(t)
                continue
            record_failure(folder, t, None)
            _print_tables(result)
    finally:
        table = trials_table(*collect_trials(folder), folder)
        print(write_trials_report(folder, table))
        print(f"table across the trials written to {folder / 'report.md'} and {folder / 'RESULT.json'}")
    if failed:
        raise KglfrError(f"trial(s) {spans(failed)} of {folder} failed (see above); the table leaves them out. "
                         f"Fix the cause and continue with 'kglfr train --resume {folder}'")  # fmt: skip
    return 0


def _print_tables(result) -> None:
    if result.tables:
        print(result.tables)
