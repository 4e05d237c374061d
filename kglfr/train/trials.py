"""RegDB's ten trials in one folder: ``R/trial1`` .. ``R/trial10`` (one run, so one model, per trial split),
``R/trials.json`` (the plan: the resolved config and the failures met) and the table across the trials,
``R/RESULT.json`` and ``R/report.md``; returned or written, never printed."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from kglfr.errors import KglfrError
from kglfr.eval.aggregate import combine_trials, describe_trials
from kglfr.eval.metrics import METRIC_KEYS
from kglfr.eval.published import published
from kglfr.eval.report import COLUMN_NAMES, result_to_dict
from kglfr.io import write_atomic, write_json_atomic
from kglfr.train import config as C
from kglfr.train.run_folder import CHECKPOINT, CONFIG, TrainingError, is_run

log = logging.getLogger(__name__)

PLAN = "trials.json"
RESULT = "RESULT.json"
REPORT = "report.md"
# The KGLFR paper's RegDB figures (BN feature, mean over the ten trials), beside ours in the report.
PAPER = {p: {k: published("kglfr", p)[k] for k in ("rank1", "mAP")} for p in ("regdb-v2i", "regdb-i2v")}
PAPER_SOURCE = "KGLFR paper, RegDB, mean over 10 trials"


def trial_folder(folder: Path, trial: int) -> Path:
    return Path(folder) / f"trial{trial}"


def is_trials_folder(folder: Path) -> bool:
    """A folder of per-trial runs (``kglfr train --trial all``), not a run itself."""
    folder = Path(folder)
    if is_run(folder):
        return False
    return (folder / PLAN).is_file() or any((folder / f"trial{t}" / CONFIG).is_file() for t in range(1, 11))


def start_plan(folder: Path, cfg: DictConfig, trials: Sequence[int]) -> None:
    """Write ``folder/trials.json`` before the first trial trains; a folder that already holds a run or
    a plan is refused (continue it with ``--resume``)."""
    folder = Path(folder)
    if is_run(folder) or is_trials_folder(folder):
        raise TrainingError(f"{folder} already holds a run; continue it with 'kglfr train --resume {folder}' "
                            "or choose another --out")  # fmt: skip
    check_store_trials(cfg, trials)
    write_json_atomic(folder / PLAN, {"config": C.to_dict(cfg), "trials": list(trials), "failed": {}}, indent=2)


def check_store_trials(cfg: DictConfig, trials: Sequence[int]) -> None:
    """Refuse one model per trial on a store without those trial splits (SYSU-MM01 has one train/test
    split; its ten trials are gallery draws of one evaluation), before anything trains."""
    from kglfr.data.store import Store

    C.require(cfg, "data.store")
    store = Store.open(cfg.data.store, check_sources=False)
    missing = [t for t in trials if t not in store.trials]
    if missing:
        raise TrainingError(
            f"--trial all trains one model per trial split, but store {store.path} ({store.dataset}) has trial "
            f"split(s) {', '.join(map(str, store.trials))} only; train once without --trial all (the evaluation "
            "already averages the protocol's gallery draws), or use a RegDB store, which has 10 trial splits"
        )


def read_plan(folder: Path) -> dict:
    """The plan of a trials folder; without ``trials.json`` (an older folder): trials 1..10, no config."""
    path = Path(folder) / PLAN
    if not path.is_file():
        return {"config": None, "trials": list(range(1, 11)), "failed": {}}
    try:
        plan = json.loads(path.read_text())
        return {"config": plan.get("config"), "trials": [int(t) for t in plan["trials"]],
                "failed": dict(plan.get("failed", {}))}  # fmt: skip
    except (ValueError, KeyError, TypeError) as e:
        raise KglfrError(f"{path} is not a trials plan ({e}); remove it to treat the folder as trials 1..10") from None


def record_failure(folder: Path, trial: int, message: str | None) -> None:
    """Remember (or, with ``None``, forget) that ``trial`` failed, in ``folder/trials.json``."""
    plan = read_plan(folder)
    if message is None and str(trial) not in plan["failed"]:
        return
    if message is None:
        plan["failed"].pop(str(trial))
    else:
        plan["failed"][str(trial)] = message
    write_json_atomic(Path(folder) / PLAN, plan, indent=2)


def trial_config(folder: Path, trial: int, overrides: Sequence[str], force: bool) -> DictConfig:
    """The config of a trial that has no checkpoint yet: the plan's, with ``data.trial`` set; overrides that
    change the plan are refused unless ``force`` (as ``--resume`` does)."""
    plan = read_plan(folder)
    if plan["config"] is None:
        raise TrainingError(f"{folder} has no {PLAN}, so trial {trial}, never started, has no config; "
                            f"train it with 'kglfr train --config PRESET --out {trial_folder(folder, trial)} "
                            f"--trial {trial}'")  # fmt: skip
    saved = C.config_from_dict(plan["config"], str(Path(folder) / PLAN))
    changed = C.config_from_dict(C.deep_merge(C.to_dict(saved), C.parse_overrides(list(overrides))), "override")
    keys = C.diff(C.to_dict(saved), C.to_dict(changed))
    if keys and not force:
        raise TrainingError(f"--resume {folder}: the override(s) would change the run ({', '.join(keys)}); "
                            "pass --force to resume with them anyway")  # fmt: skip
    return C.config_from_dict(C.deep_merge(C.to_dict(changed), {"data": {"trial": int(trial)}}), "override")


def finished_results(run: Path) -> dict[str, dict[str, dict]] | None:
    """The final results of a run folder (protocol -> feature -> result dict), or None unless it finished:
    its ``summary.json`` reports the config's last epoch and its ``results/`` files exist."""
    try:
        summary = json.loads((run / "summary.json").read_text())
        import yaml

        epochs = int(yaml.safe_load((run / CONFIG).read_text())["train"]["epochs"])
        if int(summary["epoch"]) != epochs or not summary["protocols"]:
            return None
        return {p: {k: json.loads((run / "results" / f"{p}_{k}.json").read_text()) for k in by if k in ("bn", "pool")}
                for p, by in summary["protocols"].items()}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def trial_state(folder: Path, trial: int, plan: dict) -> str:
    """``finished``, ``failed: REASON``, ``unfinished`` (a checkpoint to resume) or ``not started``."""
    run = trial_folder(folder, trial)
    if finished_results(run) is not None:
        return "finished"
    if str(trial) in plan["failed"]:
        return f"failed: {plan['failed'][str(trial)]}"
    return "unfinished" if (run / CHECKPOINT).is_file() else "not started"


def collect_trials(folder: Path) -> tuple[dict[int, dict], dict[int, str], list[int]]:
    """The finished trials' results (trial -> protocol -> feature -> result), the others' reasons, and the
    trials planned."""
    plan = read_plan(folder)
    results, missing = {}, {}
    for t in plan["trials"]:
        found = finished_results(trial_folder(folder, t))
        if found is None:
            missing[t] = trial_state(folder, t, plan)
        else:
            results[t] = found
    return results, missing, plan["trials"]


def evaluate_trials(folder: Path, store: str | None = None, device: str = "cpu", flip: bool = False,
                    progress: bool = False) -> tuple[dict[int, dict], dict[int, str], list[int]]:  # fmt: skip
    """Like :func:`collect_trials`, from the saved checkpoints: each finished trial's model scored on its own
    trial's test split of ``store`` (default: the store it was trained on)."""
    from kglfr.data.store import Store
    from kglfr.eval.model_eval import check_protocols, evaluate_model
    from kglfr.train.checkpoint import load_model

    plan = read_plan(folder)
    results, missing = {}, {}
    for t in plan["trials"]:
        ckpt = trial_folder(folder, t) / CHECKPOINT
        if not ckpt.is_file():
            missing[t] = trial_state(folder, t, plan)
            continue
        model, data = load_model(ckpt, device)
        cfg, epoch = data.get("config", {}), int(data.get("epoch", 0))
        epochs = int(cfg.get("train", {}).get("epochs", epoch))
        if epoch < epochs or data.get("step", 0):
            failed = plan["failed"].get(str(t))
            missing[t] = f"failed: {failed}" if failed else f"unfinished (epoch {epoch} of {epochs})"
            continue
        st = Store.open(store or cfg["data"]["store"])
        trial = int(cfg.get("data", {}).get("trial") or t)
        ev = evaluate_model(model, st, check_protocols(st.dataset, None), trial=trial, device=device, flip=flip,
                            size=tuple(data.get("input_size", st.size)), progress=progress)  # fmt: skip
        results[trial] = {p: {k: {**result_to_dict(r), "feature": k, "epoch": epoch} for k, r in by.items()}
                          for p, by in ev.results.items()}  # fmt: skip
    return results, missing, plan["trials"]


def trials_table(results: dict[int, dict], missing: dict[int, str], expected: Sequence[int], folder: Path) -> dict:
    """The ``RESULT.json`` payload: per protocol and feature one ``kglfr evaluate`` result over the finished
    trials (one row each, mean and standard deviation), which trials it covers and why the others are left out."""
    used = sorted(results)
    combined: dict[str, dict[str, dict]] = {}
    for t in used:
        for p, by in results[t].items():
            for k in by:
                combined.setdefault(p, {}).setdefault(k, [])
    for p, by in combined.items():
        for k in by:
            by[k] = combine_trials([results[t][p][k] for t in used if k in results[t].get(p, {})])
    return {"folder": str(folder), "expected_trials": list(expected), "trial_ids": used,
            "missing": {str(t): why for t, why in sorted(missing.items())},
            "trials": describe_trials(used, expected, missing), "complete": not missing,
            "paper": {"source": PAPER_SOURCE, "feature": "bn", **PAPER}, "results": combined}  # fmt: skip


def format_trials_report(table: dict) -> str:
    """``report.md``: per protocol and feature, a row per trial, the mean ± std and (BN) the paper's figures."""
    lines = [f"# {Path(table['folder']).name}: RegDB, one model per trial", "", table["trials"], ""]
    cols = [COLUMN_NAMES[k] for k in METRIC_KEYS]
    for p, by in table["results"].items():
        for kind, r in by.items():
            lines += [f"## {r['title']} [{p}], {'BN' if kind == 'bn' else 'pooled'} feature", "",
                      "| trial | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 1) + "|"]  # fmt: skip
            for t, row in zip(r["trial_ids"], r["trials"], strict=True):
                lines.append(f"| {t} | " + " | ".join(f"{row[k]:.2f}" for k in METRIC_KEYS) + " |")
            cells = " | ".join(f"{r['mean'][k]:.2f} ± {r['std'][k]:.2f}" for k in METRIC_KEYS)
            lines.append(f"| mean ± std ({r['num_trials']} trials) | {cells} |")
            if kind == "bn" and p in PAPER:
                lines.append("| KGLFR paper | " + " | ".join(f"{PAPER[p][k]:.2f}" if k in PAPER[p] else "-"
                                                           for k in METRIC_KEYS) + " |")  # fmt: skip
            lines.append("")
    if not table["results"]:
        lines += ["No trial has finished: nothing to average.", ""]
    lines.append("Standard deviation over the trials' models (n - 1). BN: the BatchNorm-neck feature (the headline, "
                 f"as the paper reports); pooled: the GeM feature before it. Paper: {PAPER_SOURCE}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_trials_report(out: Path, table: dict) -> str:
    """Write ``out/RESULT.json`` and ``out/report.md``; returns the report's text."""
    text = format_trials_report(table)
    write_json_atomic(Path(out) / RESULT, table, indent=2)
    write_atomic(Path(out) / REPORT, lambda f: f.write(text))
    return text
