"""The keypoint cache: the 13 heatmaps, keypoints and part centres of every image of a prepared store.

``kglfr keypoints`` runs a pose backend once over a store and writes ``STORE/keypoints/BACKEND/``
(caches of several backends are kept side by side)::

    meta.json      what was cached: store key, backend + identity, sizes, threshold, completeness
    heatmaps.u8    N x 13 x h x w uint8   the 13 heatmaps at a compact size (default 32 x 16), each
                                          stretched to 0..255 by its own maximum
    scales.f32     N x 13 float32         that maximum: heatmap = q / 255 * scale, in [0, 1]
    coords.f32     N x 13 x 3 float32     the 13 keypoints: x, y in store-image pixels, confidence
    parts.f32      N x 11 x 2 float32     the 11 part centres in store-image pixels
    valid.u8       N x 11 uint8           1 where the part is valid (its keypoints' confidence >= threshold)
    done.u8        N uint8                progress: 1 once an image's rows above are on disk
    summary.json   per modality: how many images have each part valid, how many have none

At 32 x 16 an image takes 13 * 32 * 16 + 13 * 4 + 13 * 12 + 11 * 8 + 11 + 1 = 6964 bytes (the limit is
8 KB; 36 x 18 would take 8732). The size and the resampling were chosen by measuring the 18 x 9 KMLFR
mask m = relu(k / max k) of augmented (pad/crop/flip) maps against the same mask from the full 80 x 40
maps (``benchmarks/bench_keypoints.py``, 5.8k oracle maps of synthetic images). With the cache sampled
bilinearly from 80 x 40 and the training transform sampling it bicubically straight at 18 x 9
(``TrainTransform(heatmap_size=(18, 9))``), the largest cell error per mask is 0.034 on average (95th
percentile 0.055, mean cell error 0.0007); for scale, merely interpolating the 80 x 40 maps in one step
instead of two gives 0.018. Transforming at 32 x 16 and resizing after, bilinearly, gives 0.148; an
18 x 9 cache 0.375.

The pose network sees each ORIGINAL image (the store manifest's source root + relpath, decoded as
``prepare`` decodes it) resized straight to its input (``PoseBackend.pose_input_hw``: 320 x 160 for
HRNet), not the store image scaled up; its heatmaps span the whole frame as the store image does, and
its keypoints are scaled from input pixels to store-image pixels, so the files above are in the store's
frame. A backend without pixels (the oracle) gets the store images; ``meta["pose_input"]`` records
which ([H, W] or "store"), and a cache without it (made from store images by an older kglfr) is
refused as stale. A source image that is missing or changed since ``prepare`` stops the run in one line.

The cache is keyed to the store (its source-file fingerprint, image list and size) and to the
backend's ``identity()`` (name, weights hash, options). ``KeypointCache.open(store)`` opens the only
cache of the store, or the most recently finished one; ``backend="x"`` that backend's. A cache written
before caches were kept per backend (the files directly in ``STORE/keypoints/``) is read where it is,
and moved into its backend's folder by the next ``build_cache``. ``KeypointCache.open`` refuses a cache that is
stale, incomplete, of another backend or damaged (sizes, checksum), saying to re-run ``kglfr keypoints``.
``build_cache`` holds the store's lock (``kglfr.io.folder_lock``, shared with ``prepare_store``) while it
runs. An interrupted run resumes where it stopped: the data are written into memory maps, flushed, and only
then marked in ``done.u8``; ``meta.json`` is always replaced atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kglfr.data.images import decode_image
from kglfr.data.records import Modality
from kglfr.data.store import Store, resize
from kglfr.errors import KglfrError, StoreError
from kglfr.io import allocate, check_free_space, folder_lock, write_json_atomic
from kglfr.keypoints.backends.base import COCO17, BatchInfo, PoseBackend, build_backend
from kglfr.keypoints.heatmaps import dequantise, quantise, resize_maps
from kglfr.keypoints.skeleton import (
    KEYPOINTS,
    NUM_KEYPOINTS,
    NUM_PARTS,
    PARTS,
    VALID_THRESHOLD,
    coco_to_13_heatmaps,
    coco_to_13_keypoints,
    part_centres,
)

log = logging.getLogger(__name__)

FORMAT = "kglfr-keypoints"
VERSION = 1
FOLDER = "keypoints"
META = "meta.json"
SUMMARY = "summary.json"
DEFAULT_HEATMAP_HW = (32, 16)
MAX_BYTES_PER_IMAGE = 8192
STORE_IMAGES = "store"  # meta["pose_input"] of a backend given the store's images (the oracle)


@dataclass(frozen=True)
class _Array:
    file: str
    dtype: str
    shape: tuple  # per image; "hw" stands for the heatmap size


def _arrays(hw: tuple[int, int]) -> dict[str, _Array]:
    return {
        "heatmaps": _Array("heatmaps.u8", "uint8", (NUM_KEYPOINTS, *hw)),
        "scales": _Array("scales.f32", "float32", (NUM_KEYPOINTS,)),
        "coords": _Array("coords.f32", "float32", (NUM_KEYPOINTS, 3)),
        "parts": _Array("parts.f32", "float32", (NUM_PARTS, 2)),
        "part_valid": _Array("valid.u8", "uint8", (NUM_PARTS,)),
    }


def bytes_per_image(heatmap_hw: tuple[int, int]) -> int:
    """Bytes one image takes in the cache, ``done`` flag included."""
    return sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in _arrays(heatmap_hw).values()) + 1


def store_key(store: Store) -> str:
    """What the cache must match: the store's source fingerprint, its image list and its image size."""
    h = hashlib.sha1()
    h.update(f"{store.manifest.get('fingerprint')}\0{len(store)}\0{store.size[0]}x{store.size[1]}\n".encode())
    for rel in store.relpaths:
        h.update(rel.encode() + b"\n")
    return h.hexdigest()


def cache_folder(store: Store, backend: str) -> Path:
    """The folder of ``backend``'s cache in ``store``: ``STORE/keypoints/BACKEND``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", backend):
        raise KglfrError(f"pose backend name {backend!r} cannot name a cache folder; use letters, digits, _ . -")
    return store.path / FOLDER / backend


def cache_backends(store: Store) -> list[str]:
    """The backends with a keypoint cache (complete or not) in ``store``, sorted."""
    root = store.path / FOLDER
    names = {d.name for d in root.iterdir() if d.is_dir() and (d / META).is_file()} if root.is_dir() else set()
    if (root / META).is_file():  # an old single-folder cache
        names.add(str((_read_meta(root) or {}).get("backend", "unknown")))
    return sorted(names)


def _find_folder(store: Store, backend: str | None) -> Path | None:
    """The cache folder ``KeypointCache.open`` reads: ``backend``'s, or the only / most recently
    finished one; None if the store has none."""
    root = store.path / FOLDER
    if (root / META).is_file():  # written before caches were kept per backend: read in place
        meta = _read_meta(root)
        if backend is None or (meta or {}).get("backend") == backend:
            return root
    if backend is not None:
        folder = cache_folder(store, backend)
        return folder if (folder / META).is_file() else None
    if not root.is_dir():
        return None
    found = [d for d in root.iterdir() if d.is_dir() and (d / META).is_file()]
    if not found:
        return None
    complete = [d for d in found if (_read_meta(d) or {}).get("complete")] or found
    pick = max(complete, key=lambda d: ((d / META).stat().st_mtime_ns, d.name))
    if len(complete) > 1:
        log.info("store %s has keypoint caches of %s; using %s, the most recent (choose one with backend=...)",
                 store.path, ", ".join(sorted(d.name for d in complete)), pick.name)  # fmt: skip
    return pick


def _migrate_legacy(store: Store) -> None:
    """Move an old single-folder cache (files directly in ``STORE/keypoints``) into its backend's folder;
    ``meta.json`` last, so an interrupted move is finished by the next call."""
    root = store.path / FOLDER
    if not (root / META).is_file():
        return
    name = str((_read_meta(root) or {}).get("backend") or "unknown")
    try:
        target = cache_folder(store, name)
    except KglfrError:
        target = root / "unknown"
    target.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in root.iterdir() if p.is_file()), key=lambda p: p.name == META)
    for p in files:
        os.replace(p, target / p.name)
    log.info("moved the keypoint cache of %s into %s (caches are now kept per backend)", name, target)


def _open_store(store: Store | str | Path) -> Store:
    return store if isinstance(store, Store) else Store.open(store)


def _rerun(store: Store, backend: str | None = None) -> str:
    return f"re-run 'kglfr keypoints --store {store.path} --backend {backend or 'BACKEND'}'"


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _checksum(folder: Path, hw: tuple[int, int]) -> str:
    h = hashlib.sha1()
    for a in _arrays(hw).values():
        with open(folder / a.file, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _files_ok(folder: Path, n: int, hw: tuple[int, int], with_done: bool = True) -> bool:
    for a in _arrays(hw).values():
        p = folder / a.file
        if not p.is_file() or p.stat().st_size != n * np.dtype(a.dtype).itemsize * int(np.prod(a.shape)):
            return False
    return not with_done or ((folder / "done.u8").is_file() and (folder / "done.u8").stat().st_size == n)


def _memmaps(folder: Path, n: int, hw: tuple[int, int], mode: str) -> dict[str, np.ndarray]:
    out = {}
    for name, a in _arrays(hw).items():
        if n == 0:
            out[name] = np.zeros((0, *a.shape), a.dtype)
        else:
            out[name] = np.memmap(folder / a.file, dtype=a.dtype, mode=mode, shape=(n, *a.shape))
    return out


# ---------------------------------------------------------------------------------------------------
# Reading


def _checked_meta(store: Store, backend: str | None, identity: str | None) -> tuple[Path, dict]:
    """The folder and ``meta.json`` of the cache ``KeypointCache.open`` opens, after refusing a missing,
    damaged, stale, incomplete or other backend's one, saying which command rebuilds it."""
    folder = _find_folder(store, backend)
    rerun = _rerun(store, backend)
    if folder is None:
        others = cache_backends(store)
        if backend is not None and others:
            raise KglfrError(
                f"store {store.path} has no keypoint cache of backend {backend!r} (it has {', '.join(others)}); "
                f"run 'kglfr keypoints --store {store.path} --backend {backend}'"
            )
        raise KglfrError(f"store {store.path} has no keypoint cache; run 'kglfr keypoints --store {store.path} "
                         f"--backend {backend or 'hrnet|blazepose|oracle'}'")  # fmt: skip
    meta = _read_meta(folder)
    if meta is None or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise KglfrError(f"keypoint cache {folder} is damaged or of another version; {rerun}")
    rerun = _rerun(store, backend or meta.get("backend"))
    if meta.get("store_key") != store_key(store):
        raise KglfrError(f"keypoint cache {folder} is stale: the store was prepared again (or changed) since; {rerun}")
    if "pose_input" not in meta:
        raise KglfrError(
            f"keypoint cache {folder} is stale: it was made from the store's resized images by an older "
            f"kglfr, keypoints now come from the original images; {rerun}"
        )
    if not meta.get("complete"):
        raise KglfrError(f"keypoint cache {folder} is incomplete (an interrupted run); {rerun} to finish it")
    if backend is not None and meta.get("backend") != backend:
        raise KglfrError(f"keypoint cache {folder} was made by backend {meta.get('backend')!r}, not {backend!r}; "
                         f"{rerun}")  # fmt: skip
    if identity is not None and meta.get("identity") != identity:
        raise KglfrError(
            f"keypoint cache {folder} was made by another version of backend {meta.get('backend')!r} "
            f"({meta.get('identity')}, expected {identity}); {rerun}"
        )
    return folder, meta


class KeypointCache:
    """A complete, up-to-date keypoint cache opened for reading (memory-mapped).

    ``heatmaps``: N x 13 x h x w uint8 and ``scales``: N x 13 (a heatmap is q / 255 * scale);
    ``coords``: N x 13 x 3 (x, y in store-image pixels, confidence); ``parts``: N x 11 x 2 part centres
    in store-image pixels; ``part_valid``: N x 11 bool. Rows follow the store's image order.
    """

    def __init__(self, path: Path, meta: dict, arrays: dict[str, np.ndarray], part_valid: np.ndarray):
        self.path = path
        self.meta = meta
        self.heatmaps = arrays["heatmaps"]
        self.scales = arrays["scales"]
        self.coords = arrays["coords"]
        self.parts = arrays["parts"]
        self.part_valid = part_valid

    @classmethod
    def open(
        cls,
        store: Store | str | Path,
        backend: str | None = None,
        identity: str | None = None,
        threshold: float | None = None,
        verify: bool = True,
    ) -> KeypointCache:
        """Open a keypoint cache of ``store``; refuse it unless it is complete and matches the store.

        ``backend``: open that backend's cache (``STORE/keypoints/BACKEND``); None: the only one, or the
        most recently finished one. ``identity``: also refuse a cache made by another backend identity
        (weights). ``threshold``: recompute part validity at this confidence threshold instead of the
        one the cache was built with. ``verify``: check the data files' checksum (one read of the files).
        """
        store = _open_store(store)
        folder, meta = _checked_meta(store, backend, identity)
        rerun = _rerun(store, backend or meta.get("backend"))
        n = len(store)
        hw = tuple(meta["heatmap_hw"])
        if not _files_ok(folder, n, hw, with_done=False):
            raise KglfrError(f"keypoint cache {folder} is damaged (a data file is missing or of the wrong size); "
                             f"{rerun}")  # fmt: skip
        if verify and _checksum(folder, hw) != meta.get("checksum"):
            raise KglfrError(f"keypoint cache {folder} is damaged (checksum mismatch); {rerun}")
        arrays = _memmaps(folder, n, hw, "r")
        if threshold is None or threshold == meta["threshold"]:
            valid = arrays["part_valid"].view(bool)
        else:
            valid = np.asarray(part_centres(np.asarray(arrays["coords"]), threshold)[1])
            meta = {**meta, "threshold": threshold}
        return cls(folder, meta, arrays, valid)

    # -- metadata ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.coords)

    @property
    def backend(self) -> str:
        return self.meta["backend"]

    @property
    def identity(self) -> str:
        return self.meta["identity"]

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return tuple(self.meta["heatmap_hw"])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the store images the coordinates refer to (the heatmaps span them)."""
        return tuple(self.meta["image_hw"])

    @property
    def threshold(self) -> float:
        return self.meta["threshold"]

    @property
    def no_person(self) -> np.ndarray:
        """N bool: images with no valid part (training falls back to random erasing centres)."""
        return ~np.asarray(self.part_valid).any(1)

    def summary(self) -> dict:
        return json.loads((self.path / SUMMARY).read_text())

    # -- data ----------------------------------------------------------------------------------------
    def read_batch(self, indices: Sequence[int] | np.ndarray, raw: bool = False) -> dict[str, np.ndarray]:
        """The rows at ``indices`` (in that order): ``heatmaps`` B x 13 x h x w float32 in [0, 1] (with
        ``raw``: the uint8 maps, plus ``scales``), ``coords`` B x 13 x 3, ``parts`` B x 11 x 2,
        ``part_valid`` B x 11 bool. The files are read front to back, as ``Store.read_batch`` does."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]

        def take(a: np.ndarray, dtype=None) -> np.ndarray:
            out = np.empty((len(idx), *a.shape[1:]), dtype=dtype or a.dtype)
            out[order] = a[sorted_idx]
            return out

        q, scales = take(self.heatmaps), take(self.scales)
        out = {"coords": take(self.coords), "parts": take(self.parts), "part_valid": take(self.part_valid, bool)}
        if raw:
            out["heatmaps"], out["scales"] = q, scales
        else:
            out["heatmaps"] = dequantise(q, scales)
        return out


# ---------------------------------------------------------------------------------------------------
# Building


def check_device(device: str) -> None:
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise KglfrError(f"unknown device {device!r}; use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KglfrError(f"device={device!r} was asked for but no CUDA device is available; use device='cpu'")


def build_pose_backend(name: str, store: Store, weights: str | Path | None = None, device: str = "cpu") -> PoseBackend:
    """Build pose backend ``name`` for ``store`` (its errors propagate as ``KglfrError``)."""
    check_device(device)
    if weights is not None and not Path(weights).expanduser().is_file():
        raise KglfrError(f"weights file {weights} does not exist")
    options: dict = {"weights": weights, "device": device}
    if name == "oracle":  # the oracle reads the ground truth beside the store's source images
        options["root"] = store.root
    return build_backend(name, **options)


@dataclass
class BuildResult:
    cache: KeypointCache | None  # None when stopped early by ``max_images``
    summary: dict
    computed: int  # images run through the backend in this call (0: the cache was up to date)
    resumed: bool


def build_cache(
    store: Store | str | Path,
    backend: PoseBackend,
    heatmap_size: tuple[int, int] = DEFAULT_HEATMAP_HW,
    batch_size: int = 32,
    threshold: float = VALID_THRESHOLD,
    head: str = "max",
    head_point: str = "best",
    force: bool = False,
    progress: bool = True,
    commit_seconds: float = 2.0,
    max_images: int | None = None,
) -> BuildResult:
    """Run ``backend`` over every image of ``store`` and write ``STORE/keypoints`` (see the module doc).

    The backend sees each ORIGINAL image (the store's source root + relpath) resized to its
    ``pose_input_hw`` (HRNet: 320 x 160), or the store's images for a backend without one (the oracle);
    its heatmaps and keypoints are then expressed in the store image's frame.
    An up-to-date cache is left alone unless ``force``, and one that differs only in ``threshold`` gets
    its part validity recomputed without the backend; both only after its checksum is verified: a
    damaged cache is rebuilt, with a warning. An interrupted one with the same settings is resumed.
    ``max_images`` stops after that many new images (to test resuming). The store is locked meanwhile:
    a second process gets ``LockedError`` naming this one's pid.
    """
    store = _open_store(store)
    hw = _check_build_options(store, heatmap_size, batch_size, threshold)
    input_hw = backend.pose_input_hw(store.size)
    if input_hw is not None and not store.root.is_dir():
        raise KglfrError(
            f"the source images of store {store.path} are not at {store.root}; keypoints are computed from the "
            "original images: put the dataset back there, or prepare the store again from where it is"
        )
    want = _wanted_meta(store, backend, hw, head, head_point, threshold, input_hw)
    with folder_lock(store.path, "store"):
        _migrate_legacy(store)
        folder = cache_folder(store, backend.name)
        folder.mkdir(parents=True, exist_ok=True)
        found = _reuse_or_start(store, folder, want, force)
        if isinstance(found, BuildResult):
            return found
        meta, resumed = found
        done = np.memmap(folder / "done.u8", dtype=np.uint8, mode="r+", shape=(len(store),))
        todo = np.flatnonzero(done == 0)[:max_images]
        if resumed:
            log.info("resuming keypoint cache %s: %d of %d images left", folder, len(todo), len(store))
        run = _Run(store, backend, hw, head, head_point, input_hw)
        run.fill(_memmaps(folder, len(store), hw, "r+"), done, todo, batch_size, progress, commit_seconds)
        if not done.all():  # stopped early on purpose (max_images)
            return BuildResult(None, {}, len(todo), resumed)
        del done
        cache, summary = _finish(store, folder, meta)
        return BuildResult(cache, summary, len(todo), resumed)


def _check_build_options(
    store: Store, heatmap_size: tuple[int, int], batch_size: int, threshold: float
) -> tuple[int, int]:
    """Refuse an empty store and bad options before anything is written; the heatmap size as ints."""
    if len(store) == 0 or not (store.path / "images.u8").is_file():
        raise StoreError(f"store {store.path} holds no images; prepare it from a dataset with images first")
    hw = (int(heatmap_size[0]), int(heatmap_size[1]))
    if bytes_per_image(hw) > MAX_BYTES_PER_IMAGE:
        raise KglfrError(f"heatmaps of {hw[0]}x{hw[1]} take {bytes_per_image(hw)} bytes per image; "
                         f"the cache allows {MAX_BYTES_PER_IMAGE}")  # fmt: skip
    if batch_size < 1:
        raise KglfrError("batch_size must be at least 1")
    if not np.isfinite(threshold) or threshold < 0:
        raise KglfrError(f"the confidence threshold must be a number from 0 to 1, got {threshold}")
    return hw


def _wanted_meta(
    store: Store,
    backend: PoseBackend,
    hw: tuple[int, int],
    head: str,
    head_point: str,
    threshold: float,
    input_hw: tuple[int, int] | None,
) -> dict:
    """The settings a cache must have been built with to be reused (``meta.json`` less its progress)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "store_key": store_key(store),
        "count": len(store),
        "image_hw": list(store.size),
        "backend": backend.name,
        "identity": backend.identity(),
        "pose_input": STORE_IMAGES if input_hw is None else [int(input_hw[0]), int(input_hw[1])],
        "heatmap_hw": list(hw),
        "head": head,
        "head_point": head_point,
        "threshold": threshold,
        "keypoints": list(KEYPOINTS),
        "parts": list(PARTS),
    }


def _reuse_or_start(store: Store, folder: Path, want: dict, force: bool) -> BuildResult | tuple[dict, bool]:
    """The result when the cache in ``folder`` is up to date (or needs only a new threshold); else the
    meta of the run to do and whether it resumes an interrupted one (new files are allocated if not)."""
    n, hw, threshold = want["count"], tuple(want["heatmap_hw"]), want["threshold"]
    old = _read_meta(folder)
    same_but_threshold = old is not None and all(old.get(k) == v for k, v in want.items() if k != "threshold")
    same = same_but_threshold and old.get("threshold") == threshold
    files_ok = old is not None and _files_ok(folder, n, hw)
    damaged = False
    if same_but_threshold and files_ok and old.get("complete") and not force:
        # both shortcuts reuse the cached data: only if they are intact (one read of the files)
        if _checksum(folder, hw) == old.get("checksum"):
            if not same:
                return _rethreshold(store, folder, old, threshold)
            log.info("keypoint cache %s is up to date (%s); force=True rebuilds it", folder, want["backend"])
            cache = KeypointCache.open(store, want["backend"], want["identity"], verify=False)
            return BuildResult(cache, cache.summary(), 0, False)
        log.warning("keypoint cache %s is damaged (checksum mismatch); rebuilding it", folder)
        damaged = True
    if same and files_ok and not force and not damaged:  # an interrupted run with these settings
        return old, True
    if old is not None and not same and not damaged:
        log.info("replacing keypoint cache %s (%s, %s)", folder, old.get("backend"), old.get("identity"))
    _allocate_files(folder, n, hw, want)
    return _read_meta(folder), False


@dataclass
class _Run:
    """One pass of a backend over the images of a store (``build_cache``'s loop)."""

    store: Store
    backend: PoseBackend
    hw: tuple[int, int]
    head: str
    head_point: str
    input_hw: tuple[int, int] | None

    def fill(self, arrays: dict, done: np.ndarray, todo: np.ndarray, batch_size: int, progress: bool,
             commit_seconds: float) -> None:  # fmt: skip
        """Predict the rows ``todo`` into ``arrays`` in batches; flush, then mark them in ``done``
        at least every ``commit_seconds`` (and at the end, also when interrupted)."""
        from tqdm import tqdm

        n = len(done)
        bar = tqdm(total=n, initial=n - int((done == 0).sum()), desc=f"keypoints ({self.backend.name})",
                   unit="img", disable=not progress, mininterval=1.0, dynamic_ncols=True)  # fmt: skip
        pending: list[np.ndarray] = []
        last_commit = time.monotonic()

        def commit() -> None:
            if not pending:
                return
            for a in arrays.values():
                a.flush()
            done[np.concatenate(pending)] = 1
            done.flush()
            pending.clear()

        try:
            with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
                for start in range(0, len(todo), batch_size):
                    idx = todo[start : start + batch_size]
                    for name, value in self.predict_rows(idx, pool).items():
                        arrays[name][idx] = value
                    pending.append(idx)
                    bar.update(len(idx))
                    if time.monotonic() - last_commit >= commit_seconds:
                        commit()
                        last_commit = time.monotonic()
        finally:
            commit()
            bar.close()

    def pose_images(self, idx: np.ndarray, pool: ThreadPoolExecutor) -> np.ndarray:
        """What the backend sees: the original images resized to its input, or the store's images."""
        if self.input_hw is None:
            return self.store.read_batch(idx)
        return np.stack(list(pool.map(lambda i: source_image(self.store, int(i), self.input_hw), idx)))

    def predict_rows(self, idx: np.ndarray, pool: ThreadPoolExecutor) -> dict[str, np.ndarray]:
        """Heatmaps, scales, keypoints and part centres of the images at ``idx``, in the store image's
        frame; part validity is left to ``_finish`` (it depends on the threshold only)."""
        store, backend = self.store, self.backend
        images = self.pose_images(idx, pool)
        info = BatchInfo(relpaths=[store.relpaths[i] for i in idx], source_hw=store.source_hw[idx], root=store.root)
        out = backend.predict(images, info)
        b = len(idx)
        hm = np.asarray(out.heatmaps, np.float32)
        kp = np.asarray(out.keypoints, np.float32)
        if hm.ndim != 4 or hm.shape[:2] != (b, len(COCO17)) or kp.shape != (b, len(COCO17), 3):
            raise KglfrError(
                f"pose backend {backend.name!r} returned heatmaps {hm.shape} and keypoints {kp.shape} for {b} "
                "images; expected B x 17 x h x w and B x 17 x 3"
            )
        hm = np.nan_to_num(hm, nan=0.0, posinf=1.0, neginf=0.0)
        kp = np.nan_to_num(kp, nan=0.0)
        if self.input_hw is not None:  # input pixels -> store pixels (the heatmaps span the frame either way)
            kp[..., 0] *= np.float32(store.size[1] / self.input_hw[1])
            kp[..., 1] *= np.float32(store.size[0] / self.input_hw[0])
        maps13 = coco_to_13_heatmaps(hm, self.head)
        q, scales = quantise(resize_maps(maps13, self.hw))
        kp13 = coco_to_13_keypoints(kp, self.head_point)
        centres, _ = part_centres(kp13)
        return {"heatmaps": q, "scales": scales, "coords": kp13, "parts": centres}


def source_image(store: Store, i: int, input_hw: tuple[int, int]) -> np.ndarray:
    """Image ``i`` of ``store`` decoded from its source file (as ``prepare`` decoded it) and resized to
    ``input_hw``; ``KglfrError`` in one line when the file is missing, changed or unreadable."""
    path = store.root / store.relpaths[i]
    cols = store.manifest["records"]
    redo = f"prepare the store again ('kglfr prepare ... --out {store.path}'), then re-run 'kglfr keypoints'"
    try:
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (cols["size"][i], cols["mtime_ns"][i]):
            raise KglfrError(f"source image {path} changed since store {store.path} was prepared; {redo}")
        image = decode_image(path, store.value_range)
    except (OSError, ValueError) as e:
        raise KglfrError(
            f"cannot read source image {path} ({getattr(e, 'strerror', None) or e}); keypoints are computed "
            f"from the original images: restore it, or {redo}"
        ) from None
    return resize(image, int(input_hw[0]), int(input_hw[1]))


def _allocate_files(folder: Path, n: int, hw: tuple[int, int], want: dict) -> None:
    """Start a new cache: ``meta.json`` marked incomplete and zeroed data files with their disk space
    reserved (a full disk is refused here, saying how much is needed, and leaves no files behind)."""
    files = [folder / a.file for a in _arrays(hw).values()] + [folder / "done.u8"]
    replaced = sum(p.stat().st_size for p in files if p.is_file())
    try:
        check_free_space(folder, max(n * bytes_per_image(hw) - replaced, 0), f"the keypoint cache of {n} images")
    except KglfrError:
        _remove_if_empty(folder)
        raise
    (folder / "done.u8").unlink(missing_ok=True)
    (folder / SUMMARY).unlink(missing_ok=True)
    write_json_atomic(folder / META, {**want, "complete": False, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    try:
        for a in _arrays(hw).values():
            allocate(folder / a.file, n * np.dtype(a.dtype).itemsize * int(np.prod(a.shape)),
                     f"the keypoint cache of {n} images")  # fmt: skip
        allocate(folder / "done.u8", n, f"the keypoint cache of {n} images")
    except BaseException:
        for p in [*files, folder / META]:
            p.unlink(missing_ok=True)
        _remove_if_empty(folder)
        raise


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: another file is there
        folder.rmdir()


def _finish(store: Store, folder: Path, meta: dict) -> tuple[KeypointCache, dict]:
    """Part validity from the cached keypoints at ``meta["threshold"]`` (computed here only, for every image,
    so a resumed run needs nothing else), the summary, the checksum, and ``meta.json`` marked complete
    (last, atomically)."""
    hw = tuple(meta["heatmap_hw"])
    arrays = _memmaps(folder, len(store), hw, "r+")
    valid = np.asarray(part_centres(np.asarray(arrays["coords"]), meta["threshold"])[1])
    arrays["part_valid"][:] = valid
    arrays["part_valid"].flush()
    arrays.clear()  # close the write maps before the checksum reads the files
    summary = summarise(valid, store.modalities, meta["backend"], meta["threshold"])
    write_json_atomic(folder / SUMMARY, summary)
    meta = {**meta, "complete": True, "checksum": _checksum(folder, hw),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    write_json_atomic(folder / META, meta)
    return KeypointCache.open(store, meta["backend"], meta["identity"], verify=False), summary


def _rethreshold(store: Store, folder: Path, meta: dict, threshold: float) -> BuildResult:
    """Only the confidence threshold changed: recompute part validity from the cached keypoints, no backend
    run. The cache is marked incomplete meanwhile; an interruption is finished by the next run."""
    log.info("keypoint cache %s: recomputing part validity at threshold %g (was %g)", folder, threshold,
             meta["threshold"])  # fmt: skip
    meta = {**meta, "threshold": threshold, "complete": False}
    write_json_atomic(folder / META, meta)
    cache, summary = _finish(store, folder, meta)
    return BuildResult(cache, summary, 0, False)


def summarise(part_valid: np.ndarray, modalities: np.ndarray, backend: str, threshold: float) -> dict:
    """Per modality: image count, images with each part valid, images with no valid part."""
    out: dict = {"backend": backend, "threshold": threshold, "parts": list(PARTS), "modalities": {}}
    for mod in Modality:
        rows = part_valid[np.asarray(modalities) == int(mod)]
        out["modalities"][mod.short] = {
            "images": len(rows),
            "part_valid": {p: int(c) for p, c in zip(PARTS, rows.sum(0).tolist())} if len(rows) else
            dict.fromkeys(PARTS, 0),
            "no_person": int((~rows.any(1)).sum()) if len(rows) else 0,
        }  # fmt: skip
    return out


def format_summary(summary: dict) -> str:
    """The summary as a table: one row per part, one column per modality (count and share)."""
    mods = summary["modalities"]
    names = list(mods)
    head = f"{'part':<16}" + "".join(f"{m + ' (' + str(mods[m]['images']) + ')':>20}" for m in names)

    def cell(count: int, total: int) -> str:
        return f"{count:>11d} {100 * count / total:6.1f}%" if total else f"{count:>11d}     - "

    lines = [head]
    for p in summary["parts"]:
        lines.append(f"{p:<16}" + "".join(f"{cell(mods[m]['part_valid'][p], mods[m]['images']):>20}" for m in names))
    lines.append(f"{'no person found':<16}" + "".join(f"{cell(mods[m]['no_person'], mods[m]['images']):>20}"
                                                       for m in names))  # fmt: skip
    return "\n".join(lines)
