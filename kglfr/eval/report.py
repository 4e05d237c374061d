"""Evaluation results as a JSON-ready dict, a JSON file, and a console table in the papers' format."""

from __future__ import annotations

import os
from pathlib import Path

from kglfr import __version__
from kglfr.eval.metrics import METRIC_KEYS
from kglfr.eval.protocols import ProtocolResult
from kglfr.io import write_json_atomic

COLUMN_NAMES = {
    "rank1": "Rank-1",
    "rank5": "Rank-5",
    "rank10": "Rank-10",
    "rank20": "Rank-20",
    "mAP": "mAP",
    "mINP": "mINP",
}


def result_to_dict(result: ProtocolResult) -> dict:
    """``{"protocol", "trials": [{rank1..mINP}], "mean", "std", ...}``, metrics in percent.

    Besides the metrics: the protocol's title, shot setting, the gallery draw (``seeded``:
    ``random.seed(trial)``; ``official``: SYSU-MM01's ``rand_perm_cam.mat``, with its path and sha256;
    null when nothing is drawn), trial ids (gallery seeds, official runs, or RegDB trial numbers),
    whether re-ranking was used (and its parameters), the distance, and per trial the query and
    gallery sizes, the queries without a true match, and the features file (path and
    sha256); and the kglfr version."""
    rerank = result.rerank
    return {
        "protocol": result.protocol.name,
        "title": result.protocol.title,
        "shot": result.shot_name,
        "gallery_draw": result.gallery_draw,
        "gallery_perm": None
        if result.gallery_perm is None
        else {"path": result.gallery_perm[0], "sha256": result.gallery_perm[1]},
        "num_trials": len(result.trials),
        "trial_ids": [t.trial for t in result.trials],
        "reranking": rerank is not None,
        "rerank_params": None if rerank is None else {"k1": rerank.k1, "k2": rerank.k2, "lambda": rerank.lambda_value},
        "distance": result.distance,
        "trials": [t.metrics.summary() for t in result.trials],
        "mean": result.mean(),
        "std": result.std(),
        "num_queries": [t.num_query for t in result.trials],
        "num_gallery": [t.num_gallery for t in result.trials],
        "queries_without_positive": [t.metrics.num_without_positive for t in result.trials],
        "features": [t.source for t in result.trials],
        "features_sha256": [t.sha256 for t in result.trials],
        "kglfr_version": __version__,
        "note": result.protocol.note or None,
    }


def write_result(result: ProtocolResult, path: str | os.PathLike, amp: str | None = None,
                 made_by: dict | None = None) -> Path:  # fmt: skip
    """Write :func:`result_to_dict` as JSON, atomically; ``amp``: the autocast dtype the features were
    computed in (``off``, ``bfloat16``, ``float16``), recorded when given; ``made_by``: what made the
    result (the checkpoint's path and sha256, the store), recorded when given."""
    extra = ({} if amp is None else {"amp": amp}) | ({} if made_by is None else {"made_by": made_by})
    return write_json_atomic(path, result_to_dict(result) | extra, indent=2)


def header_line(result: ProtocolResult) -> str:
    rerank = result.rerank
    rr = "off" if rerank is None else f"on (k1={rerank.k1}, k2={rerank.k2}, lambda={rerank.lambda_value})"
    n = len(result.trials)
    parts = [
        f"{result.protocol.title} [{result.protocol.name}]",
        result.shot_name,
        f"{n} trial{'s' if n != 1 else ''}",
        f"re-ranking: {rr}",
        f"distance: {result.distance}",
    ]
    if result.gallery_draw is not None:
        parts.insert(2, f"{'gallery' if result.protocol.gallery.drawn else 'probe'} draw: {result.gallery_draw}")
    line = " | ".join(parts)
    if result.protocol.note:
        line += f"\n({result.protocol.note})"
    return line


def format_table(result: ProtocolResult) -> str:
    """One row per trial, then mean ± standard deviation; values in percent, two decimals."""
    width = 13
    head = f"{'trial':>6}  " + "".join(f"{COLUMN_NAMES[k]:>{width}}" for k in METRIC_KEYS)
    lines = [header_line(result), head, "-" * len(head)]
    for t in result.trials:
        s = t.metrics.summary()
        lines.append(f"{t.trial!s:>6}  " + "".join(f"{s[k]:>{width}.2f}" for k in METRIC_KEYS))
    mean, std = result.mean(), result.std()
    lines.append("-" * len(head))
    cells = "".join(f"{f'{mean[k]:.2f}±{std[k]:.2f}':>{width}}" for k in METRIC_KEYS)
    lines.append(f"{'mean':>6}  " + cells)
    return "\n".join(lines)
