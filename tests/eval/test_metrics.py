"""CMC / mAP / mINP against a straightforward per-query implementation, and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from kglfr.eval.metrics import (
    METRIC_KEYS,
    NoValidQueryError,
    evaluate,
    query_stats,
    ranking_keys,
)

# ----------------------------------------------------------------------------------------------
# The reference: one query at a time, straight from the definitions.


def _removed(rule, q_pid, q_cam, g_pids, g_cams):
    if rule == "sysu-cam3-cam2":
        return (q_cam == 3) & (g_cams == 2)
    if rule == "same-identity-camera":
        return (g_pids == q_pid) & (g_cams == q_cam)
    return np.zeros(len(g_pids), dtype=bool)


def reference(dist, q_pids, g_pids, q_cams, g_cams, rule="none", dedup=False, max_rank=20):
    """CMC (fractions, ranks 1..max_rank), mAP and mINP the slow way."""
    ranks, aps, inps = [], [], []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind="stable")  # ties: gallery order
        keep = ~_removed(rule, q_pids[i], q_cams[i], g_pids, g_cams)[order]
        ranked = g_pids[order][keep]
        hits = np.flatnonzero(ranked == q_pids[i])
        if len(hits) == 0:
            continue  # no true match: counts nowhere
        aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))
        inps.append(len(hits) / (hits[-1] + 1))
        if dedup:
            seen = []
            for p in ranked:
                if p not in seen:
                    seen.append(p)
            ranks.append(seen.index(q_pids[i]) + 1)
        else:
            ranks.append(hits[0] + 1)
    if not ranks:
        return None  # no query has a true match
    ranks = np.array(ranks)
    cmc = np.array([np.mean(ranks <= k) for k in range(1, max_rank + 1)])
    return cmc, float(np.mean(aps)), float(np.mean(inps))


def assert_same(m, ref, tol=1e-12):
    cmc, mAP, mINP = ref
    np.testing.assert_allclose(m.cmc, cmc, rtol=0, atol=tol)
    assert m.mAP == pytest.approx(mAP, abs=tol)
    assert m.mINP == pytest.approx(mINP, abs=tol)


def random_case(rng, ties: bool):
    nq, ng, nid = int(rng.integers(1, 40)), int(rng.integers(1, 50)), int(rng.integers(1, 12))
    q_pids = rng.integers(0, nid + 3, nq)  # some identities absent from the gallery
    g_pids = rng.integers(0, nid, ng)
    q_cams = rng.integers(1, 7, nq)
    g_cams = rng.integers(1, 7, ng)
    if ties:
        dist = rng.integers(0, 3, (nq, ng)).astype(np.float32)
    else:
        dist = rng.standard_normal((nq, ng)).astype(np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("rule", ["none", "sysu-cam3-cam2", "same-identity-camera"])
@pytest.mark.parametrize("dedup", [False, True])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_per_query_reference(rule, dedup, ties, dtype):
    rng = np.random.default_rng(hash((rule, dedup, ties, str(dtype))) % 2**32)
    checked = 0
    for _ in range(40):
        dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, ties)
        dist = dist.astype(dtype)
        ref = reference(dist, q_pids, g_pids, q_cams, g_cams, rule, dedup)
        if ref is None:
            with pytest.raises(NoValidQueryError):
                evaluate(None, None, q_pids, g_pids, q_cams, g_cams, dist=dist, rule=rule, dedup_cmc=dedup)
            continue
        chunk = int(rng.integers(1, 300))  # several query chunks per call
        m = evaluate(
            None, None, q_pids, g_pids, q_cams, g_cams, dist=dist, rule=rule, dedup_cmc=dedup, chunk_elements=chunk
        )
        assert_same(m, ref)
        assert m.num_queries == len(q_pids)
        checked += 1
    assert checked > 20


def test_large_gallery_dedup_beyond_the_window():
    """Many duplicates of other identities before the first true match: the deduplicated rank
    must still be exact (the implementation widens its look-ahead window)."""
    rng = np.random.default_rng(3)
    ng = 3000
    g_pids = rng.integers(0, 8, ng)
    g_pids[:2500] = rng.integers(0, 3, 2500)  # the best-ranked 2500 are identities 0-2 only
    dist = np.tile(np.arange(ng, dtype=np.float32), (6, 1)) + rng.random((6, ng)).astype(np.float32) * 0.1
    q_pids = np.array([5, 6, 7, 1, 0, 4])
    cams = np.ones(6), np.ones(ng)
    for dedup in (True, False):
        m = evaluate(None, None, q_pids, g_pids, *cams, dist=dist, dedup_cmc=dedup)
        assert_same(m, reference(dist, q_pids, g_pids, *cams, dedup=dedup))


def test_features_equal_distance_matrix():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((30, 16)).astype(np.float32)
    g = rng.standard_normal((45, 16)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 5, 30), rng.integers(0, 5, 45)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    cos = evaluate(q, g, q_pids, g_pids)
    assert_same(cos, reference(-(qn @ gn.T), q_pids, g_pids, np.ones(30), np.ones(45)), tol=1e-9)
    # Euclidean on the raw features, and Euclidean on normalised features ranks like cosine
    d2 = ((q[:, None] - g[None]) ** 2).sum(-1)
    assert_same(
        evaluate(q, g, q_pids, g_pids, distance="euclidean"),
        reference(d2, q_pids, g_pids, np.ones(30), np.ones(45)),
        tol=1e-9,
    )
    eu = evaluate(qn, gn, q_pids, g_pids, distance="euclidean")
    assert_same(eu, (cos.cmc, cos.mAP, cos.mINP), tol=1e-9)


def test_blocks_and_chunks_do_not_change_results():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((50, 8))
    g = rng.standard_normal((70, 8))
    q_pids, g_pids = rng.integers(0, 6, 50), rng.integers(0, 6, 70)
    q_cams, g_cams = rng.integers(1, 7, 50), rng.integers(1, 7, 70)
    kw = dict(rule="sysu-cam3-cam2", dedup_cmc=True)
    whole = evaluate(q, g, q_pids, g_pids, q_cams, g_cams, **kw)
    small = evaluate(q, g, q_pids, g_pids, q_cams, g_cams, block_rows=7, chunk_elements=100, **kw)
    assert_same(small, (whole.cmc, whole.mAP, whole.mINP), tol=0)


# ----------------------------------------------------------------------------------------------
# Hand-worked examples


def rank_as(order, n):
    """A distance row that ranks gallery columns in ``order``."""
    row = np.empty(n, np.float32)
    row[list(order)] = np.arange(n)
    return row


def test_hand_worked_ap_inp_cmc():
    g_pids = np.array([1, 2, 1, 3, 1])
    dist = np.stack(
        [
            rank_as([1, 0, 3, 2, 4], 5),  # query of identity 1: ranked ids 2, 1, 3, 1, 1 -> hits at 2, 4, 5
            rank_as([3, 0, 1, 2, 4], 5),  # identity 3: first place
            rank_as([0, 1, 2, 3, 4], 5),  # identity 9: not in the gallery, counts nowhere
        ]
    )
    q_pids = np.array([1, 3, 9])
    m = evaluate(None, None, q_pids, g_pids, dist=dist)
    ap1 = (1 / 2 + 2 / 4 + 3 / 5) / 3  # precision at each hit: 1/2, 2/4, 3/5
    assert m.mAP == pytest.approx((ap1 + 1.0) / 2)
    assert m.mINP == pytest.approx((3 / 5 + 1.0) / 2)  # INP = hits / position of the last hit
    assert m.num_valid == 2 and m.num_queries == 3 and m.num_without_positive == 1
    assert m.rank(1) == pytest.approx(0.5)  # divided by the 2 valid queries, not 3
    assert m.rank(2) == pytest.approx(1.0)
    s = m.summary()
    assert list(s) == list(METRIC_KEYS)
    assert s["rank1"] == pytest.approx(50.0) and s["rank20"] == pytest.approx(100.0)


def test_hand_worked_identity_deduplicated_cmc():
    # ranked identities 5, 5, 7, 5, 2: the query (identity 2) is 5th by images, 3rd by identities
    g_pids = np.array([5, 5, 7, 5, 2])
    dist = rank_as([0, 1, 2, 3, 4], 5)[None]
    q = np.array([2])
    raw = evaluate(None, None, q, g_pids, dist=dist)
    dedup = evaluate(None, None, q, g_pids, dist=dist, dedup_cmc=True)
    assert [raw.rank(k) for k in (1, 3, 4, 5)] == [0, 0, 0, 1]
    assert [dedup.rank(k) for k in (1, 2, 3)] == [0, 0, 1]
    assert raw.mAP == dedup.mAP == pytest.approx(1 / 5)  # mAP/mINP use the raw ranking
    assert raw.mINP == dedup.mINP == pytest.approx(1 / 5)


def test_hand_worked_sysu_camera_rule():
    # gallery: (identity 1, cam 2), (identity 4, cam 1), (identity 1, cam 1), ranked in this order
    g_pids, g_cams = np.array([1, 4, 1]), np.array([2, 1, 1])
    dist = np.stack([rank_as([0, 1, 2], 3)] * 2)
    q_pids, q_cams = np.array([1, 1]), np.array([3, 6])
    cam3 = evaluate(None, None, q_pids[:1], g_pids, q_cams[:1], g_cams, dist=dist[:1], rule="sysu-cam3-cam2")
    # camera 3: the camera-2 image is gone, so the ranking is identity 4, identity 1
    assert cam3.rank(1) == 0 and cam3.rank(2) == 1
    assert cam3.mAP == pytest.approx(1 / 2) and cam3.mINP == pytest.approx(1 / 2)
    cam6 = evaluate(None, None, q_pids[1:], g_pids, q_cams[1:], g_cams, dist=dist[1:], rule="sysu-cam3-cam2")
    assert cam6.rank(1) == 1
    assert cam6.mAP == pytest.approx((1 + 2 / 3) / 2) and cam6.mINP == pytest.approx(2 / 3)
    # a camera-3 query whose only match is on camera 2 has no match left: it counts nowhere
    only = evaluate(
        None,
        None,
        np.array([1, 4]),
        np.array([1, 4]),
        np.array([3, 3]),
        np.array([2, 1]),
        dist=np.zeros((2, 2), np.float32),
        rule="sysu-cam3-cam2",
    )
    assert only.num_valid == 1 and only.rank(1) == 1 and only.mAP == 1


def test_hand_worked_same_identity_camera_rule():
    # query (identity 1, camera 4); gallery ranked: (1, cam 4) removed, (2, cam 5), (1, cam 5)
    m = evaluate(
        None,
        None,
        np.array([1]),
        np.array([1, 2, 1]),
        np.array([4]),
        np.array([4, 5, 5]),
        dist=rank_as([0, 1, 2], 3)[None],
        rule="same-identity-camera",
    )
    assert m.rank(1) == 0 and m.rank(2) == 1 and m.mAP == pytest.approx(1 / 2)


def test_ties_keep_gallery_order():
    # equal distances: gallery order decides, so identity 1 is at positions 2 and 3
    m = evaluate(None, None, np.array([1]), np.array([2, 1, 1]), dist=np.zeros((1, 3), np.float32))
    assert m.rank(1) == 0 and m.rank(2) == 1
    assert m.mAP == pytest.approx((1 / 2 + 2 / 3) / 2) and m.mINP == pytest.approx(2 / 3)
    # -0.0 and +0.0 are equal distances too
    m = evaluate(None, None, np.array([1]), np.array([2, 1]), dist=np.array([[0.0, -0.0]], np.float32))
    assert m.rank(1) == 0


def test_gallery_smaller_than_max_rank():
    # 3 gallery images: ranks beyond 3 repeat CMC@3
    m = evaluate(
        None, None, np.array([1, 2]), np.array([3, 2, 1]), dist=np.stack([rank_as([0, 1, 2], 3), rank_as([0, 1, 2], 3)])
    )
    np.testing.assert_allclose(m.cmc[:3], [0, 0.5, 1.0])
    assert m.rank(5) == m.rank(20) == 1.0 and len(m.cmc) == 20


def test_ranking_keys_order_like_a_stable_sort():
    row = np.array([[0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, -np.inf, np.inf, 3e38, -3e38, 1.0]], np.float32)
    assert (np.argsort(ranking_keys(row), axis=1) == np.argsort(row, axis=1, kind="stable")).all()


def test_bad_inputs():
    with pytest.raises(NoValidQueryError):
        evaluate(None, None, np.array([7]), np.array([1, 2]), dist=np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(None, None, np.array([1]), np.array([1, 2]), dist=np.array([[np.nan, 0]], np.float32))
    with pytest.raises(ValueError, match="does not match"):
        query_stats(np.zeros((2, 3)), np.array([1]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="needs query and gallery cameras"):
        query_stats(np.zeros((1, 1)), np.array([1]), np.array([1]), rule="sysu-cam3-cam2")
    with pytest.raises(ValueError, match="unknown distance"):
        evaluate(np.ones((1, 2)), np.ones((1, 2)), [1], [1], distance="manhattan")
