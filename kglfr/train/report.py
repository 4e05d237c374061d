"""The report of a finished run: ``results/``, ``summary.json``, ``report.md``; returned, never printed."""

from __future__ import annotations

from pathlib import Path

from kglfr.data.store import Store
from kglfr.eval.model_eval import Evaluation
from kglfr.eval.report import format_table, result_to_dict
from kglfr.io import write_atomic, write_json_atomic
from kglfr.model.weights import WeightsInfo

NOTE = ("BN: the BatchNorm-neck feature (the headline, as AGW and KGLFR report); pooled: the GeM feature "
        "before it. Mean ± standard deviation over the protocol's trials. Re-ranking off.")  # fmt: skip


def best_on_test_set(evals: list[tuple[int, Evaluation]]) -> dict:
    """Per protocol, the evaluated epoch with the best BN Rank-1. Chosen on the test set, so optimistic: a
    labelled extra (``eval.report_epoch=best``), never the headline, which is the last epoch."""
    out = {}
    for p in evals[-1][1].results:
        epoch, ev = max(evals, key=lambda e: e[1].results[p]["bn"].mean()["rank1"])
        m = ev.results[p]["bn"].mean()
        out[p] = {
            "epoch": epoch,
            "rank1": m["rank1"],
            "mAP": m["mAP"],
            "note": "epoch picked on the test set: optimistic, not comparable to the last-epoch figures",
        }
    return out


def format_tables(ev: Evaluation | None) -> str:
    """The per-trial tables of each protocol and feature, as text (for the CLI to print)."""
    if ev is None:
        return ""
    return "\n\n".join(f"{kind} feature\n{format_table(r)}" for by in ev.results.values() for kind, r in by.items())


def _row(p: str, kind: str, m: dict, s: dict, chance: float) -> str:
    return (f"| {p} | {'BN' if kind == 'bn' else 'pooled'} | {m['rank1']:.2f} ± {s['rank1']:.2f} | "
            f"{m['rank10']:.2f} | {m['mAP']:.2f} ± {s['mAP']:.2f} | {m['mINP']:.2f} | {chance:.2f} |")  # fmt: skip


def write_report(folder: Path, ev: Evaluation | None, cfg, store: Store, epochs: int, weights: dict | str = "unknown",
                 amp: str = "off", eval_amp: str | None = None) -> dict:  # fmt: skip
    """``RUN/results/<protocol>_<feature>.json`` (the ``kglfr evaluate`` format), ``RUN/summary.json`` and
    ``RUN/report.md`` (a table in the paper's format; BN feature first, the headline); returns the summary.
    ``weights`` is the initial weights' record (``WeightsInfo.to_dict()``), ``amp`` the training's autocast
    dtype, ``eval_amp`` the evaluation's (default: ``amp``)."""
    eval_amp = amp if eval_amp is None else eval_amp
    summary: dict = {"run": str(folder), "dataset": store.dataset, "epoch": epochs, "feature_headline": "bn",
                     "report_epoch": "last", "seed": int(cfg.train.seed), "weights": weights, "amp": amp,
                     "eval_amp": eval_amp, "protocols": {}}  # fmt: skip
    if ev is None:
        write_json_atomic(folder / "summary.json", summary, indent=2)
        return summary
    lines = [f"# {folder.name}: {store.dataset}, epoch {epochs} (the last)", "",
             "| protocol | feature | Rank-1 | Rank-10 | mAP | mINP | chance Rank-1 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for p, by in ev.results.items():
        summary["protocols"][p] = {"chance_rank1": ev.chance_rank1[p],
                                   "gallery_draw": next(iter(by.values())).gallery_draw}  # fmt: skip
        for kind, r in by.items():
            result = {**result_to_dict(r), "feature": kind, "epoch": epochs, "amp": eval_amp}
            write_json_atomic(folder / "results" / f"{p}_{kind}.json", result, indent=2)
            m, s = r.mean(), r.std()
            summary["protocols"][p][kind] = {"mean": m, "std": s}
            lines.append(_row(p, kind, m, s, ev.chance_rank1[p]))
    lines += ["", NOTE, "", f"Initial weights: {describe_weights(weights)}. "
              f"Mixed precision: training {amp}, evaluation {eval_amp}."]  # fmt: skip
    write_atomic(folder / "report.md", lambda f: f.write("\n".join(lines) + "\n"))
    write_json_atomic(folder / "summary.json", summary, indent=2)
    return summary


def describe_weights(weights: dict | str) -> str:
    """``none (random initialisation)``, ``FILE (sha256 HEX)`` or ``unknown`` (a checkpoint older than the record)."""
    return WeightsInfo(**weights).describe() if isinstance(weights, dict) else str(weights)
