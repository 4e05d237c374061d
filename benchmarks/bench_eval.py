"""Vectorised evaluation vs a per-query loop, on the same features; and a large-gallery run.

The reference is a straight port of the published per-query code (AGW ``eval_metrics.eval_sysu`` /
``eval_regdb`` with ``data_manager.process_gallery_sysu``'s draw and ``test.py``'s
``np.matmul(query_feat, gall_feat.T)``), written here in numpy. Its one change: the argsort is
stable (the published ``np.argsort`` default leaves ties in an arbitrary order; ours keeps gallery
order). Both sides start from the same features and include computing the similarities.

    python benchmarks/bench_eval.py            # SYSU all-search 10 trials, RegDB 1 trial
    python benchmarks/bench_eval.py --scale    # also 10,000 queries x 200,000 gallery, 2048-d
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import peak_rss_mib, record, timeit  # noqa: E402

from kglfr.eval import check_features, evaluate, evaluate_protocol  # noqa: E402

DIM = 2048
TOLERANCE = 1e-6


# ----------------------------------------------------------------------------------------------
# The per-query reference (port of the published code)


def ref_eval_sysu(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    pred_label = g_pids[indices]
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    new_all_cmc, all_ap, all_inp = [], [], []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        order = indices[q_idx]
        remove = (q_camid == 3) & (g_camids[order] == 2)
        keep = np.invert(remove)
        new_cmc = pred_label[q_idx][keep]
        new_index = np.unique(new_cmc, return_index=True)[1]
        new_cmc = [new_cmc[index] for index in sorted(new_index)]
        new_match = (new_cmc == q_pid).astype(np.int32)
        new_cmc = new_match.cumsum()
        new_all_cmc.append(new_cmc[:max_rank])
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        pos_max_idx = np.max(np.where(orig_cmc == 1))
        all_inp.append(cmc[pos_max_idx] / (pos_max_idx + 1.0))
        num_valid_q += 1.0
        num_rel = orig_cmc.sum()
        tmp_cmc = orig_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * orig_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    new_all_cmc = np.asarray(new_all_cmc).astype(np.float32).sum(0) / num_valid_q
    return new_all_cmc, np.mean(all_ap), np.mean(all_inp)


def ref_eval_regdb(distmat, q_pids, g_pids, max_rank=20):
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    num_valid_q = 0.0
    q_camids = np.ones(num_q).astype(np.int32)
    g_camids = 2 * np.ones(num_g).astype(np.int32)
    for q_idx in range(num_q):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        raw_cmc = matches[q_idx][keep]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        pos_max_idx = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[pos_max_idx] / (pos_max_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    all_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    return all_cmc, np.mean(all_ap), np.mean(all_inp)


def ref_gallery_sysu(fs, trial, cams=(1, 2, 4, 5)):
    """process_gallery_sysu over the feature file's paths (cam{c}/{pid:04d}/{name})."""
    folders: dict[str, list[str]] = {}
    for p in fs.paths:
        folder, name = p.rsplit("/", 1)
        folders.setdefault(folder, []).append(name)
    index = {p: i for i, p in enumerate(fs.paths)}
    random.seed(trial)
    files = []
    for pid in sorted(f"{x:04d}" for x in np.unique(fs.pids)):
        for cam in cams:
            folder = f"cam{cam}/{pid}"
            if folder in folders:
                new_files = sorted(folder + "/" + f for f in folders[folder])
                files.append(random.choice(new_files))
    return np.array([index[f] for f in files])


def ref_sysu(fs, trials, cache=None):
    """10 trials of the published SYSU all-search evaluation; returns per-trial results."""
    q = np.flatnonzero(np.isin(fs.cams, (3, 6)))
    q = q[np.lexsort((fs.paths[q], fs.cams[q], fs.pids[q]))]
    query_feat = fs.feats[q]
    out = []
    for trial in range(trials):
        g = ref_gallery_sysu(fs, trial)
        distmat = np.matmul(query_feat, np.transpose(fs.feats[g]))
        if cache is not None:
            cache.append((distmat, q, g))
        out.append(ref_eval_sysu(-distmat, fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g]))
    return out


def ref_regdb(fs):
    q, g = np.flatnonzero(fs.cams == 1), np.flatnonzero(fs.cams == 2)
    distmat = np.matmul(fs.feats[q], np.transpose(fs.feats[g]))
    return [ref_eval_regdb(-distmat, fs.pids[q], fs.pids[g])], (distmat, q, g)


# ----------------------------------------------------------------------------------------------
# Synthetic features with the datasets' structure


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def identity_features(rng, pids, noise):
    centres = rng.standard_normal((int(pids.max()) + 1, DIM), dtype=np.float32)
    return unit_rows(centres[pids] + noise * rng.standard_normal((len(pids), DIM), dtype=np.float32))


def sysu_features(seed=0):
    """96 test identities; 3803 infrared images (cams 3, 6); visible images in 301 (identity,
    camera) folders of cams 1, 2, 4, 5, as in SYSU-MM01's test set."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, 534), 96, replace=False))
    vis_pairs = [(p, c) for p in ids for c in (1, 2, 4, 5)]
    keep = set(rng.choice(len(vis_pairs), 301, replace=False).tolist())
    groups = [(p, c, 20) for k, (p, c) in enumerate(vis_pairs) if k in keep]
    ir_sizes = rng.multinomial(3803 - 192, np.ones(192) / 192) + 1
    groups += [(p, c, int(n)) for (p, c), n in zip([(p, c) for p in ids for c in (3, 6)], ir_sizes)]
    pids, cams, paths = [], [], []
    for p, c, n in groups:
        for k in range(n):
            pids.append(p)
            cams.append(c)
            paths.append(f"cam{c}/{p:04d}/{k + 1:04d}.jpg")
    pids = np.array(pids)
    return check_features(
        identity_features(rng, pids, 4.0), pids, np.array(cams), np.array(paths), source="synthetic SYSU"
    )


def regdb_features(seed=1):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(206), 20)
    cams = np.tile(np.repeat([1, 2], 10), 206)
    paths = np.array(
        [f"{'Visible' if c == 1 else 'Thermal'}/{p}/{k:02d}.bmp" for k, (p, c) in enumerate(zip(pids, cams))]
    )
    return check_features(identity_features(rng, pids, 4.0), pids, cams, paths, source="synthetic RegDB")


# ----------------------------------------------------------------------------------------------


def as_vectors(results):
    """Per trial: CMC ranks 1..20, mAP, mINP as fractions."""
    return np.array([np.concatenate([np.asarray(c, np.float64)[:20], [a, i]]) for c, a, i in results])


def ours_vectors(result):
    return np.array([np.concatenate([t.metrics.cmc[:20], [t.metrics.mAP, t.metrics.mINP]]) for t in result.trials])


def bench_protocols(repeat: int) -> dict:
    figures: dict = {}
    sysu = sysu_features()
    assert int(np.isin(sysu.cams, (3, 6)).sum()) == 3803
    regdb = regdb_features()

    cache: list = []
    ref = ref_sysu(sysu, 10, cache)
    ours = evaluate_protocol(sysu, "sysu-all", trials=10)
    assert ours.trials[0].num_query == 3803 and ours.trials[0].num_gallery == 301
    sysu_diff = float(np.abs(as_vectors(ref) - ours_vectors(ours)).max())
    t_ref = timeit(lambda: ref_sysu(sysu, 10), repeat=repeat, warmup=0)
    t_ours = timeit(lambda: evaluate_protocol(sysu, "sysu-all", trials=10), repeat=repeat)
    # evaluation only, on the reference's own distance matrices
    t_ref_eval = timeit(
        lambda: [ref_eval_sysu(-d, sysu.pids[q], sysu.pids[g], sysu.cams[q], sysu.cams[g]) for d, q, g in cache],
        repeat=repeat,
        warmup=0,
    )
    t_ours_eval = timeit(
        lambda: [
            evaluate(
                None,
                None,
                sysu.pids[q],
                sysu.pids[g],
                sysu.cams[q],
                sysu.cams[g],
                dist=-d,
                rule="sysu-cam3-cam2",
                dedup_cmc=True,
            )
            for d, q, g in cache
        ],
        repeat=repeat,
    )
    figures.update(
        {
            "sysu_all_10_trials_reference_s": t_ref,
            "sysu_all_10_trials_ours_s": t_ours,
            "sysu_all_speedup": t_ref / t_ours,
            "sysu_all_eval_only_reference_s": t_ref_eval,
            "sysu_all_eval_only_ours_s": t_ours_eval,
            "sysu_all_eval_only_speedup": t_ref_eval / t_ours_eval,
            "sysu_all_max_abs_diff": sysu_diff,
            "sysu_all_rank1_mean_pct": ours.mean()["rank1"],
            "sysu_all_mAP_mean_pct": ours.mean()["mAP"],
        }
    )

    ref_r, (distmat, q, g) = ref_regdb(regdb)
    ours_r = evaluate_protocol(regdb, "regdb-v2i")
    regdb_diff = float(np.abs(as_vectors(ref_r) - ours_vectors(ours_r)).max())
    t_ref = timeit(lambda: ref_regdb(regdb), repeat=repeat, warmup=0)
    t_ours = timeit(lambda: evaluate_protocol(regdb, "regdb-v2i"), repeat=repeat)
    t_ref_eval = timeit(lambda: ref_eval_regdb(-distmat, regdb.pids[q], regdb.pids[g]), repeat=repeat, warmup=0)
    t_ours_eval = timeit(lambda: evaluate(None, None, regdb.pids[q], regdb.pids[g], dist=-distmat), repeat=repeat)
    figures.update(
        {
            "regdb_1_trial_reference_s": t_ref,
            "regdb_1_trial_ours_s": t_ours,
            "regdb_speedup": t_ref / t_ours,
            "regdb_eval_only_reference_s": t_ref_eval,
            "regdb_eval_only_ours_s": t_ours_eval,
            "regdb_eval_only_speedup": t_ref_eval / t_ours_eval,
            "regdb_max_abs_diff": regdb_diff,
            "regdb_rank1_pct": ours_r.mean()["rank1"],
            "regdb_mAP_pct": ours_r.mean()["mAP"],
        }
    )
    figures["tolerance"] = TOLERANCE
    figures["identical"] = bool(max(sysu_diff, regdb_diff) <= TOLERANCE)
    return figures


def bench_scale(n_query=10_000, n_gallery=200_000, n_ids=20_000) -> dict:
    rng = np.random.default_rng(2)
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    centres = rng.standard_normal((n_ids, DIM), dtype=np.float32)
    g_pids = rng.integers(0, n_ids, n_gallery)
    gallery = np.empty((n_gallery, DIM), dtype=np.float32)
    for s in range(0, n_gallery, 10_000):  # in chunks: no float64 temporaries of the whole gallery
        p = g_pids[s : s + 10_000]
        gallery[s : s + 10_000] = unit_rows(centres[p] + 4.0 * rng.standard_normal((len(p), DIM), dtype=np.float32))
    q_pids = rng.integers(0, n_ids, n_query)
    query = unit_rows(centres[q_pids] + 4.0 * rng.standard_normal((n_query, DIM), dtype=np.float32))
    g_cams = rng.integers(1, 7, n_gallery)
    q_cams = rng.integers(1, 7, n_query)
    t_gen = time.perf_counter() - t0
    rss_data = peak_rss_mib()
    t0 = time.perf_counter()
    m = evaluate(query, gallery, q_pids, g_pids, q_cams, g_cams, rule="same-identity-camera", dedup_cmc=True)
    t_eval = time.perf_counter() - t0
    return {
        "scale_queries": n_query,
        "scale_gallery": n_gallery,
        "scale_dim": DIM,
        "scale_data_generation_s": t_gen,
        "scale_evaluate_s": t_eval,
        "scale_peak_rss_before_mib": rss0,
        "scale_peak_rss_after_data_mib": rss_data,
        "scale_peak_rss_mib": peak_rss_mib(),
        "scale_features_mib": (query.nbytes + gallery.nbytes) / 2**20,
        "scale_rank1_pct": 100 * m.rank(1),
        "scale_mAP_pct": 100 * m.mAP,
        "scale_valid_queries": m.num_valid,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", action="store_true", help="also run 10,000 x 200,000 x 2048-d")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (best is kept)")
    args = ap.parse_args()
    figures = bench_protocols(args.repeat)
    if args.scale:
        figures.update(bench_scale())
    print(
        f"max |ours - reference| over CMC@1..20, mAP, mINP (fractions): SYSU "
        f"{figures['sysu_all_max_abs_diff']:.2e}, RegDB {figures['regdb_max_abs_diff']:.2e} "
        f"(tolerance {TOLERANCE:.0e})"
    )
    record("eval", figures)
    ok = figures["identical"] and figures["sysu_all_speedup"] >= 20 and figures["regdb_speedup"] >= 20
    if not ok:
        print("note: a target was missed (identical numbers, or 20x on SYSU / RegDB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
