"""Protocols against transcriptions of the published query/gallery construction and evaluation loops."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kglfr.eval.features import check_features
from kglfr.eval.protocols import (
    LLCM_INFRARED,
    PROTOCOLS,
    ProtocolError,
    draw,
    evaluate_protocol,
    image_modalities,
    trial_sets,
)
from kglfr.eval.rerank import RerankConfig, RerankError, k_reciprocal_rerank

# ----------------------------------------------------------------------------------------------
# Synthetic test sets with the datasets' path layouts (file order scrambled on purpose)


def _features(rng, pids, dim=24, noise=1.2):
    centres = rng.standard_normal((int(pids.max()) + 1, dim))
    return (centres[pids] + noise * rng.standard_normal((len(pids), dim))).astype(np.float32)


def sysu_like(seed=0, n_ids=10, min_images=1, max_images=14, skip=0.15):
    rng = np.random.default_rng(seed)
    rows = []
    for pid in sorted(rng.choice(np.arange(1, 500), n_ids, replace=False).tolist()):
        for cam in range(1, 7):
            if rng.random() < skip:
                continue
            names = rng.choice(np.arange(1, 80), int(rng.integers(min_images, max_images + 1)), replace=False)
            rows += [(pid, cam, f"cam{cam}/{pid:04d}/{n:04d}.jpg") for n in names]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    pids, cams, paths = (np.array(c) for c in zip(*rows))
    return check_features(_features(rng, pids), pids, cams, paths, source="sysu-like")


def llcm_like(seed=0, n_ids=8):
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, n_ids + 1):
        for top, tag, cams in (("vis", "vis", range(1, 10)), ("nir", "nir", range(1, 10))):
            for cam in cams:
                if rng.random() < 0.3:
                    continue
                for n in rng.choice(np.arange(1, 50), int(rng.integers(1, 6)), replace=False):
                    rows.append((pid, cam, f"{top}/{pid:04d}/{pid:04d}_c{cam:02d}_s{n:03d}_{tag}.jpg"))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    pids, cams, paths = (np.array(c) for c in zip(*rows))
    return check_features(_features(rng, pids), pids, cams, paths, source="llcm-like")


def regdb_like(seed=0, n_ids=12, per_id=5):
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n_ids):
        for cam, top in ((1, "Visible"), (2, "Thermal")):
            rows += [(pid, cam, f"{top}/{pid}/img_{k}.bmp") for k in range(per_id)]
    pids, cams, paths = (np.array(c) for c in zip(*rows))
    return check_features(_features(rng, pids), pids, cams, paths, source="regdb-like")


# ----------------------------------------------------------------------------------------------
# Transcriptions of the published code (our own words, their logic)


def published_listing(fs, folders):
    """What os.listdir gives per folder 'camC/PPPP' (unsorted), as the published code sees it."""
    listing = {}
    for p in fs.paths:
        folder, name = p.rsplit("/", 1)
        listing.setdefault(folder, []).append(name)
    return {f: listing[f] for f in folders if f in listing}


def published_draw(listing, ids, cam_folders, trial, shots):
    """process_gallery_sysu / process_gallery_llcm: seed, then ids ascending, cameras in order."""
    state = random.getstate()
    random.seed(trial)
    files = []
    try:
        for pid in sorted(f"{x:04d}" for x in ids):
            for cam in cam_folders:
                folder = f"{cam}/{pid}"
                if folder in listing:
                    new_files = sorted(folder + "/" + f for f in listing[folder])
                    if shots == 1:
                        files.append(random.choice(new_files))
                    else:
                        files.extend(random.sample(new_files, shots))
    finally:
        random.setstate(state)
    return files


def published_eval(dist, q_pids, g_pids, q_cams, g_cams, kind):
    """eval_sysu / eval_llcm / eval_regdb, one query at a time (argsort made stable)."""
    indices = np.argsort(dist, axis=1, kind="stable")
    all_cmc, aps, inps, valid = [], [], [], 0
    for i in range(len(q_pids)):
        order = indices[i]
        if kind == "sysu":
            remove = (q_cams[i] == 3) & (g_cams[order] == 2)
        else:
            remove = (g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])
        keep = ~remove
        labels = g_pids[order][keep]
        if kind != "regdb":  # identity-deduplicated CMC, appended for every query
            _, first = np.unique(labels, return_index=True)
            cmc = (labels[np.sort(first)] == q_pids[i]).astype(int).cumsum()
            all_cmc.append(np.pad(cmc, (0, 20), mode="edge")[:20] if len(cmc) else np.zeros(20))
        raw = (labels == q_pids[i]).astype(int)
        if not raw.any():
            continue
        cum = raw.cumsum()
        last = np.flatnonzero(raw).max()
        inps.append(cum[last] / (last + 1.0))
        if kind == "regdb":
            c = cum.copy()
            c[c > 1] = 1
            all_cmc.append(np.pad(c, (0, 20), mode="edge")[:20])
        valid += 1
        aps.append((cum / np.arange(1, len(raw) + 1) * raw).sum() / raw.sum())
    cmc = np.asarray(all_cmc, dtype=np.float64).sum(0) / valid
    return cmc, np.mean(aps), np.mean(inps)


def check_trial(metrics, ref):
    cmc, mAP, mINP = ref
    np.testing.assert_allclose(metrics.cmc, cmc, atol=1e-12)
    assert metrics.mAP == pytest.approx(mAP, abs=1e-12)
    assert metrics.mINP == pytest.approx(mINP, abs=1e-12)


def index_of(fs):
    return {p: i for i, p in enumerate(fs.paths)}


# ----------------------------------------------------------------------------------------------
# SYSU-MM01


@pytest.mark.parametrize("name,cams", [("sysu-all", (1, 2, 4, 5)), ("sysu-indoor", (1, 2))])
def test_sysu_gallery_draw_is_the_published_one(name, cams):
    fs = sysu_like(seed=1)
    folders = [f"cam{c}/{p:04d}" for p in np.unique(fs.pids) for c in range(1, 7)]
    listing = published_listing(fs, folders)
    modality = image_modalities("sysu", fs.cams, fs.paths)
    for trial in range(4):
        q, g = trial_sets(PROTOCOLS[name], fs.pids, fs.cams, fs.paths, modality, trial)
        expected = published_draw(listing, np.unique(fs.pids), [f"cam{c}" for c in cams], trial, 1)
        assert fs.paths[g].tolist() == expected
        # queries: every infrared image, by identity, camera, then file name
        ir = [(p, c, s) for p, c, s in zip(fs.pids, fs.cams, fs.paths) if c in (3, 6)]
        assert fs.paths[q].tolist() == [s for _, _, s in sorted(ir)]


def test_sysu_multi_shot_draw_is_the_published_one():
    fs = sysu_like(seed=2, min_images=10, max_images=20)
    folders = [f"cam{c}/{p:04d}" for p in np.unique(fs.pids) for c in range(1, 7)]
    listing = published_listing(fs, folders)
    modality = image_modalities("sysu", fs.cams, fs.paths)
    for trial in range(3):
        _, g = trial_sets(PROTOCOLS["sysu-all"], fs.pids, fs.cams, fs.paths, modality, trial, shots=10)
        assert fs.paths[g].tolist() == published_draw(
            listing, np.unique(fs.pids), ["cam1", "cam2", "cam4", "cam5"], trial, 10
        )


def test_multi_shot_takes_every_image_of_a_small_folder():
    paths = np.array([f"cam1/0001/{n:04d}.jpg" for n in range(4)])
    got = draw(np.arange(4), np.ones(4, int), np.ones(4, int), paths, trial=3, shots=10)
    assert sorted(got.tolist()) == [0, 1, 2, 3]
    assert paths[got].tolist() == random.Random(3).sample(sorted(paths.tolist()), 4)


@pytest.mark.parametrize("name", ["sysu-all", "sysu-indoor"])
@pytest.mark.parametrize("shots", [1, 10])
def test_sysu_protocol_matches_published_evaluation(name, shots):
    fs = sysu_like(seed=3, n_ids=12, min_images=10 if shots > 1 else 1, max_images=16)
    result = evaluate_protocol(fs, name, trials=3, shots=shots)
    assert [t.trial for t in result.trials] == [0, 1, 2]
    pos = index_of(fs)
    cams = ["cam1", "cam2"] if name == "sysu-indoor" else ["cam1", "cam2", "cam4", "cam5"]
    folders = [f"cam{c}/{p:04d}" for p in np.unique(fs.pids) for c in range(1, 7)]
    listing = published_listing(fs, folders)
    q = np.array(
        [pos[s] for s in sorted(fs.paths[np.isin(fs.cams, (3, 6))].tolist(), key=lambda s: (s.split("/")[1], s))]
    )
    for t in result.trials:
        g = np.array([pos[s] for s in published_draw(listing, np.unique(fs.pids), cams, t.trial, shots)])
        f = fs.feats / np.linalg.norm(fs.feats, axis=1, keepdims=True)
        dist = -np.matmul(f[q], f[g].T)
        check_trial(t.metrics, published_eval(dist, fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g], "sysu"))
        assert t.num_query == len(q) and t.num_gallery == len(g)


def test_sysu_camera_rule_is_applied():
    """Only camera-2 images of a camera-3 query's identity: that query counts nowhere."""
    rows = [
        (1, 3, "cam3/0001/0001.jpg"),
        (1, 2, "cam2/0001/0001.jpg"),
        (2, 6, "cam6/0002/0001.jpg"),
        (2, 1, "cam1/0002/0001.jpg"),
        (2, 2, "cam2/0002/0001.jpg"),
        (1, 4, "cam4/0001/0001.jpg"),
        (3, 5, "cam5/0003/0001.jpg"),
    ]
    pids, cams, paths = (np.array(c) for c in zip(*rows))
    feats = np.eye(7, dtype=np.float32)
    feats[0, 1] = 5  # the cam-3 query is closest to the cam-2 image, which it must not see
    r = evaluate_protocol(check_features(feats, pids, cams, paths), "sysu-indoor", trials=1)
    m = r.trials[0].metrics
    assert m.num_queries == 2 and m.num_valid == 1  # gallery cams 1, 2 only: identity 1 only on cam 2


# ----------------------------------------------------------------------------------------------
# LLCM and RegDB


def test_llcm_modalities_from_paths_and_array():
    fs = llcm_like()
    mod = image_modalities("llcm", fs.cams, fs.paths)
    assert (mod == np.char.startswith(fs.paths.astype(str), "nir/")).all()
    given = np.zeros(len(fs), int)
    assert (image_modalities("llcm", fs.cams, fs.paths, given) == 0).all()
    with pytest.raises(ProtocolError, match="modality"):
        image_modalities("llcm", fs.cams, np.array(["cam1/0001/x.jpg"] * len(fs)))


@pytest.mark.parametrize("name", ["llcm-i2v", "llcm-v2i"])
def test_llcm_protocol_matches_published_evaluation(name):
    fs = llcm_like(seed=4)
    result = evaluate_protocol(fs, name, trials=3)
    pos = index_of(fs)
    vis = [f"test_vis/cam{c}" for c in range(1, 10)]
    nir = [f"test_nir/cam{c}" for c in LLCM_INFRARED]
    # the published layout test_{vis,nir}/camC/PPPP holding the same file names
    listing = {}
    for p, c in zip(fs.paths, fs.cams):
        top, pid, fname = p.split("/")
        listing.setdefault(f"test_{top}/cam{c}/{pid}", []).append(fname)
    back = {
        f"test_{p.split('/')[0]}/cam{c}/{p.split('/')[1]}/{p.split('/')[2]}": pos[p] for p, c in zip(fs.paths, fs.cams)
    }
    ids = np.unique(fs.pids)

    def listed(folders):  # process_query_llcm: every image, ids ascending, cameras in order
        return np.array(
            [
                back[f"{d}/{pid}/{f}"]
                for pid in sorted(f"{x:04d}" for x in ids)
                for d in folders
                if f"{d}/{pid}" in listing
                for f in sorted(listing[f"{d}/{pid}"])
            ]
        )

    f = fs.feats / np.linalg.norm(fs.feats, axis=1, keepdims=True)
    for t in result.trials:
        if name == "llcm-i2v":  # test_mode [1, 2]: every NIR image queries the drawn VIS set
            q = listed(nir)
            g = np.array([back[s] for s in published_draw(listing, ids, vis, t.trial, 1)])
            dist = -np.matmul(f[q], f[g].T)
            ref = published_eval(dist, fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g], "llcm")
        else:  # test_mode [2, 1]: query = every VIS image, gallery = drawn NIR, evaluated swapped
            query = listed(vis)
            gall = np.array([back[s] for s in published_draw(listing, ids, nir, t.trial, 1)])
            dist = -np.matmul(f[gall], f[query].T)
            ref = published_eval(dist, fs.pids[gall], fs.pids[query], fs.cams[gall], fs.cams[query], "llcm")
            q, g = gall, query
        check_trial(t.metrics, ref)
        assert (t.num_query, t.num_gallery) == (len(q), len(g))
    assert not np.isin(3, fs.cams[listed(nir)])  # NIR camera 3 does not exist in LLCM's protocol


@pytest.mark.parametrize("name", ["regdb-v2i", "regdb-i2v"])
def test_regdb_protocol_matches_published_evaluation(name):
    files = [regdb_like(seed=s) for s in range(3)]
    result = evaluate_protocol(files, name)
    assert [t.trial for t in result.trials] == [1, 2, 3] and result.shots == 0
    for fs, t in zip(files, result.trials):
        qc, gc = (1, 2) if name == "regdb-v2i" else (2, 1)
        q, g = np.flatnonzero(fs.cams == qc), np.flatnonzero(fs.cams == gc)
        f = fs.feats / np.linalg.norm(fs.feats, axis=1, keepdims=True)
        ref = published_eval(-np.matmul(f[q], f[g].T), fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g], "regdb")
        check_trial(t.metrics, ref)


def test_mean_and_std_over_trials():
    result = evaluate_protocol(sysu_like(seed=5), "sysu-all", trials=4)
    table = np.array([[t.metrics.summary()[k] for k in result.mean()] for t in result.trials])
    assert list(result.mean().values()) == pytest.approx(table.mean(0).tolist())
    assert list(result.std().values()) == pytest.approx(table.std(0, ddof=1).tolist())


def test_protocol_errors():
    sysu = sysu_like(seed=6)
    with pytest.raises(ProtocolError, match="multi-shot"):
        evaluate_protocol(regdb_like(), "regdb-v2i", shots=10)
    with pytest.raises(ProtocolError, match="one features file"):
        evaluate_protocol([sysu, sysu], "sysu-all")
    with pytest.raises(ProtocolError, match="trials = 5"):
        evaluate_protocol([regdb_like(), regdb_like(seed=1)], "regdb-i2v", trials=5)
    with pytest.raises(ProtocolError, match="unknown protocol"):
        evaluate_protocol(sysu, "market")
    vis = ~np.isin(sysu.cams, (3, 6))
    vis_only = check_features(sysu.feats[vis], sysu.pids[vis], sysu.cams[vis], sysu.paths[vis])
    with pytest.raises(ProtocolError, match="infrared camera"):
        evaluate_protocol(vis_only, "sysu-all")


# ----------------------------------------------------------------------------------------------
# Re-ranking


def reference_rerank(qf, gf, k1=20, k2=6, lam=0.3):
    """The k-reciprocal algorithm one image at a time (float64)."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    nq, n = len(qf), len(qf) + len(gf)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d = (d / d.max(axis=0)).T
    rank = np.argsort(d, axis=1, kind="stable")
    v = np.zeros((n, n))
    half = int(np.around(k1 / 2))
    for i in range(n):
        fwd = rank[i, : k1 + 1]
        recip = fwd[(rank[fwd, : k1 + 1] == i).any(1)]
        grown = recip
        for c in recip:
            cf = rank[c, : half + 1]
            cr = cf[(rank[cf, : half + 1] == c).any(1)]
            if len(np.intersect1d(cr, recip)) > 2 / 3 * len(cr):
                grown = np.append(grown, cr)
        grown = np.unique(grown)
        w = np.exp(-d[i, grown])
        v[i, grown] = w / w.sum()
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.stack([1 - (m := np.minimum(v[i][None], v).sum(1)) / (2 - m) for i in range(nq)])
    return (jac * (1 - lam) + d[:nq] * lam)[:, nq:]


@pytest.mark.parametrize("nq,ng,k1,k2", [(25, 40, 20, 6), (6, 9, 4, 3), (30, 30, 7, 1)])
def test_rerank_matches_reference(nq, ng, k1, k2):
    rng = np.random.default_rng(nq)
    ids = rng.integers(0, 6, nq + ng)
    f = (rng.standard_normal((6, 12))[ids] + 0.8 * rng.standard_normal((nq + ng, 12))).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    got = k_reciprocal_rerank(f[:nq], f[nq:], k1=k1, k2=k2)
    np.testing.assert_allclose(got, reference_rerank(f[:nq], f[nq:], k1, k2), atol=2e-6)


def test_rerank_in_protocol_and_limits():
    fs = sysu_like(seed=7)
    plain = evaluate_protocol(fs, "sysu-all", trials=2)
    rr = evaluate_protocol(fs, "sysu-all", trials=2, rerank=RerankConfig())
    assert plain.rerank is None and rr.rerank == RerankConfig()
    assert rr.trials[0].metrics.mAP != plain.trials[0].metrics.mAP
    with pytest.raises(RerankError, match="limit"):
        k_reciprocal_rerank(np.ones((3, 2)), np.ones((3, 2)), max_images=5)
