"""What the report page shows, computed from arrays and result dicts: pure functions, no files."""

from __future__ import annotations

import numpy as np

from kglfr.eval.metrics import METRIC_KEYS

METRIC_NAMES = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "rank20": "Rank-20", "mAP": "mAP",
                "mINP": "mINP"}  # fmt: skip


def results_table(result: dict, published: dict | None = None) -> dict:
    """The page's table of one result dict (``kglfr.eval.report.result_to_dict``, the ``results/*.json``
    format): a row per trial, the mean and the std, and the published figures where given (percent)."""
    rows = [{"trial": tid, "values": [t[k] for k in METRIC_KEYS]} for tid, t in zip(result["trial_ids"],
                                                                                  result["trials"])]  # fmt: skip
    return {
        "columns": [METRIC_NAMES[k] for k in METRIC_KEYS],
        "keys": list(METRIC_KEYS),
        "rows": rows,
        "mean": [result["mean"][k] for k in METRIC_KEYS],
        "std": [result["std"][k] for k in METRIC_KEYS],
        "published": None if not published else [published.get(k) for k in METRIC_KEYS],
    }


def mean_cmc(cmcs: list[np.ndarray]) -> np.ndarray:
    """The mean CMC curve (percent) over trials, cut to the shortest trial's length."""
    n = min(len(c) for c in cmcs)
    return 100.0 * np.mean([np.asarray(c[:n], dtype=np.float64) for c in cmcs], axis=0)


def camera_pair_rank1(sim: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray,
                      g_cams: np.ndarray, removed: np.ndarray | None = None) -> dict:  # fmt: skip
    """Rank-1 (percent) of each (query camera, gallery camera) pair: the gallery cut to one camera, over the
    queries of the other camera whose identity that camera holds (after the protocol's ``removed`` mask,
    Q x G, True = never ranked). Returns ``{"query_cams", "gallery_cams", "cells": {(cq, cg): (rank1, n)}}``;
    a pair with no such query is left out."""
    sim = np.asarray(sim, dtype=np.float64)
    match = q_pids[:, None] == g_pids[None, :]
    allowed = np.ones_like(match) if removed is None else ~removed
    qcs, gcs = sorted(set(q_cams.tolist())), sorted(set(g_cams.tolist()))
    cells = {}
    for cg in gcs:
        cols = allowed & (g_cams == cg)[None, :]
        masked = np.where(cols, sim, -np.inf)
        best = np.argmax(masked, axis=1)
        hit = match[np.arange(len(q_pids)), best]
        has = (match & cols).any(1)
        for cq in qcs:
            rows = has & (q_cams == cq)
            if rows.any():
                cells[(int(cq), int(cg))] = (100.0 * float(hit[rows].mean()), int(rows.sum()))
    return {"query_cams": [int(c) for c in qcs], "gallery_cams": [int(c) for c in gcs], "cells": cells}


def query_rows(ranking, fs, thumb_of: dict[int, int]) -> list[list]:
    """One compact row per query of a :class:`~kglfr.inference.failures.Ranking` for the page's query list:
    ``[thumb, path, pid, cam, AP %, first match rank, [top thumbs], "1001..." (correct), [similarities]]``;
    ``thumb_of`` maps feature-set indices to thumbnail numbers. AP is None for a query without a match."""
    q, g = ranking.q, ranking.g
    rows = []
    for i, qi in enumerate(q):
        top = g[ranking.top[i]]
        hits = "".join("1" if fs.pids[j] == fs.pids[qi] else "0" for j in top)
        ap = round(100.0 * float(ranking.ap[i]), 2) if ranking.valid[i] else None
        rows.append([thumb_of[int(qi)], str(fs.paths[qi]), int(fs.pids[qi]), int(fs.cams[qi]), ap,
                     int(ranking.first_rank[i]), [thumb_of[int(j)] for j in top], hits,
                     [round(float(s), 3) for s in ranking.sim[i]]])  # fmt: skip
    return rows


def used_images(rankings: list) -> np.ndarray:
    """The feature-set indices a page's query lists show (queries and their top images), sorted."""
    parts = [np.concatenate([r.q, r.g[r.top].ravel()]) for r in rankings]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def format_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"
