"""The prepared store: every image decoded once, resized, kept as uint8 in one memory-mapped file.

Layout of a store folder::

    manifest.json   what was prepared: dataset, source root, size, one entry per image
    images.u8       N x H x W x 3 uint8 RGB, C order, memory-mapped
    keypoints/      added by ``kglfr keypoints``: one folder per pose backend (heatmaps, part centres)

Each manifest entry keeps the source file's size and mtime, so a store whose dataset changed is
detected and refused. Training reads batches from here, never from JPEGs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from kglfr.data.datasets.base import VIDataset
from kglfr.data.images import DECODER_VERSION, check_value_range, decode_image
from kglfr.data.records import SPLITS, ImageRecord, Modality
from kglfr.errors import StoreError
from kglfr.io import LOCK_FILE, LockedError, allocate, folder_lock, write_json_atomic

log = logging.getLogger(__name__)

FORMAT = "kglfr-store"
VERSION = 1
MANIFEST = "manifest.json"
PIXELS = "images.u8"
REQUIRED_KEYS = ("dataset", "root", "trial", "height", "width", "count", "records", "trial_splits", "skipped")
MAX_SIDE = 2048  # largest stored image height or width
RECORD_KEYS = ("relpath", "pid", "camera", "modality", "source_hw", "size", "mtime_ns")


@dataclass(frozen=True)
class BadImage:
    relpath: str
    reason: str


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interp = cv2.INTER_AREA if h * w > height * width else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def listing_fingerprint(relpaths: Sequence[str], stats: Sequence[tuple[int, int]]) -> str:
    h = hashlib.sha1()
    for rel, (size, mtime) in zip(relpaths, stats, strict=True):
        h.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))  # undecodable file names
    return h.hexdigest()


class Store:
    """A prepared store opened for reading. ``images`` is an N x H x W x 3 uint8 memory map."""

    def __init__(self, path: Path, manifest: dict, images: np.ndarray):
        self.path = path
        self.manifest = manifest
        self.images = images
        cols = manifest["records"]
        self.relpaths: list[str] = cols["relpath"]
        self.pids = np.asarray(cols["pid"], dtype=np.int64)
        self.cameras = np.asarray(cols["camera"], dtype=np.int64)
        self.modalities = np.asarray(cols["modality"], dtype=np.int64)
        self.source_hw = np.asarray(cols["source_hw"], dtype=np.int64).reshape(-1, 2)

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, check_sources: bool = True) -> Store:
        """Open a store; with ``check_sources`` refuse it if its source images changed."""
        path = Path(path).expanduser()
        manifest = _read_manifest(path)
        n, h, w = int(manifest["count"]), int(manifest["height"]), int(manifest["width"])
        pixels = path / PIXELS
        expected = n * h * w * 3
        if not pixels.is_file() or pixels.stat().st_size != expected:
            got = pixels.stat().st_size if pixels.is_file() else "no"
            raise StoreError(
                f"{pixels} holds {got} bytes, expected {expected} for {n} images of {h}x{w}; the store is damaged: "
                "rebuild it with 'kglfr prepare --force' and the same options (without --force, prepare "
                "finds the store up to date and keeps it)"
            )
        images = (
            np.memmap(pixels, dtype=np.uint8, mode="r", shape=(n, h, w, 3)) if n else np.zeros((0, h, w, 3), np.uint8)
        )
        try:
            store = cls(path, manifest, images)
        except (TypeError, ValueError) as e:  # e.g. a pid that is not an integer
            raise StoreError(
                f"{path / MANIFEST} is damaged ({e}); rebuild the store with 'kglfr prepare --force'"
            ) from None
        if check_sources:
            store.check_sources()
        return store

    # -- metadata --------------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The fixed range high bit-depth images were scaled from; None: per image, min-max."""
        got = self.manifest.get("value_range")
        return (float(got[0]), float(got[1])) if got else None

    @property
    def size(self) -> tuple[int, int]:
        return self.manifest["height"], self.manifest["width"]

    def __len__(self) -> int:
        return self.manifest["count"]

    @property
    def trials(self) -> list[int]:
        return sorted(int(t) for t in self.manifest["trial_splits"])

    def splits(self, trial: int | None = None) -> np.ndarray:
        """The split ("train"/"test") of every image for ``trial`` (default: the prepared one)."""
        trial = self.manifest["trial"] if trial is None else trial
        table = self.manifest["trial_splits"]
        if str(trial) not in table:
            raise StoreError(f"store {self.path} has no trial {trial}; it has {self.trials}")
        return np.asarray(table[str(trial)])

    def records(self, trial: int | None = None) -> list[ImageRecord]:
        splits = self.splits(trial)
        return [
            ImageRecord(rel, int(p), int(c), Modality(int(m)), str(s))
            for rel, p, c, m, s in zip(self.relpaths, self.pids, self.cameras, self.modalities, splits)
        ]

    def indices(self, split: str, trial: int | None = None, modality: Modality | None = None) -> np.ndarray:
        mask = self.splits(trial) == split
        if modality is not None:
            mask &= self.modalities == int(modality)
        return np.flatnonzero(mask)

    # -- pixels ----------------------------------------------------------------------------------
    def read_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Copy the images at ``indices`` (in that order) out of the memory map: B x H x W x 3 uint8."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # read the file front to back
        out = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        out[order] = self.images[idx[order]]
        return out

    # -- staleness -------------------------------------------------------------------------------
    def check_sources(self) -> None:
        """Refuse the store if a source image changed or vanished since ``prepare``.

        A store whose source root is gone entirely (moved to another machine) is used as it is,
        with a warning: it is self-contained.
        """
        root = self.root
        if not root.is_dir():
            log.warning("source dataset %s not found; using store %s as prepared", root, self.path)
            return
        cols = self.manifest["records"]
        changed = []
        for rel, size, mtime in zip(cols["relpath"], cols["size"], cols["mtime_ns"]):
            try:
                if _stat(root / rel) != (size, mtime):
                    changed.append(rel)
            except FileNotFoundError:
                changed.append(rel)
        if changed:
            raise StoreError(
                f"store {self.path} is stale: {len(changed)} source images changed or vanished since it was "
                f"prepared (e.g. {changed[0]}); re-run 'kglfr prepare' with the same options to update it"
            )


def _read_manifest(path: Path) -> dict:
    """The checked manifest of the store at ``path``; ``StoreError`` saying what to do when it is damaged."""
    manifest_path = path / MANIFEST
    if path.exists() and not path.is_dir():
        raise StoreError(f"store {path} is a file; a store is the folder 'kglfr prepare --out' made")
    if not path.is_dir():
        raise StoreError(f"store {path} does not exist; create it with 'kglfr prepare --out {path} ...'")
    if not manifest_path.is_file():
        raise StoreError(f"{path} is not a prepared store (no {MANIFEST}); create it with 'kglfr prepare'")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{manifest_path} is damaged ({e}); re-run 'kglfr prepare --force'") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        got = manifest if isinstance(manifest, dict) else {}
        raise StoreError(
            f"{path} is a store of another format or version "
            f"({got.get('format')} v{got.get('version')}); re-run 'kglfr prepare --force'"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest] or [
        f"records.{k}" for k in RECORD_KEYS if k not in manifest["records"]
    ]
    if missing:
        raise StoreError(f"{manifest_path} is damaged (no {', '.join(missing)}); re-run 'kglfr prepare --force'")
    n = int(manifest["count"])
    columns = {f"records.{k}": manifest["records"][k] for k in RECORD_KEYS}
    columns.update({f"trial_splits.{t}": v for t, v in manifest["trial_splits"].items()})
    short = [f"{k} has {len(v) if isinstance(v, list) else 'no list'}" for k, v in columns.items()
             if not isinstance(v, list) or len(v) != n]  # fmt: skip
    if short:
        raise StoreError(
            f"{manifest_path} is damaged (count is {n} but {', '.join(short[:3])}"
            f"{' ...' if len(short) > 3 else ''}); re-run 'kglfr prepare --force'"
        )
    bad = _bad_record(manifest)
    if bad:
        raise StoreError(f"{manifest_path} is damaged ({bad}); re-run 'kglfr prepare --force' with the same options")
    return manifest


def _first_bad(name: str, values: list, ok, rule: str) -> str | None:
    """``"NAME[i] is V (RULE)"`` for the first value ``ok`` refuses, or None."""
    for i, v in enumerate(values):
        if not ok(v):
            return f"{name}[{i}] is {v!r} ({rule})"
    return None


def _only(values: list, allowed: Sequence) -> bool:
    """Whether every value is one of ``allowed`` (a quick pass before the one naming the first bad value)."""
    try:
        return set(values) <= set(allowed)
    except TypeError:  # an unhashable value (a list): not allowed
        return False


def _bad_record(manifest: dict) -> str | None:
    """What is wrong with a manifest's values (image size, modality, split, camera, pid, source size), checked
    when a store opens, so that training never starts on records it would misread; None if nothing."""

    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for key in ("height", "width"):
        if not whole(manifest[key]) or not 1 <= manifest[key] <= MAX_SIDE:
            return f"{key} is {manifest[key]!r} (must be 1..{MAX_SIDE})"
    cols = manifest["records"]
    checks = [
        ("records.modality", cols["modality"], lambda v: whole(v) and v in (0, 1), "must be 0 visible or 1 infrared"),
        ("records.camera", cols["camera"], lambda v: whole(v) and v >= 0, "must be a whole number >= 0"),
        ("records.pid", cols["pid"], whole, "must be a whole number"),
        ("records.relpath", cols["relpath"], lambda v: isinstance(v, str) and v != "", "must be a file name"),
        ("records.source_hw", cols["source_hw"], lambda v: isinstance(v, list) and len(v) == 2 and all(
            whole(x) and x >= 1 for x in v), "must be [height, width] of the source image"),
    ]  # fmt: skip
    checks += [(f"trial_splits.{t}", v, lambda s: isinstance(s, str) and s in SPLITS,
                f"must be one of {', '.join(SPLITS)}") for t, v in manifest["trial_splits"].items()
               if not _only(v, SPLITS)]  # fmt: skip
    for name, values, ok, rule in checks:
        bad = _first_bad(name, values, ok, rule)
        if bad:
            return bad
    return None


def _existing_manifest(out: Path) -> dict | None:
    """The manifest of the store at ``out``, None if nothing is there (a lock file aside); refuses a
    folder of other files, and a damaged manifest (``force=True`` rebuilds the store)."""
    if not out.exists():
        return None
    if (out / MANIFEST).is_file():
        try:
            manifest = json.loads((out / MANIFEST).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            manifest = {"error": str(e)}
        if not isinstance(manifest, dict) or "dataset" not in manifest or "root" not in manifest:
            why = manifest.get("error", "no dataset or root") if isinstance(manifest, dict) else "not an object"
            raise StoreError(f"{out / MANIFEST} is damaged ({why}); pass force=True to rebuild the store")
        return manifest
    if out.is_file() or any(p.name != LOCK_FILE for p in out.iterdir()):
        raise StoreError(f"{out} exists and is not a kglfr store; choose another out folder or remove it")
    return None


def _split_fields(dataset: VIDataset, relpaths: Sequence[str]) -> dict:
    """The manifest fields that depend on the split files, for the stored images ``relpaths``."""
    row = {r.relpath: i for i, r in enumerate(dataset.records)}
    splits = dataset.trial_splits or {dataset.trial: [r.split for r in dataset.records]}
    return {
        "trial": dataset.trial,
        "trial_splits": {str(t): [s[row[rel]] for rel in relpaths] for t, s in splits.items()},
    }


def _reuse(out: Path, manifest: dict, dataset: VIDataset) -> Store:
    """Reuse a store whose pixels are up to date; if only the split changed (split files, options,
    trial), rewrite the manifest's split fields and keep the pixels and the keypoint cache."""
    fields = _split_fields(dataset, manifest["records"]["relpath"])
    if all(manifest.get(k) == v for k, v in fields.items()):
        log.info("store %s is up to date (%d images); force=True rebuilds it", out, manifest["count"])
    else:
        write_json_atomic(out / MANIFEST, {**manifest, **fields})
        log.info("store %s: pixels up to date, split updated from the dataset's split files/options", out)
    return Store.open(out, check_sources=False)  # the fingerprint was just checked


def _swap_in(partial: Path, out: Path) -> None:
    """Move a finished store into place. A keypoint cache of the old store is carried over: it checks
    its own key against the new store when opened, and is refused there if it no longer fits. The lock
    file moves first, so the lock held on it stays on the store at ``out``."""
    if not out.exists():
        os.replace(partial, out)
        return
    for name in (LOCK_FILE, "keypoints"):
        if (out / name).exists():
            os.replace(out / name, partial / name)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)


def _source_stats(dataset: VIDataset) -> list[tuple[int, int]]:
    stats = []
    for r in dataset.records:
        try:
            stats.append(_stat(r.path(dataset.root)))
        except FileNotFoundError:
            stats.append((-1, -1))
    return stats


def _fingerprint(dataset: VIDataset, stats: list, height: int, width: int, value_range: tuple | None) -> str:
    """What makes the pixels up to date: the source listing, the size, the decoder and the value range."""
    fingerprint = listing_fingerprint([r.relpath for r in dataset.records], stats) + f":{height}x{width}"
    fingerprint += f":decoder{DECODER_VERSION}"
    return fingerprint + (f":range={value_range[0]:g},{value_range[1]:g}" if value_range else "")


def prepare_store(
    dataset: VIDataset,
    out: str | Path,
    height: int = 288,
    width: int = 144,
    skip_bad: bool = False,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
    value_range: tuple[float, float] | None = None,
) -> tuple[Store, list[BadImage]]:
    """Decode every image of ``dataset`` once into a store at ``out``.

    The store is built in ``out.partial`` and moved into place at the end, so an interrupted run
    never leaves a half-written store behind. An up-to-date store is left alone unless ``force``.
    Corrupt images raise ``StoreError`` naming every bad file, or are skipped with ``skip_bad``.
    Images of more than 8 bits are scaled per image (min-max), or from ``value_range`` (lo, hi) to
    0..255 (``kglfr.data.images``). The store is locked while this runs: a second process preparing
    it (or building its keypoint cache) gets ``LockedError`` naming this one's pid.
    """
    out = Path(out).expanduser()
    for name, value in (("height", height), ("width", width)):
        if not 1 <= int(value) <= MAX_SIDE:
            raise StoreError(f"image {name} {value} is out of range; choose 1..{MAX_SIDE} (288x144 is the default)")
    value_range = check_value_range(value_range)
    if out.is_file() or (out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir())):
        _existing_manifest(out)  # refuses a folder of other files before the lock creates anything
    created = not out.exists()
    try:
        with folder_lock(out, "store"):
            return _prepare_locked(dataset, out, height, width, skip_bad, force, workers, progress, value_range)
    except LockedError:
        raise  # the folder is the other process's now
    except BaseException:
        if created:  # leave nothing behind where nothing was
            (out / LOCK_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _prepare_locked(
    dataset: VIDataset,
    out: Path,
    height: int,
    width: int,
    skip_bad: bool,
    force: bool,
    workers: int | None,
    progress: bool,
    value_range: tuple[float, float] | None,
) -> tuple[Store, list[BadImage]]:
    """``prepare_store``'s work, with the store locked."""
    root = dataset.root.resolve()
    stats = _source_stats(dataset)
    fingerprint = _fingerprint(dataset, stats, height, width, value_range)
    old = None if force else _existing_manifest(out)  # with force, a damaged manifest is simply replaced
    if old is not None:
        if old.get("fingerprint") == fingerprint and old.get("root") == str(root):
            return _reuse(out, old, dataset), [BadImage(**b) for b in old.get("skipped", [])]
        if (old.get("dataset"), old.get("root")) != (dataset.name, str(root)):
            raise StoreError(
                f"{out} is a store of {old.get('dataset')} at {old.get('root')}, not of {dataset.name} at {root}; "
                "choose another out folder, or pass force=True to replace it"
            )
    partial = out.with_name(out.name + ".partial")
    _recover_keypoints(partial, out)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        options = {"height": height, "width": width, "value_range": value_range}
        bad = _build(dataset, root, partial, stats, fingerprint, options, skip_bad, workers, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # no half-written store is left behind
        raise
    _swap_in(partial, out)
    return Store.open(out, check_sources=False), bad


def _recover_keypoints(partial: Path, out: Path) -> None:
    """A run that stopped between moving the old store's keypoint cache into ``partial`` and the swap
    left the cache there: move it back before ``partial`` is cleared."""
    if (partial / "keypoints").is_dir() and out.is_dir() and not (out / "keypoints").exists():
        os.replace(partial / "keypoints", out / "keypoints")
        log.warning("recovered the keypoint cache of %s from an interrupted prepare", out)


def _build(
    dataset: VIDataset,
    root: Path,
    partial: Path,
    stats: list[tuple[int, int]],
    fingerprint: str,
    options: dict,
    skip_bad: bool,
    workers: int | None,
    progress: bool,
) -> list[BadImage]:
    """Decode the images into ``partial`` and write its manifest (``prepare_store``'s work).
    ``options``: ``height``, ``width``, ``value_range``."""
    records = dataset.records
    n = len(records)
    height, width = options["height"], options["width"]
    shape = (max(n, 1), height, width, 3)
    out = partial.with_name(partial.name.removesuffix(".partial"))
    allocate(partial / PIXELS, int(np.prod(shape)), f"store {out} ({n} images of {height}x{width})")
    mm = np.memmap(partial / PIXELS, dtype=np.uint8, mode="r+", shape=shape)
    source_hw = np.zeros((n, 2), dtype=np.int64)
    t0 = time.perf_counter()
    workers = workers or min(4, os.cpu_count() or 1)
    bad = _decode_into(records, root, mm, source_hw, workers, progress, options["value_range"])
    if bad and not skip_bad:
        listing = "; ".join(f"{b.relpath} ({b.reason})" for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise StoreError(
            f"{len(bad)} unreadable image(s) in {root}: {listing}. Fix or remove them, or pass skip_bad=True"
        )
    bad_set = {b.relpath for b in bad}
    kept = np.flatnonzero([r.relpath not in bad_set for r in records]).astype(np.int64)
    _warn_tiny(records, source_hw, kept, (height, width))
    if len(kept) != n:  # compact the pixel file over the skipped images
        for dst, src in enumerate(kept):
            if dst != src:
                mm[dst] = mm[src]
    mm.flush()
    del mm
    with open(partial / PIXELS, "r+b") as f:
        f.truncate(len(kept) * height * width * 3)
    manifest = _manifest(dataset, root, kept, source_hw, stats, fingerprint, options, bad)
    write_json_atomic(partial / MANIFEST, manifest)
    dt = time.perf_counter() - t0
    log.info("prepared %d images in %.1f s (%.0f images/s)", len(kept), dt, n / max(dt, 1e-9))
    return bad


MIN_SOURCE_SIDE = 8  # a source image smaller than this on a side holds next to nothing of a person


def _warn_tiny(records: Sequence[ImageRecord], source_hw: np.ndarray, kept: np.ndarray, size: tuple[int, int]) -> None:
    """Warn about source images too small to show a person (a 1 x 1 image is stretched to the store size)."""
    tiny = [int(i) for i in kept if min(source_hw[i]) < MIN_SOURCE_SIDE]
    if tiny:
        h, w = source_hw[tiny[0]]
        log.warning("%d source images are smaller than %d pixels on a side (e.g. %s, %d x %d); they are stretched to "
                    "%d x %d and show next to nothing of a person: remove them from the dataset, or check how they "
                    "were made", len(tiny), MIN_SOURCE_SIDE, records[tiny[0]].relpath, h, w, *size)  # fmt: skip


def _manifest(dataset, root, kept, source_hw, stats, fingerprint, options, bad) -> dict:
    """The manifest of a store holding the images ``kept`` (indices into ``dataset.records``)."""
    records = dataset.records
    value_range = options["value_range"]
    return {
        "format": FORMAT,
        "version": VERSION,
        "dataset": dataset.name,
        "root": str(root),
        "trial": dataset.trial,
        "height": options["height"],
        "width": options["width"],
        "count": len(kept),
        "fingerprint": fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "value_range": list(value_range) if value_range else None,
        "records": {
            "relpath": [records[i].relpath for i in kept],
            "pid": [records[i].pid for i in kept],
            "camera": [records[i].camera for i in kept],
            "modality": [int(records[i].modality) for i in kept],
            "source_hw": source_hw[kept].tolist(),
            "size": [stats[i][0] for i in kept],
            "mtime_ns": [stats[i][1] for i in kept],
        },
        **_split_fields(dataset, [records[i].relpath for i in kept]),
        "skipped": [b.__dict__ for b in bad],
    }


def _decode_into(
    records: Sequence[ImageRecord],
    root: Path,
    out: np.ndarray,
    source_hw: np.ndarray,
    workers: int,
    progress: bool,
    value_range: tuple[float, float] | None = None,
) -> list[BadImage]:
    """Decode and resize ``records`` into ``out`` in parallel (PIL and cv2 release the GIL)."""
    height, width = out.shape[1:3]

    def load(i: int) -> str | None:
        try:
            image = decode_image(records[i].path(root), value_range)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            return f"{type(e).__name__}: {e}"
        source_hw[i] = image.shape[:2]
        out[i] = resize(image, height, width)
        return None

    bad = []
    bar = _progress(len(records), "prepare", progress)
    with ThreadPoolExecutor(workers) as pool:
        for i, err in enumerate(pool.map(load, range(len(records)), chunksize=16)):
            if err is not None:
                bad.append(BadImage(records[i].relpath, err))
            bar.update(1)
    bar.close()
    return bad


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, mininterval=1.0, dynamic_ncols=True)
