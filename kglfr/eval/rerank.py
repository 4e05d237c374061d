"""k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, "Re-ranking person re-identification with
k-reciprocal encoding", CVPR 2017), computed on one trial's queries and gallery together.

It follows the algorithm of the paper's reference implementation: squared Euclidean distances of
all N = Q + G images (features L2-normalised first for the cosine distance), each row divided by
its maximum; k1-reciprocal neighbour sets, each enlarged by the round(k1/2)-reciprocal sets of its
members that share more than 2/3 of their elements with it; Gaussian-weighted encodings V; local
query expansion over the k2 nearest neighbours; Jaccard distance of the encodings; final distance
= (1 - lambda) * Jaccard + lambda * original. Everything is float32 (the reference stores V in
float16), and nearest-neighbour ties are broken by image order.

Memory is O(N^2): the N x N distance and encoding matrices in float32, about 12 N^2 bytes at the
peak (N = 4,104 for SYSU all-search single-shot: 200 MB; N = 20,000: 4.8 GB). Evaluations above
``MAX_IMAGES`` images are refused rather than run out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kglfr.errors import KglfrError
from kglfr.eval.metrics import prepare_features, ranking_keys

MAX_IMAGES = 20_000
_ROW_CHUNK = 1024
_PAIR_CHUNK = 2**24


class RerankError(KglfrError):
    """Re-ranking asked for where it cannot run."""


@dataclass(frozen=True)
class RerankConfig:
    """k-reciprocal re-ranking parameters (the paper's defaults)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


def k_reciprocal_rerank(
    query: np.ndarray,
    gallery: np.ndarray,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    distance: str = "cosine",
    max_images: int = MAX_IMAGES,
) -> np.ndarray:
    """Re-ranked query x gallery distances (float32, smaller = more similar)."""
    q, g = prepare_features(query, gallery, distance)
    n = len(q) + len(g)
    if n > max_images:
        raise RerankError(
            f"re-ranking {len(q)} queries with {len(g)} gallery images needs about "
            f"{12 * n * n / 2**30:.1f} GiB (it is O((queries + gallery)^2)); the limit is "
            f"{max_images} images in all; evaluate without re-ranking"
        )
    if not 0.0 <= lambda_value <= 1.0:
        raise RerankError(f"the re-ranking lambda must lie in [0, 1], got {lambda_value}")
    if k1 < 1 or k2 < 1:
        raise RerankError(f"re-ranking k1 and k2 must be 1 or more, got k1={k1}, k2={k2}")
    x = np.concatenate([q, g]).astype(np.float32, copy=False)
    original = normalized_distances(x)
    return rerank_distances(original, len(q), k1=k1, k2=k2, lambda_value=lambda_value)


def normalized_distances(x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of the rows of ``x``, each row divided by its maximum (the
    reference code divides each column by its maximum and transposes)."""
    sq = np.einsum("ij,ij->i", x, x)
    d = np.matmul(x, x.T)
    d *= -2
    d += sq[:, None]
    d += sq[None, :]
    np.maximum(d, 0, out=d)
    top = d.max(axis=0)
    top[top == 0] = 1  # all images identical: every distance stays 0
    return np.ascontiguousarray((d / top[None, :]).T)


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """The k nearest columns of every row, nearest first, ties by column."""
    n = len(dist)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, _ROW_CHUNK):
        keys = ranking_keys(dist[s : s + _ROW_CHUNK])
        part = np.partition(keys, k - 1, axis=1)[:, :k] if k < keys.shape[1] else keys
        part.sort(axis=1)
        out[s : s + _ROW_CHUNK] = part & 0xFFFFFFFF
    return out


def _reciprocal(nn: np.ndarray) -> np.ndarray:
    """``mask[i, m]``: image ``nn[i, m]`` has image ``i`` among its own neighbours in ``nn``."""
    n, k = nn.shape
    mask = np.empty((n, k), dtype=bool)
    for s in range(0, n, _ROW_CHUNK):
        rows = np.arange(s, min(n, s + _ROW_CHUNK))
        mask[rows] = (nn[nn[rows]] == rows[:, None, None]).any(-1)
    return mask


def _encodings(dist: np.ndarray, nn: np.ndarray, k1: int) -> np.ndarray:
    """V: each row's expanded k-reciprocal set, weighted by exp(-distance), summing to 1."""
    n = len(dist)
    half = int(np.around(k1 / 2))
    near = nn[:, : k1 + 1]
    recip = _reciprocal(near)
    near_h = nn[:, : half + 1]
    recip_h = _reciprocal(near_h)
    members = np.where(recip, near, -1)  # R(i, k1), padded with -1
    members_h = np.where(recip_h, near_h, -1)  # R(j, k1/2), padded with -1
    size_h = recip_h.sum(1)
    v = np.zeros((n, n), dtype=np.float32)
    for s in range(0, n, _ROW_CHUNK):
        rows = np.arange(s, min(n, s + _ROW_CHUNK))
        mem = members[rows]  # (c, k1+1)
        cand = members_h[mem.clip(min=0)]  # (c, k1+1, half+1): each member's half-size set
        cand = np.where(mem[:, :, None] >= 0, cand, -1)
        inter = ((cand[:, :, :, None] == mem[:, None, None, :]) & (cand[:, :, :, None] >= 0)).any(-1).sum(-1)
        ok = (mem >= 0) & (inter > 2.0 / 3.0 * size_h[mem.clip(min=0)])
        grown = np.concatenate([mem, np.where(ok[:, :, None], cand, -1).reshape(len(rows), -1)], axis=1)
        grown.sort(axis=1)
        keep = grown >= 0
        keep[:, 1:] &= grown[:, 1:] != grown[:, :-1]
        r, c = np.nonzero(keep)
        cols = grown[r, c]
        w = np.exp(-dist[rows[r], cols]).astype(np.float32)
        total = np.bincount(r, weights=w, minlength=len(rows))
        v[rows[r], cols] = w / total[r]
    return v


def _query_expansion(v: np.ndarray, nn: np.ndarray, k2: int) -> np.ndarray:
    """Each row of V replaced by the mean of the rows of its k2 nearest neighbours."""
    if k2 == 1:
        return v
    out = np.empty_like(v)
    for s in range(0, len(v), _ROW_CHUNK // 4):
        rows = slice(s, s + _ROW_CHUNK // 4)
        out[rows] = v[nn[rows, :k2]].mean(axis=1)
    return out


def _jaccard(v: np.ndarray, num_query: int) -> np.ndarray:
    """Jaccard distance 1 - m / (2 - m), m = sum_j min(V[i, j], V[k, j]), of every query row i to
    every row k, visiting only the nonzero entries of V."""
    n = len(v)
    col_idx, row_idx = np.nonzero(v.T)  # by column, then row
    col_val = v[row_idx, col_idx]
    col_start = np.concatenate([[0], np.cumsum(np.bincount(col_idx, minlength=n))])
    col_len = np.diff(col_start)
    qi, qj = np.nonzero(v[:num_query])
    qv = v[qi, qj]
    pairs = col_len[qj]
    per_query = np.bincount(qi, weights=pairs, minlength=num_query).astype(np.int64)
    group = (np.cumsum(per_query) - per_query) // _PAIR_CHUNK  # about _PAIR_CHUNK pairs per group
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1, [num_query]])
    entry_start = np.searchsorted(qi, bounds)
    out = np.empty((num_query, n), dtype=np.float32)
    for a, b, ea, eb in zip(bounds[:-1], bounds[1:], entry_start[:-1], entry_start[1:]):
        if a == b:
            continue
        ei, ej, ev, ep = qi[ea:eb], qj[ea:eb], qv[ea:eb], pairs[ea:eb]
        rep = np.repeat(np.arange(len(ei)), ep)
        offset = np.arange(len(rep)) - np.repeat(np.cumsum(ep) - ep, ep)
        at = col_start[ej[rep]] + offset
        m = np.minimum(ev[rep], col_val[at])
        m = np.bincount((ei[rep] - a) * n + row_idx[at], weights=m, minlength=(b - a) * n)
        m = m.reshape(b - a, n)
        out[a:b] = 1.0 - m / (2.0 - m)
    return out


def rerank_distances(
    original: np.ndarray, num_query: int, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Re-ranked distances from the row-normalised N x N distances of queries then gallery."""
    n = len(original)
    k1 = min(k1, n - 1)
    k2 = min(k2, n)
    nn = _nearest(original, max(k1 + 1, k2))
    v = _encodings(original, nn, k1)
    v = _query_expansion(v, nn, k2)
    jaccard = _jaccard(v, num_query)
    final = jaccard * (1 - lambda_value) + original[:num_query] * lambda_value
    return np.ascontiguousarray(final[:, num_query:], dtype=np.float32)
