"""Ranking a gallery: exact cosine search, faiss above a size threshold, and cached gallery features.

- :func:`top_k`: the K best gallery rows per query by inner product of L2-normalised features. Exact
  (a matrix product in chunks + ``argpartition``) below ``faiss_threshold`` gallery images or without
  faiss; ``faiss.IndexFlatIP`` (exact too, multi-threaded) from there; an IVF index (approximate,
  ``nlist = 4 sqrt(N)``, ``nprobe`` 32) only when asked (``method="faiss-ivf"`` or an ``ivf_threshold``):
  on 100,000 512-d features its recall@10 against exact was 0.13 (uniform random) to 0.91 (clustered)
  in benchmarks/bench_use.py, so ``auto`` stays exact.
- :func:`search`: the whole of ``kglfr search`` as a function (queries, gallery folder or features
  file, top-K, warnings) returning a :class:`SearchResult` that can draw its grid.
- :func:`gallery_features`: features of an image folder, cached in ``DIR/.kglfr-features-<sha12>.npz``
  (sha12: the first 12 hex digits of the checkpoint's sha256) and reused while the key (the relative
  file list with sizes and mtimes, the checkpoint sha256, the feature kind, flip) is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kglfr.data.records import Modality
from kglfr.errors import KglfrError

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


def folder_key(folder: Path, files: list[Path], checkpoint_sha: str, which: str, flip: bool, amp: str = "off") -> str:
    h = hashlib.sha256()
    h.update(f"{checkpoint_sha}\0{which}\0{int(flip)}\n".encode())
    if amp != "off":  # float32 keys as before, so existing caches stay valid
        h.update(f"amp\0{amp}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_path(folder: Path, checkpoint_sha: str) -> Path:
    return Path(folder) / f".kglfr-features-{checkpoint_sha[:12]}.npz"


def _read_cache(path: Path, key: str, n: int, dim: int):
    """The cached (feats, pids, cams, paths, modalities) when the file is sound, else None (logged)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None  # the folder or the checkpoint changed: rebuilt without a warning
            arrays = tuple(z[k] for k in ("feats", "pids", "cams", "paths", "modalities"))
    except Exception as e:  # a damaged cache is rebuilt
        log.warning("ignoring the unreadable feature cache %s (%s); rebuilding it", path, e)
        return None
    feats = arrays[0]
    if feats.ndim != 2 or len(feats) != n or feats.shape[1] != dim or any(len(a) != n for a in arrays[1:]):
        problem = f"{len(feats)} x {feats.shape[1] if feats.ndim == 2 else '?'} features for {n} images of {dim}-d"
    elif not np.issubdtype(feats.dtype, np.floating) or not np.isfinite(feats).all():
        problem = "NaN or infinite features"
    else:
        return (arrays[0], arrays[1], arrays[2], arrays[3].astype(str), arrays[4])
    log.warning("ignoring the feature cache %s: %s; rebuilding it", path, problem)
    return None


def gallery_features(model, folder, modality, which: str = "bn", flip: bool = False, batch_size: int = 64,
                     progress: bool = False, cache: bool = True):  # fmt: skip
    """(feats, pids, cams, paths, modalities, reused) of an image folder; cached beside the images. A cache
    whose key, length, width or values are wrong is rebuilt."""
    from kglfr.data.datasets.base import image_folder
    from kglfr.eval.extract import folder_feature_set
    from kglfr.io import write_atomic

    folder = Path(folder).expanduser()
    files = image_folder(folder)
    policy = getattr(model, "policy", None)
    key = folder_key(folder, files, model.sha256, which, flip, "off" if policy is None else policy.amp_name)
    path = cache_path(folder, model.sha256)
    if cache and path.is_file():
        arrays = _read_cache(path, key, len(files), model.feature_dim)
        if arrays is not None:
            return (*arrays, True)
    fs = folder_feature_set(model, folder, modality, which, flip, batch_size, progress, files=files)
    arrays = (fs.feats, fs.pids, fs.cams, fs.paths, fs.modalities.astype(np.int64))
    if cache:
        names = ("feats", "pids", "cams", "paths", "modalities")
        try:
            write_atomic(path, lambda f: np.savez(f, key=np.asarray(key), **dict(zip(names, arrays))), binary=True)
        except OSError as e:  # a read-only gallery folder: search still works, uncached
            log.warning("cannot cache gallery features in %s (%s)", path, e.strerror or e)
    return (*arrays, False)


# -- the search a Python user (and ``kglfr search``) runs -------------------------------------------------

MIN_SIDE = 8  # a query smaller than this, or MAX_ASPECT times longer than wide (or wider), is warned about
MAX_ASPECT = 8.0


@dataclass
class SearchResult:
    """The top-K gallery images of every query. ``index``/``scores``: Q x K, best first; ``correct``:
    Q x K True/False where both identities are known, else None; ``warnings``: for the user."""

    query_files: list[Path]
    query_names: list[str]  # relative to the query folder (or <parent>/<name> for one image)
    query_pids: np.ndarray
    gallery_paths: np.ndarray
    gallery_pids: np.ndarray
    gallery_root: Path | None  # where gallery_paths are relative to; None: images unknown
    gallery_source: str  # "folder (cached features reused)", "folder (features extracted)" or "features file"
    gallery_modality: Modality | None
    scores: np.ndarray
    index: np.ndarray
    correct: np.ndarray
    method: str
    warnings: list[str] = field(default_factory=list)

    def draw(self, out: str | Path, rows: int = 20) -> Path:
        """The retrieval grid of the first ``rows`` queries (blank tiles when ``gallery_root`` is None)."""
        from kglfr.viz.retrieval import retrieval_grid

        rows = min(len(self.query_files), rows)
        root = self.gallery_root
        ranked = [[(root / self.gallery_paths[g]) if root is not None else None for g in self.index[i]]
                  for i in range(rows)]  # fmt: skip
        labels = [f"query {p}" if p >= 0 else "query" for p in self.query_pids[:rows]]
        return retrieval_grid(self.query_files[:rows], ranked, out, correct=self.correct[:rows],
                              scores=self.scores[:rows], query_labels=labels)  # fmt: skip


def query_images(query: str | Path) -> tuple[list[Path], list[str]]:
    """(files, names) of a query image or a folder of them; names carry the ``<pid>/`` of the layout."""
    from kglfr.data.datasets.base import image_folder

    query = Path(query).expanduser()
    if query.is_dir():
        files = image_folder(query)
        return files, [f.relative_to(query).as_posix() for f in files]
    if query.is_file():
        return [query], [f"{query.parent.name}/{query.name}"]
    raise KglfrError(f"query {query} does not exist")


def degenerate_images(files: list[Path]) -> list[str]:
    """Warnings for images too small or too elongated to give a meaningful feature (read from the header)."""
    from kglfr.data.images import image_size

    out = []
    for f in files:
        try:
            w, h = image_size(f)
        except Exception:  # unreadable: embedding it names the file
            continue
        if min(w, h) < MIN_SIDE or max(w, h) / max(min(w, h), 1) > MAX_ASPECT:
            out.append(f"query {f} is {w} x {h} pixels; it is stretched to the model's input size, so its "
                       "matches mean little (crop the person)")  # fmt: skip
    return out


def _gallery(model, gallery: Path, query_modality: Modality, gallery_modality, gallery_root, **kw):
    """(feats, pids, paths, modalities, root, source, modality) of a gallery folder or features file."""
    from kglfr.eval.extract import parse_modality

    if not gallery.exists():
        raise KglfrError(f"gallery {gallery} does not exist")
    if gallery.is_dir():
        gmod = parse_modality(gallery_modality) if gallery_modality else Modality(1 - int(query_modality))
        feats, pids, _, paths, mods, reused = gallery_features(model, gallery, gmod, **kw)
        source = f"folder ({'cached features reused' if reused else 'features extracted'})"
        return feats, pids, paths, mods, gallery, source, gmod
    from kglfr.eval.features import load_features

    fs = load_features(gallery)
    mods = fs.modalities
    gmod = parse_modality(gallery_modality) if gallery_modality else None
    if gmod is not None:
        mods = np.full(len(fs), int(gmod))
    if fs.feats.shape[1] != model.feature_dim:
        raise KglfrError(f"gallery {gallery} has {fs.feats.shape[1]}-d features, the model gives "
                         f"{model.feature_dim}-d: extract it with this checkpoint")  # fmt: skip
    root = Path(gallery_root).expanduser() if gallery_root else None
    if root is not None:
        check_inside(root, fs.paths, gallery)
    return fs.feats, fs.pids, fs.paths, mods, root, "features file", gmod


def check_inside(root: Path, paths, gallery: Path) -> None:
    """Refuse a features file whose image paths leave ``root`` (absolute, or ``..`` out of it): the grid
    draws only images under the gallery root the user named (symbolic links inside it are followed)."""
    import os

    for p in paths:
        norm = os.path.normpath(str(p))
        if os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep):
            raise KglfrError(f"gallery {gallery} lists {str(p)!r}, which is outside gallery_root {root}; "
                             "features files hold paths relative to the gallery root: extract the gallery "
                             "again from that root, or give its own root")  # fmt: skip


def search(model, query, query_modality, gallery, *, gallery_modality=None, gallery_root=None, top: int = 10,
           method: str = "auto", flip: bool = False, cache: bool = True, batch_size: int = 64,
           progress: bool = False) -> SearchResult:  # fmt: skip
    """Rank ``gallery`` (a folder of images, embedded once and cached, or a features ``.npz``) for the
    ``query`` image(s) (a file or a folder) with a :class:`kglfr.api.ReIDModel`; see ``kglfr search``.
    ``gallery_modality``: default the other one than the query's; ``gallery_root``: the folder a features
    file's paths are relative to (to draw its images)."""
    from kglfr.data.datasets.base import parse_layout
    from kglfr.eval.extract import parse_modality

    qmod = parse_modality(query_modality)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise KglfrError(f"top must be a whole number of at least 1, got {top!r}")
    if method not in ("auto", "exact", "faiss-flat", "faiss-ivf"):
        raise KglfrError(f"unknown search method {method!r}; use auto, exact, faiss-flat or faiss-ivf")
    if method.startswith("faiss") and not have_faiss():
        raise KglfrError(f"method {method} needs faiss: pip install 'kglfr[search]'")
    qfiles, qnames = query_images(query)
    warnings = degenerate_images(qfiles)
    feats, gpids, gpaths, gmods, root, source, gmod = _gallery(
        model, Path(gallery).expanduser(), qmod, gallery_modality, gallery_root,
        which="bn", flip=flip, batch_size=batch_size, progress=progress, cache=cache,
    )  # fmt: skip
    if gmods is not None and len(gmods) and (same := int((np.asarray(gmods) == int(qmod)).sum())):
        warnings.append(f"{same} of {len(gmods)} gallery images are {qmod.name.lower()}, the query's own modality; "
                        f"cross-modality search expects a {Modality(1 - int(qmod)).name.lower()} gallery")  # fmt: skip
    q = model.embed(qfiles, qmod, flip=flip, batch_size=batch_size)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    scores, index, used = top_k(q, feats, top, method=method)
    qpids = np.asarray([parse_layout(n)[0] for n in qnames])
    known = (qpids[:, None] >= 0) & (gpids[index] >= 0)
    correct = np.where(known, qpids[:, None] == gpids[index], None)
    return SearchResult(qfiles, qnames, qpids, np.asarray(gpaths), np.asarray(gpids), root, source, gmod, scores,
                        index, correct, used, warnings)  # fmt: skip
