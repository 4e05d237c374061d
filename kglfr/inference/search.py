"""Ranking a gallery: exact cosine search, faiss above a size threshold, and cached gallery features.

- :func:`top_k`: the K best gallery rows per query by inner product of L2-normalised features. Exact
  (a matrix product in chunks + ``argpartition``) below ``faiss_threshold`` gallery images or without
  faiss; ``faiss.IndexFlatIP`` (exact too, multi-threaded) from there; an IVF index (approximate,
  ``nlist = 4 sqrt(N)``, ``nprobe`` 32) only when asked (``method="faiss-ivf"`` or an ``ivf_threshold``):
  on 100,000 512-d features its recall@10 against exact was 0.13 (uniform random) to 0.91 (clustered)
  in benchmarks/bench_use.py, so ``auto`` stays exact.
- :func:`gallery_features`: features of an image folder, cached in ``DIR/.kglfr-features-<sha12>.npz``
  (sha12: the first 12 hex digits of the checkpoint's sha256) and reused while the key (the relative
  file list with sizes and mtimes, the checkpoint sha256, the feature kind, flip) is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FAISS_THRESHOLD = 20_000
IVF_THRESHOLD = None  # auto never goes approximate (IVF recall@10 0.13-0.91 in bench_use)


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def exact_top_k(query: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each Q x k, best first, by the inner product."""
    q = np.ascontiguousarray(query, np.float32)
    g = np.ascontiguousarray(gallery, np.float32)
    k = min(k, len(g))
    scores = np.zeros((len(q), k), np.float32)
    index = np.zeros((len(q), k), np.int64)
    for s in range(0, len(q), chunk):
        sim = q[s : s + chunk] @ g.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else np.tile(np.arange(k), (len(sim), 1))
        ps = np.take_along_axis(sim, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        index[s : s + chunk] = np.take_along_axis(part, order, 1)
        scores[s : s + chunk] = np.take_along_axis(ps, order, 1)
    return scores, index


def build_faiss_index(gallery: np.ndarray, ivf: bool = False, nprobe: int = 32, seed: int = 0):
    import faiss

    g = np.ascontiguousarray(gallery, np.float32)
    d = g.shape[1]
    if not ivf:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = max(1, min(int(4 * np.sqrt(len(g))), len(g) // 39))  # faiss wants 39 points a list
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = g if len(g) <= 40 * nlist else g[rng.choice(len(g), 40 * nlist, replace=False)]
        index.train(train)
        index.nprobe = min(nprobe, nlist)
    index.add(g)
    return index


def top_k(query: np.ndarray, gallery: np.ndarray, k: int, method: str = "auto",
          faiss_threshold: int = FAISS_THRESHOLD, ivf_threshold: int = IVF_THRESHOLD):  # fmt: skip
    """(scores, indices, method used): "exact", "faiss-flat" or "faiss-ivf"."""
    if method == "auto":
        if len(gallery) < faiss_threshold or not have_faiss():
            method = "exact"
        elif ivf_threshold is not None and len(gallery) >= ivf_threshold:
            method = "faiss-ivf"
        else:
            method = "faiss-flat"
    if method == "exact":
        s, i = exact_top_k(query, gallery, k)
        return s, i, method
    if method not in ("faiss-flat", "faiss-ivf"):
        raise ValueError(f"unknown search method {method!r}")
    index = build_faiss_index(gallery, ivf=method == "faiss-ivf")
    s, i = index.search(np.ascontiguousarray(query, np.float32), min(k, len(gallery)))
    return s, i.astype(np.int64), method


def folder_key(folder: Path, files: list[Path], checkpoint_sha: str, which: str, flip: bool) -> str:
    h = hashlib.sha256()
    h.update(f"{checkpoint_sha}\0{which}\0{int(flip)}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_path(folder: Path, checkpoint_sha: str) -> Path:
    return Path(folder) / f".kglfr-features-{checkpoint_sha[:12]}.npz"


def gallery_features(model, folder, modality, which: str = "bn", flip: bool = False, batch_size: int = 64,
                     progress: bool = False, cache: bool = True):  # fmt: skip
    """(feats, pids, cams, paths, modalities, reused) of an image folder; cached beside the images."""
    from kglfr.api import list_images
    from kglfr.cli.extract import folder_features
    from kglfr.io import write_atomic

    folder = Path(folder).expanduser()
    files = list_images(folder)
    key = folder_key(folder, files, model.sha256, which, flip)
    path = cache_path(folder, model.sha256)
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return z["feats"], z["pids"], z["cams"], z["paths"].astype(str), z["modalities"], True
        except Exception as e:  # a damaged cache is rebuilt
            log.warning("ignoring the unreadable feature cache %s (%s)", path, e)
    arrays = folder_features(model, folder, modality, which, flip, batch_size, progress, files=files)
    if cache:
        names = ("feats", "pids", "cams", "paths", "modalities")
        try:
            write_atomic(path, lambda f: np.savez(f, key=np.asarray(key), **dict(zip(names, arrays))), binary=True)
        except OSError as e:  # a read-only gallery folder: search still works, uncached
            log.warning("cannot cache gallery features in %s (%s)", path, e.strerror or e)
    return (*arrays, False)
