"""Failure analysis: the queries with the lowest average precision and their top-10 (``kglfr evaluate --worst``).

The ranking is the protocol's first trial (seed 0 gallery draw), cosine distance, with the protocol's
removal rule applied (SYSU: no camera-2 images for a camera-3 query), exactly as its metrics see it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Ranking:
    """Trial 0 of a protocol on a feature set: who queries, who is the gallery, every query's top gallery images.

    ``q``, ``g``: indices into the feature set; ``top``: Q x K positions into ``g`` (best first, removed
    images last); ``sim``: their cosine similarities; ``ap``, ``first_rank``, ``valid``: per query, as the
    protocol's metrics compute them."""

    protocol: str
    q: np.ndarray
    g: np.ndarray
    top: np.ndarray
    sim: np.ndarray
    ap: np.ndarray
    first_rank: np.ndarray
    valid: np.ndarray

    def worst(self, n: int) -> list[int]:
        """The ``n`` valid queries (positions into ``q``) with the lowest AP, ties in query order."""
        order = np.argsort(np.where(self.valid, self.ap, np.inf), kind="stable")
        return [int(i) for i in order if self.valid[i]][:n]


def rank_queries(fs, protocol: str, top: int = 10) -> Ranking:
    """Rank trial 0's gallery for every query of ``protocol`` on the feature set ``fs``
    (:class:`~kglfr.eval.features.FeatureSet`, L2-normalised features)."""
    from kglfr.eval.metrics import REMOVAL_RULES, query_stats
    from kglfr.eval.protocols import PROTOCOLS, trial_sets

    p = PROTOCOLS[protocol]
    q, g = trial_sets(p, fs.pids, fs.cams, fs.paths, fs.modalities, trial=0)
    sim = fs.feats[q] @ fs.feats[g].T
    dist = 1.0 - sim
    stats = query_stats(dist, fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g], rule=p.rule, dedup_cmc=p.dedup_cmc)
    removed = REMOVAL_RULES[p.rule](fs.pids[q], fs.cams[q], fs.pids[g], fs.cams[g])
    if removed is not None:
        dist = np.where(removed, np.inf, dist)
    ranks = np.argsort(dist, axis=1, kind="stable")[:, : min(top, len(g))]
    return Ranking(protocol, q, g, ranks, np.take_along_axis(sim, ranks, axis=1), stats.ap, stats.first_rank,
                   stats.valid)  # fmt: skip


def worst_queries(model, store, protocol: str, n: int, out_dir, which: str = "bn", top: int = 10,
                  flip: bool = False, batch_size: int = 64, features=None) -> tuple[Path, Path]:  # fmt: skip
    """Draw the ``n`` lowest-AP queries of ``protocol`` on ``store``'s test split; returns (png, json).
    ``features``: the split's :class:`~kglfr.eval.features.FeatureSet` when already extracted."""
    from kglfr.eval.extract import store_feature_set
    from kglfr.viz.retrieval import retrieval_grid

    fs = store_feature_set(model, store, "test", which, flip, batch_size) if features is None else features
    pids, paths = fs.pids, fs.paths
    r = rank_queries(fs, protocol, top)
    q, g, order = r.q, r.g, r.worst(n)
    ranks, top = r.top[order], r.top.shape[1]
    index = {rel: i for i, rel in enumerate(store.relpaths)}
    qi = [index[paths[q[i]]] for i in order]
    gi = [[index[paths[g[j]]] for j in row] for row in ranks]
    correct = np.asarray([[pids[g[j]] == pids[q[i]] for j in row] for i, row in zip(order, ranks)], dtype=object)
    scores = r.sim[order]
    out_dir = Path(out_dir).expanduser()
    png = retrieval_grid(
        list(store.read_batch(qi)),
        [list(store.read_batch(row)) for row in gi],
        out_dir / f"worst_{protocol}.png",
        correct=correct,
        scores=scores,
        query_labels=[f"AP {100 * r.ap[i]:.1f}" for i in order],
        title=f"{protocol}: the {len(order)} queries with the lowest AP (trial 0), top {top}",
    )
    rows = [{"query": str(paths[q[i]]), "pid": int(pids[q[i]]), "ap": float(r.ap[i]),
             "first_match_rank": int(r.first_rank[i]),
             "top": [{"path": str(paths[g[j]]), "pid": int(pids[g[j]]), "similarity": float(s)}
                     for j, s in zip(row, srow)]}
            for i, row, srow in zip(order, ranks, scores)]  # fmt: skip
    js = out_dir / f"worst_{protocol}.json"
    js.write_text(json.dumps({"protocol": protocol, "trial": 0, "feature": which, "queries": rows}, indent=2))
    return png, js
