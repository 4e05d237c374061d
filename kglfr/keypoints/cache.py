"""The keypoint cache: the 13 heatmaps, keypoints and part centres of every image of a prepared store;
its format and its reader (:class:`KeypointCache`). :mod:`kglfr.keypoints.build` writes it.

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
and moved into its backend's folder by the next ``build_cache``. ``KeypointCache.open`` refuses a cache
that is stale, incomplete, of another backend or damaged (sizes, checksum), saying to re-run ``kglfr
keypoints``. ``build_cache`` (:mod:`kglfr.keypoints.build`) holds the store's lock (``kglfr.io.folder_lock``,
shared with ``prepare_store``) while it runs. An interrupted run resumes where it stopped: the data are
written into memory maps, flushed, and only then marked in ``done.u8``; ``meta.json`` is always replaced
atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kglfr.data.store import Store
from kglfr.errors import KglfrError
from kglfr.keypoints.heatmaps import dequantise
from kglfr.keypoints.skeleton import (
    NUM_KEYPOINTS,
    NUM_PARTS,
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


def array_specs(hw: tuple[int, int]) -> dict[str, _Array]:
    return {
        "heatmaps": _Array("heatmaps.u8", "uint8", (NUM_KEYPOINTS, *hw)),
        "scales": _Array("scales.f32", "float32", (NUM_KEYPOINTS,)),
        "coords": _Array("coords.f32", "float32", (NUM_KEYPOINTS, 3)),
        "parts": _Array("parts.f32", "float32", (NUM_PARTS, 2)),
        "part_valid": _Array("valid.u8", "uint8", (NUM_PARTS,)),
    }


def bytes_per_image(heatmap_hw: tuple[int, int]) -> int:
    """Bytes one image takes in the cache, ``done`` flag included."""
    return sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in array_specs(heatmap_hw).values()) + 1


def store_key(store: Store) -> str:
    """What the cache must match: the store's source fingerprint, its image list and its image size."""
    h = hashlib.sha1()
    h.update(f"{store.manifest.get('fingerprint')}\0{len(store)}\0{store.size[0]}x{store.size[1]}\n".encode())
    for rel in store.relpaths:
        h.update(rel.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def cache_folder(store: Store, backend: str) -> Path:
    """The folder of ``backend``'s cache in ``store``: ``STORE/keypoints/BACKEND``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", backend):
        raise KglfrError(f"pose backend name {backend!r} cannot name a cache folder; use letters, digits, _ . -")
    return store.path / FOLDER / backend


def partial_folder(store: Store, backend: str) -> Path:
    """Where ``build_cache`` builds ``backend``'s cache (``STORE/keypoints/.BACKEND.partial``) before it
    renames it onto :func:`cache_folder`: the cache a training reads never changes under it."""
    return cache_folder(store, backend).with_name(f".{backend}.partial")


def _cache_dirs(root: Path) -> list[Path]:
    """The backends' cache folders under ``root`` (hidden ones, caches being built, left out)."""
    if not root.is_dir():
        return []
    return [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / META).is_file()]


def cache_backends(store: Store) -> list[str]:
    """The backends with a keypoint cache (complete or not) in ``store``, sorted."""
    root = store.path / FOLDER
    names = {d.name for d in _cache_dirs(root)}
    if (root / META).is_file():  # an old single-folder cache
        names.add(str((read_meta(root) or {}).get("backend", "unknown")))
    return sorted(names)


def _find_folder(store: Store, backend: str | None) -> Path | None:
    """The cache folder ``KeypointCache.open`` reads: ``backend``'s, or the only / most recently
    finished one; None if the store has none."""
    root = store.path / FOLDER
    if (root / META).is_file():  # written before caches were kept per backend: read in place
        meta = read_meta(root)
        if backend is None or (meta or {}).get("backend") == backend:
            return root
    if backend is not None:
        folder = cache_folder(store, backend)
        return folder if (folder / META).is_file() else None
    found = _cache_dirs(root)
    if not found:
        return None
    complete = [d for d in found if (read_meta(d) or {}).get("complete")] or found
    pick = max(complete, key=lambda d: ((d / META).stat().st_mtime_ns, d.name))
    if len(complete) > 1:
        log.info("store %s has keypoint caches of %s; using %s, the most recent (choose one: data.keypoints=NAME "
                 "to train, --keypoints NAME in kglfr viz keypoints)",
                 store.path, ", ".join(sorted(d.name for d in complete)), pick.name)  # fmt: skip
    return pick


def _building(store: Store) -> str | None:
    """The backend of a cache being built (or interrupted while built) in ``store``, if any."""
    root = store.path / FOLDER
    found = sorted(d for d in root.iterdir() if d.name.endswith(".partial") and (d / META).is_file()) \
        if root.is_dir() else []  # fmt: skip
    return str((read_meta(found[0]) or {}).get("backend") or "") or None if found else None


def migrate_legacy(store: Store) -> None:
    """Move an old single-folder cache (files directly in ``STORE/keypoints``) into its backend's folder;
    ``meta.json`` last, so an interrupted move is finished by the next call."""
    root = store.path / FOLDER
    if not (root / META).is_file():
        return
    name = str((read_meta(root) or {}).get("backend") or "unknown")
    try:
        target = cache_folder(store, name)
    except KglfrError:
        target = root / "unknown"
    target.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in root.iterdir() if p.is_file()), key=lambda p: p.name == META)
    for p in files:
        os.replace(p, target / p.name)
    log.info("moved the keypoint cache of %s into %s (caches are now kept per backend)", name, target)


def open_store(store: Store | str | Path) -> Store:
    return store if isinstance(store, Store) else Store.open(store)


def _rerun(store: Store, backend: str | None = None) -> str:
    return f"re-run 'kglfr keypoints --store {store.path} --backend {backend or 'hrnet|blazepose|oracle'}'"


def read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def checksum(folder: Path, hw: tuple[int, int]) -> str:
    h = hashlib.sha1()
    for a in array_specs(hw).values():
        with open(folder / a.file, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def files_ok(folder: Path, n: int, hw: tuple[int, int], with_done: bool = True) -> bool:
    for a in array_specs(hw).values():
        p = folder / a.file
        if not p.is_file() or p.stat().st_size != n * np.dtype(a.dtype).itemsize * int(np.prod(a.shape)):
            return False
    return not with_done or ((folder / "done.u8").is_file() and (folder / "done.u8").stat().st_size == n)


def memmaps(folder: Path, n: int, hw: tuple[int, int], mode: str) -> dict[str, np.ndarray]:
    out = {}
    for name, a in array_specs(hw).items():
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
        building = backend if backend is not None and (partial_folder(store, backend) / META).is_file() else None
        building = building or (None if backend is not None or others else _building(store))
        if building:
            raise KglfrError(f"the keypoint cache of store {store.path} is incomplete (an interrupted run); "
                             f"{_rerun(store, building)} to finish it")  # fmt: skip
        if backend is not None and others:
            raise KglfrError(
                f"store {store.path} has no keypoint cache of backend {backend!r} (it has {', '.join(others)}); "
                f"run 'kglfr keypoints --store {store.path} --backend {backend}'"
            )
        raise KglfrError(f"store {store.path} has no keypoint cache; run 'kglfr keypoints --store {store.path} "
                         f"--backend {backend or 'hrnet|blazepose|oracle'}'")  # fmt: skip
    meta = read_meta(folder)
    if meta is None or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        named = backend or (folder.name if folder.name != FOLDER else (meta or {}).get("backend"))
        raise KglfrError(f"keypoint cache {folder} is damaged or of another version; {_rerun(store, named)}")
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
        store = open_store(store)
        folder, meta = _checked_meta(store, backend, identity)
        rerun = _rerun(store, backend or meta.get("backend"))
        n = len(store)
        hw = tuple(meta["heatmap_hw"])
        if not files_ok(folder, n, hw, with_done=False):
            raise KglfrError(f"keypoint cache {folder} is damaged (a data file is missing or of the wrong size); "
                             f"{rerun}")  # fmt: skip
        if verify and checksum(folder, hw) != meta.get("checksum"):
            raise KglfrError(f"keypoint cache {folder} is damaged (checksum mismatch); {rerun}")
        arrays = memmaps(folder, n, hw, "r")
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
