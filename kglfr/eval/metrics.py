"""CMC, mAP and mINP for a query x gallery ranking, vectorised over queries.

Pure functions on arrays. The definitions are those of the published VI-ReID evaluation code
(``eval_sysu`` / ``eval_regdb`` / ``eval_llcm`` in the AGW baseline and the LLCM authors' DEEN code):

- Each query ranks the gallery by ascending distance; equal distances keep gallery order (a stable
  sort). A *removal rule* drops some gallery images from a query's ranking before anything is
  counted (SYSU: a camera-3 query never sees camera-2 images; RegDB/LLCM: gallery images of the
  query's identity and camera).
- A query is *valid* when its identity is still in its ranking. Invalid queries count nowhere: CMC,
  mAP and mINP are all averaged over valid queries only (the published code divides the CMC sum by
  the number of valid queries, and skips invalid ones for AP and INP).
- CMC@k: the share of valid queries whose first true match is within the first k. With
  ``dedup_cmc`` (SYSU, LLCM) the ranking is first reduced to each gallery identity's first
  appearance, so a rank counts identities, not images. CMC@k for k larger than the gallery equals
  CMC at the gallery size (the published code cannot compute those ranks at all).
- AP: mean over the query's true matches of (matches so far / position). INP (Ye et al., "Deep
  learning for person re-identification", TPAMI 2021): number of true matches / position of the
  last one. mAP and mINP are the means over valid queries.

Implementation: every distance becomes a unique integer key (the distance's order-preserving bits,
then the gallery column), so one plain vectorised sort per block of queries gives the stable
ranking; removed images get the largest key and drop to the end. True matches are then found with
one comparison, and AP/INP/first rank come from their positions with bincounts. The identity-
deduplicated rank only needs the head of each ranking (up to the first match or ``max_rank``
identities). Memory is bounded by working on blocks of queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

RANKS = (1, 5, 10, 20)
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
DISTANCES = ("cosine", "euclidean")

# Working-set sizes: the similarity block (query rows x gallery, in the feature dtype) and the
# ranking chunk (about 40 bytes per query-gallery pair while it is being ranked).
SIM_BLOCK_BYTES = 512 * 2**20
RANK_CHUNK_ELEMENTS = 2**22
MAX_CHUNK_QUERIES = 4096

_NORM_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------------------------
# Removal rules: (q_pids, q_cams, g_pids, g_cams) -> bool mask (queries x gallery), True = removed.

RemovalRule = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], "np.ndarray | None"]


def remove_nothing(q_pids, q_cams, g_pids, g_cams) -> None:
    return None


def remove_sysu_cam3_cam2(q_pids, q_cams, g_pids, g_cams) -> np.ndarray:
    """SYSU-MM01: cameras 2 and 3 share a location, so a camera-3 query never sees camera-2 images.

    The rule removes every camera-2 image, of any identity, from a camera-3 query's ranking (as
    ``eval_sysu`` does; the dataset authors' MATLAB code labels camera 3 as camera 2 for the same
    effect)."""
    return (q_cams[:, None] == 3) & (g_cams[None, :] == 2)


def remove_same_identity_camera(q_pids, q_cams, g_pids, g_cams) -> np.ndarray:
    """Gallery images of the query's identity taken by the query's camera (``eval_llcm``,
    ``eval_regdb``; a no-op on RegDB, where query and gallery cameras always differ)."""
    return (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])


REMOVAL_RULES: dict[str, RemovalRule] = {
    "none": remove_nothing,
    "sysu-cam3-cam2": remove_sysu_cam3_cam2,
    "same-identity-camera": remove_same_identity_camera,
}


def removal_rule(name: str) -> RemovalRule:
    try:
        return REMOVAL_RULES[name]
    except KeyError:
        raise ValueError(f"unknown removal rule {name!r}; expected one of {sorted(REMOVAL_RULES)}") from None


# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class QueryStats:
    """Per-query results. Ranks are 1-based positions in the query's ranking after removal;
    for invalid queries (no true match left) ranks are 0 and ``ap``/``inp`` NaN."""

    valid: np.ndarray  # bool
    first_rank: np.ndarray  # position of the first true match, images counted
    cmc_rank: np.ndarray  # the rank CMC uses: first_rank, or identities counted with dedup
    ap: np.ndarray  # float64
    inp: np.ndarray  # float64

    @staticmethod
    def concat(parts: list[QueryStats]) -> QueryStats:
        if not parts:
            e = np.zeros(0)
            return QueryStats(e.astype(bool), e.astype(np.int64), e.astype(np.int64), e, e)
        return QueryStats(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("valid", "first_rank", "cmc_rank", "ap", "inp"))
        )


@dataclass(frozen=True)
class Metrics:
    """CMC curve (fractions, ``cmc[k-1]`` = CMC@k), mAP and mINP (fractions), and query counts."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_queries: int
    num_valid: int

    @property
    def num_without_positive(self) -> int:
        return self.num_queries - self.num_valid

    def rank(self, k: int) -> float:
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    def summary(self, ranks: tuple[int, ...] = RANKS) -> dict[str, float]:
        """Rank-k, mAP and mINP in percent, keyed ``rank1 .. rank20, mAP, mINP``."""
        out = {f"rank{k}": 100.0 * self.rank(k) for k in ranks}
        out["mAP"] = 100.0 * self.mAP
        out["mINP"] = 100.0 * self.mINP
        return out


class NoValidQueryError(ValueError):
    """No query has a true match in its gallery."""


def summarize(stats: QueryStats, max_rank: int = 20) -> Metrics:
    """Average per-query results the way the published code does (over valid queries only)."""
    valid = stats.valid
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise NoValidQueryError(f"none of the {len(valid)} queries has a gallery image of its identity")
    ranks = stats.cmc_rank[valid]
    hist = np.bincount(np.minimum(ranks, max_rank + 1), minlength=max_rank + 2)[1 : max_rank + 1]
    cmc = np.cumsum(hist) / num_valid
    return Metrics(
        cmc=cmc,
        mAP=float(np.mean(stats.ap[valid])),
        mINP=float(np.mean(stats.inp[valid])),
        num_queries=len(valid),
        num_valid=num_valid,
    )


# ----------------------------------------------------------------------------------------------
# Distances


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length. Rows already of unit length (within 1e-5) are returned as they
    are, bit for bit, so features a model has normalised give exactly the similarities the
    published code computes from them."""
    x = np.asarray(x)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    if x.size and np.all(np.abs(norms - 1.0) <= _NORM_TOLERANCE):
        return x
    return (x / np.maximum(norms, 1e-12)[:, None]).astype(x.dtype, copy=False)


def _feature_dtype(*arrays: np.ndarray) -> np.dtype:
    return np.result_type(np.float32, *(a.dtype for a in arrays))


def prepare_features(query: np.ndarray, gallery: np.ndarray, distance: str):
    """Query and gallery features as the distance needs them: contiguous, one float dtype (at
    least float32), L2-normalised for the cosine distance."""
    dtype = _feature_dtype(query, gallery)
    q, g = prepare(query, distance, dtype), prepare(gallery, distance, dtype)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {q.shape} and {g.shape}")
    return q, g


def prepare(x: np.ndarray, distance: str, dtype=None) -> np.ndarray:
    """One feature matrix as :func:`prepare_features` makes it."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; expected one of {DISTANCES}")
    x = np.ascontiguousarray(x, dtype=dtype or _feature_dtype(np.asarray(x)))
    return l2_normalize(x) if distance == "cosine" and x.ndim == 2 else x


def distance_blocks(
    query: np.ndarray, gallery: np.ndarray, distance: str = "cosine", block_rows: int | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, D)`` with ``D`` the distances of ``query[rows]`` to every gallery image.

    Cosine: D = -<q, g> of L2-normalised features (the published code ranks by -q.g^T).
    Euclidean: squared Euclidean distance of the features as given (same ranking as Euclidean).
    ``query``/``gallery`` must come from :func:`prepare_features`. When one block holds every query
    the similarity is one ``np.matmul(query, gallery.T)``, the published code's exact call.
    """
    nq, ng = len(query), len(gallery)
    if block_rows is None:
        block_rows = max(1, SIM_BLOCK_BYTES // max(1, ng * query.dtype.itemsize))
    gt = gallery.T
    g2 = np.einsum("ij,ij->i", gallery, gallery) if distance == "euclidean" else None
    for start in range(0, nq, block_rows):
        rows = slice(start, min(nq, start + block_rows))
        sim = np.matmul(query[rows], gt)
        if distance == "cosine":
            np.negative(sim, out=sim)
        else:
            q = query[rows]
            sim *= -2
            sim += np.einsum("ij,ij->i", q, q)[:, None]
            sim += g2[None, :]
        yield rows, sim


# ----------------------------------------------------------------------------------------------
# The vectorised core

_INT64_MAX = np.iinfo(np.int64).max
_SENTINEL_PID = -2  # identity index of "no image" (removed or past the end); queries use -1 for "absent"


@dataclass(frozen=True)
class _Gallery:
    """Lookup tables built once per gallery: the identity index of every gallery column."""

    size: int
    pid_values: np.ndarray  # sorted distinct gallery identities
    pid_index: np.ndarray  # (G + 1,) int32 identity index per column; the extra column is the sentinel

    @staticmethod
    def build(g_pids: np.ndarray) -> _Gallery:
        g_pids = np.asarray(g_pids)
        values, index = np.unique(g_pids, return_inverse=True)
        ext = np.append(index.astype(np.int32), np.int32(_SENTINEL_PID))
        return _Gallery(len(g_pids), values, ext)

    def lookup(self, q_pids: np.ndarray) -> np.ndarray:
        """Identity index of each query pid in this gallery, -1 where the gallery lacks it."""
        q_pids = np.asarray(q_pids)
        if len(self.pid_values) == 0:
            return np.full(len(q_pids), -1, dtype=np.int32)
        k = np.searchsorted(self.pid_values, q_pids).clip(max=len(self.pid_values) - 1)
        return np.where(self.pid_values[k] == q_pids, k, -1).astype(np.int32)


def ranking_keys(dist: np.ndarray) -> np.ndarray:
    """Unique int64 sort keys of a float32 matrix, row by row: ascending keys = ascending
    distance, ties by ascending column (-0.0 and +0.0 are equal)."""
    key = np.ascontiguousarray(dist, dtype=np.float32).view(np.int32).astype(np.int64)
    neg = key >> 63  # -1 where the sign bit is set
    key ^= neg & 0x7FFFFFFF  # negative floats: larger magnitude -> smaller key
    key -= neg  # ... shifted up by one so that -0.0 and +0.0 share a key
    key <<= 32
    key |= np.arange(dist.shape[1], dtype=np.int64)
    return key


def _ranking(dist: np.ndarray, removed: np.ndarray | None) -> np.ndarray:
    """Gallery columns of each row in ranked order, removed images replaced by the sentinel ``G``
    and moved to the end. Ties keep gallery order.

    float32 distances: each entry becomes a unique int64 key (order-preserving bits of the
    distance, then the column), and a plain ``np.sort`` of the keys (vectorised in numpy) gives
    the stable order. Other dtypes: a stable argsort."""
    b, g = dist.shape
    cols = np.arange(g, dtype=np.int64)
    if dist.dtype == np.float32:
        key = ranking_keys(dist)
        if removed is not None:
            key[removed] = _INT64_MAX
        key.sort(axis=1)
        key &= 0xFFFFFFFF
        return np.minimum(key, g, out=key)
    d = dist.astype(np.float64, copy=True)
    if removed is not None:
        d[removed] = np.inf
    order = np.argsort(d, axis=1, kind="stable")
    if removed is not None:
        n_kept = g - removed.sum(1)
        order[cols[None, :] >= n_kept[:, None]] = g
    return order


def _dedup_ranks(ranked: np.ndarray, first: np.ndarray, valid: np.ndarray, max_rank: int) -> np.ndarray:
    """Identity-deduplicated rank (1-based) of each valid row's first true match, exact up to
    ``max_rank``; larger ranks are reported as ``max_rank + 1``.

    ``ranked`` holds the identity index at each ranked position and ``first`` the 0-based position
    of the first true match. Only a window at the head of each ranking is examined: identities whose
    first appearance lies in the window are counted, and the window grows (for the few rows that
    need it) until it reaches the first match or holds more than ``max_rank`` identities."""
    b, g = ranked.shape
    out = np.zeros(b, dtype=np.int64)
    todo = np.flatnonzero(valid)
    width = min(g, max(64, 4 * (max_rank + 1)))
    while len(todo):
        win = ranked[todo, :width].astype(np.int64)
        code = np.sort(win * width + np.arange(width), axis=1)
        pid, pos = np.divmod(code, width)
        new = np.ones_like(pid, dtype=bool)
        new[:, 1:] = pid[:, 1:] != pid[:, :-1]
        new &= pid != _SENTINEL_PID
        is_first = np.zeros_like(new)
        np.put_along_axis(is_first, pos, new, axis=1)
        f = first[todo]
        inside = f < width
        seen_before = np.cumsum(is_first, axis=1, dtype=np.int64) - is_first
        out[todo[inside]] = seen_before[inside, f[inside]] + 1
        many = ~inside & (is_first.sum(1) > max_rank)
        out[todo[many]] = max_rank + 1
        todo = todo[~inside & ~many]
        if width == g:  # a valid row's first match always lies inside the full ranking
            assert not len(todo)
            break
        width = min(g, 4 * width)
    return out


def _chunk_stats(
    dist: np.ndarray,
    q_index: np.ndarray,
    removed: np.ndarray | None,
    gallery: _Gallery,
    dedup_cmc: bool,
    max_rank: int,
) -> QueryStats:
    """Per-query results for one block of queries. ``dist`` (B x G) must be finite."""
    b, _ = dist.shape
    order = _ranking(dist, removed)
    ranked = gallery.pid_index[order]  # identity index at each ranked position (sentinel at the end)
    rows, pos = np.nonzero(ranked == q_index[:, None])  # true matches, in ranked order per row
    npos = np.bincount(rows, minlength=b)
    valid = npos > 0
    start = np.cumsum(npos) - npos
    hits = np.arange(len(rows)) - start[rows] + 1  # matches so far at each match
    ap = np.bincount(rows, weights=hits / (pos + 1.0), minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(valid, ap / npos, np.nan)
        first = np.zeros(b, dtype=np.int64)
        last = np.zeros(b, dtype=np.int64)
        first[valid] = pos[start[valid]] + 1
        last[valid] = pos[start[valid] + npos[valid] - 1] + 1
        inp = np.where(valid, npos / np.maximum(last, 1), np.nan)
    cmc_rank = _dedup_ranks(ranked, first - 1, valid, max_rank) if dedup_cmc else first
    return QueryStats(valid, first, cmc_rank, ap, inp)


def query_stats(
    dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray | None = None,
    g_cams: np.ndarray | None = None,
    *,
    rule: str = "none",
    dedup_cmc: bool = False,
    max_rank: int = 20,
    chunk_elements: int = RANK_CHUNK_ELEMENTS,
    _gallery: _Gallery | None = None,
) -> QueryStats:
    """Per-query results from a distance matrix (queries x gallery, smaller = more similar).

    With ``dedup_cmc`` the CMC rank is exact up to ``max_rank`` and ``max_rank + 1`` beyond."""
    dist = np.asarray(dist)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    if dist.ndim != 2 or dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(
            f"distance matrix {dist.shape} does not match {len(q_pids)} queries x {len(g_pids)} gallery images"
        )
    if dist.dtype != np.float32 and not (np.issubdtype(dist.dtype, np.floating) and dist.itemsize > 4):
        dist = dist.astype(np.float32 if dist.dtype == np.float16 else np.float64)
    nq, ng = dist.shape
    if ng == 0:
        raise ValueError("the gallery is empty")
    rule_fn = removal_rule(rule)
    if rule != "none" and (q_cams is None or g_cams is None):
        raise ValueError(f"removal rule {rule!r} needs query and gallery cameras")
    gallery = _gallery or _Gallery.build(g_pids)
    q_index = gallery.lookup(q_pids)
    step = max(1, min(MAX_CHUNK_QUERIES, chunk_elements // ng))
    parts = []
    for start in range(0, nq, step):
        rows = slice(start, min(nq, start + step))
        block = dist[rows]
        if not np.isfinite(block).all():
            raise ValueError("the distance matrix holds NaN or infinite values")
        removed = rule_fn(
            q_pids[rows],
            None if q_cams is None else np.asarray(q_cams)[rows],
            g_pids,
            None if g_cams is None else np.asarray(g_cams),
        )
        parts.append(_chunk_stats(block, q_index[rows], removed, gallery, dedup_cmc, max_rank))
    return QueryStats.concat(parts)


def evaluate(
    query: np.ndarray | None,
    gallery: np.ndarray | None,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray | None = None,
    g_cams: np.ndarray | None = None,
    *,
    distance: str = "cosine",
    rule: str = "none",
    dedup_cmc: bool = False,
    max_rank: int = 20,
    dist: np.ndarray | None = None,
    chunk_elements: int = RANK_CHUNK_ELEMENTS,
    block_rows: int | None = None,
) -> Metrics:
    """CMC/mAP/mINP of query features against gallery features (or of a given distance matrix).

    ``distance`` "cosine" ranks by cosine similarity of L2-normalised features, "euclidean" by
    Euclidean distance of the features as given. ``rule`` is a key of :data:`REMOVAL_RULES`.
    ``dedup_cmc`` counts CMC ranks in identities (SYSU, LLCM). With ``dist`` given the features
    are ignored (pass ``None``). Memory: one similarity block (at most ``SIM_BLOCK_BYTES`` or
    ``block_rows`` query rows) plus one ranking chunk (``chunk_elements`` query-gallery pairs,
    about 40 bytes each) at a time, besides the features.
    """
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    kw = dict(rule=rule, dedup_cmc=dedup_cmc, max_rank=max_rank, chunk_elements=chunk_elements)
    if dist is not None:
        return summarize(query_stats(dist, q_pids, g_pids, q_cams, g_cams, **kw), max_rank)
    q, g = prepare_features(query, gallery, distance)
    return evaluate_prepared(q, g, q_pids, g_pids, q_cams, g_cams, distance=distance, block_rows=block_rows, **kw)


def evaluate_prepared(
    query: np.ndarray,
    gallery: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray | None = None,
    g_cams: np.ndarray | None = None,
    *,
    distance: str = "cosine",
    rule: str = "none",
    dedup_cmc: bool = False,
    max_rank: int = 20,
    chunk_elements: int = RANK_CHUNK_ELEMENTS,
    block_rows: int | None = None,
) -> Metrics:
    """:func:`evaluate` for features already through :func:`prepare_features` (normalised once
    for many trials)."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    if len(query) != len(q_pids) or len(gallery) != len(g_pids):
        raise ValueError("features and identities differ in length")
    kw = dict(
        rule=rule,
        dedup_cmc=dedup_cmc,
        max_rank=max_rank,
        chunk_elements=chunk_elements,
        _gallery=_Gallery.build(g_pids),
    )
    parts = []
    for rows, block in distance_blocks(query, gallery, distance, block_rows):
        parts.append(
            query_stats(
                block,
                q_pids[rows],
                g_pids,
                None if q_cams is None else np.asarray(q_cams)[rows],
                g_cams,
                **kw,
            )
        )
    return summarize(QueryStats.concat(parts), max_rank)
