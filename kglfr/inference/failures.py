"""Failure analysis: the queries with the lowest average precision and their top-10 (``kglfr evaluate --worst``).

The ranking is the protocol's first trial (seed 0 gallery draw), cosine distance, with the protocol's
removal rule applied (SYSU: no camera-2 images for a camera-3 query), exactly as its metrics see it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def worst_queries(model, store, protocol: str, n: int, out_dir, which: str = "bn", top: int = 10,
                  flip: bool = False, batch_size: int = 64, features=None) -> tuple[Path, Path]:  # fmt: skip
    """Draw the ``n`` lowest-AP queries of ``protocol`` on ``store``'s test split; returns (png, json).
    ``features``: the split's :class:`~kglfr.eval.features.FeatureSet` when already extracted."""
    from kglfr.eval.extract import store_feature_set
    from kglfr.eval.metrics import REMOVAL_RULES, query_stats
    from kglfr.eval.protocols import PROTOCOLS, trial_sets
    from kglfr.viz.retrieval import retrieval_grid

    p = PROTOCOLS[protocol]
    fs = store_feature_set(model, store, "test", which, flip, batch_size) if features is None else features
    feats, pids, cams, paths, mods = fs.feats, fs.pids, fs.cams, fs.paths, fs.modalities
    q, g = trial_sets(p, pids, cams, paths, mods, trial=0)
    sim = feats[q] @ feats[g].T
    dist = 1.0 - sim
    stats = query_stats(dist, pids[q], pids[g], cams[q], cams[g], rule=p.rule, dedup_cmc=p.dedup_cmc)
    removed = REMOVAL_RULES[p.rule](pids[q], cams[q], pids[g], cams[g])
    if removed is not None:
        dist = np.where(removed, np.inf, dist)
    order = [i for i in np.argsort(np.where(stats.valid, stats.ap, np.inf), kind="stable") if stats.valid[i]][:n]
    top = min(top, len(g))
    ranks = np.argsort(dist[order], axis=1, kind="stable")[:, :top]
    index = {rel: i for i, rel in enumerate(store.relpaths)}
    qi = [index[paths[q[i]]] for i in order]
    gi = [[index[paths[g[j]]] for j in r] for r in ranks]
    correct = np.asarray([[pids[g[j]] == pids[q[i]] for j in r] for i, r in zip(order, ranks)], dtype=object)
    scores = np.asarray([[sim[i, j] for j in r] for i, r in zip(order, ranks)])
    out_dir = Path(out_dir).expanduser()
    png = retrieval_grid(
        list(store.read_batch(qi)),
        [list(store.read_batch(r)) for r in gi],
        out_dir / f"worst_{protocol}.png",
        correct=correct,
        scores=scores,
        query_labels=[f"AP {100 * stats.ap[i]:.1f}" for i in order],
        title=f"{protocol}: the {len(order)} queries with the lowest AP (trial 0), top {top}",
    )
    rows = [{"query": str(paths[q[i]]), "pid": int(pids[q[i]]), "ap": float(stats.ap[i]),
             "first_match_rank": int(stats.first_rank[i]),
             "top": [{"path": str(paths[g[j]]), "pid": int(pids[g[j]]), "similarity": float(sim[i, j])} for j in r]}
            for i, r in zip(order, ranks)]  # fmt: skip
    js = out_dir / f"worst_{protocol}.json"
    js.write_text(json.dumps({"protocol": protocol, "trial": 0, "feature": which, "queries": rows}, indent=2))
    return png, js
