"""Building the keypoint cache: a pose backend run once over every image of a prepared store.

:func:`build_cache` writes ``STORE/keypoints/BACKEND/`` in the format :mod:`kglfr.keypoints.cache`
describes and reads: each ORIGINAL image (or the store's images, for a backend without pixels) goes
through the backend, its keypoints are scaled into the store's frame, and rows are flushed to memory maps
and only then marked done, so an interrupted run resumes where it stopped. It holds the store's lock
(``kglfr.io.folder_lock``, shared with ``prepare_store``), reuses an up-to-date cache, rebuilds a damaged
or stale one, and re-thresholds part validity without running the backend again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kglfr.data.images import decode_image
from kglfr.data.records import Modality
from kglfr.data.store import Store, resize
from kglfr.errors import KglfrError, StoreError
from kglfr.io import allocate, check_free_space, folder_lock, not_a_file, write_json_atomic
from kglfr.keypoints.backends.base import COCO17, BatchInfo, PoseBackend, build_backend
from kglfr.keypoints.cache import (
    DEFAULT_HEATMAP_HW,
    FORMAT,
    MAX_BYTES_PER_IMAGE,
    META,
    STORE_IMAGES,
    SUMMARY,
    VERSION,
    KeypointCache,
    array_specs,
    bytes_per_image,
    cache_folder,
    checksum,
    files_ok,
    memmaps,
    migrate_legacy,
    open_store,
    partial_folder,
    read_meta,
    store_key,
)
from kglfr.keypoints.heatmaps import quantise, resize_maps
from kglfr.keypoints.skeleton import (
    KEYPOINTS,
    PARTS,
    VALID_THRESHOLD,
    coco_to_13_heatmaps,
    coco_to_13_keypoints,
    part_centres,
)

log = logging.getLogger(__name__)


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
        raise KglfrError(not_a_file(Path(weights).expanduser(), "weights file"))
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
    store = open_store(store)
    hw = _check_build_options(store, heatmap_size, batch_size, threshold)
    input_hw = backend.pose_input_hw(store.size)
    if input_hw is not None and not store.root.is_dir():
        raise KglfrError(
            f"the source images of store {store.path} are not at {store.root}; keypoints are computed from the "
            "original images: put the dataset back there, or prepare the store again from where it is"
        )
    want = _wanted_meta(store, backend, hw, head, head_point, threshold, input_hw)
    with folder_lock(store.path, "store"):
        migrate_legacy(store)
        folder, partial = cache_folder(store, backend.name), partial_folder(store, backend.name)
        _recover_swap(folder, partial)
        found = _reuse_or_start(store, folder, want, force)
        if isinstance(found, BuildResult):
            return found
        meta, resumed = found
        done = np.memmap(partial / "done.u8", dtype=np.uint8, mode="r+", shape=(len(store),))
        todo = np.flatnonzero(done == 0)[:max_images]
        if resumed:
            log.info("resuming keypoint cache %s: %d of %d images left", folder, len(todo), len(store))
        run = _Run(store, backend, hw, head, head_point, input_hw)
        run.fill(memmaps(partial, len(store), hw, "r+"), done, todo, batch_size, progress, commit_seconds)
        if not done.all():  # stopped early on purpose (max_images)
            return BuildResult(None, {}, len(todo), resumed)
        del done
        cache, summary = _finish(store, partial, meta, folder)
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
    meta of the build to do in the partial folder beside it and whether it resumes an interrupted one
    (new files are allocated there if not). The cache in ``folder`` is left as it is until then."""
    n, hw, threshold = want["count"], tuple(want["heatmap_hw"]), want["threshold"]
    old = read_meta(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    if old is not None and not old.get("complete") and not partial.exists():
        os.replace(folder, partial)  # an interrupted in-place build of an older kglfr: resume it beside
        old = None
    same_but_threshold = old is not None and all(old.get(k) == v for k, v in want.items() if k != "threshold")
    if same_but_threshold and old.get("complete") and files_ok(folder, n, hw) and not force:
        # both shortcuts reuse the cached data: only if they are intact (one read of the files)
        if checksum(folder, hw) == old.get("checksum"):
            if old.get("threshold") != threshold:
                return _rethreshold(store, folder, old, threshold)
            log.info("keypoint cache %s is up to date (%s); force=True rebuilds it", folder, want["backend"])
            cache = KeypointCache.open(store, want["backend"], want["identity"], verify=False)
            return BuildResult(cache, cache.summary(), 0, False)
        log.warning("keypoint cache %s is damaged (checksum mismatch); rebuilding it", folder)
    building = read_meta(partial)
    if building is not None and not force and files_ok(partial, n, hw) and \
            all(building.get(k) == v for k, v in want.items()):  # fmt: skip
        return building, True  # an interrupted build with these settings
    if old is not None:
        log.info("building a new keypoint cache beside %s (%s, %s), which is kept until the new one is complete",
                 folder, old.get("backend"), old.get("identity"))  # fmt: skip
    _allocate_files(partial, n, hw, want)
    return read_meta(partial), False


def _recover_swap(folder: Path, partial: Path) -> None:
    """Finish a swap that stopped between its two renames (``folder`` gone, the old cache aside)."""
    old = folder.with_name(f".{folder.name}.old")
    if old.exists() and not folder.exists():
        done = (read_meta(partial) or {}).get("complete")
        os.replace(partial if done else old, folder)
        log.warning("recovered keypoint cache %s after an interrupted replacement", folder)
    shutil.rmtree(old, ignore_errors=True)


def _swap_in(partial: Path, folder: Path) -> None:
    """Rename the complete cache in ``partial`` onto ``folder``. A training reading the old cache keeps its
    memory maps of the old files (renamed, then unlinked: never rewritten), so it goes on unchanged."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(partial, folder)
    shutil.rmtree(old, ignore_errors=True)


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
    """Start a new cache in ``folder`` (the partial one, emptied first): ``meta.json`` marked incomplete and
    zeroed data files with their disk space reserved (a full disk is refused here, saying how much is
    needed, and leaves no files behind)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        check_free_space(folder, n * bytes_per_image(hw), f"the keypoint cache of {n} images")
        write_json_atomic(folder / META, {**want, "complete": False, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        for a in array_specs(hw).values():
            allocate(folder / a.file, n * np.dtype(a.dtype).itemsize * int(np.prod(a.shape)),
                     f"the keypoint cache of {n} images")  # fmt: skip
        allocate(folder / "done.u8", n, f"the keypoint cache of {n} images")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _finish(store: Store, partial: Path, meta: dict, folder: Path) -> tuple[KeypointCache, dict]:
    """Part validity from the cached keypoints at ``meta["threshold"]`` (computed here only, for every image,
    so a resumed run needs nothing else), the summary, the checksum, ``meta.json`` marked complete (last,
    atomically), then the cache in ``partial`` renamed onto ``folder``."""
    hw = tuple(meta["heatmap_hw"])
    arrays = memmaps(partial, len(store), hw, "r+")
    valid = np.asarray(part_centres(np.asarray(arrays["coords"]), meta["threshold"])[1])
    arrays["part_valid"][:] = valid
    arrays["part_valid"].flush()
    arrays.clear()  # close the write maps before the checksum reads the files
    summary = summarise(valid, store.modalities, meta["backend"], meta["threshold"])
    write_json_atomic(partial / SUMMARY, summary)
    meta = {**meta, "complete": True, "checksum": checksum(partial, hw),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    write_json_atomic(partial / META, meta)
    _swap_in(partial, folder)
    log.info("keypoint cache %s complete (%s, %s)", folder, meta["backend"], meta["identity"])
    return KeypointCache.open(store, meta["backend"], meta["identity"], verify=False), summary


def _rethreshold(store: Store, folder: Path, meta: dict, threshold: float) -> BuildResult:
    """Only the confidence threshold changed: recompute part validity from the cached keypoints, no backend
    run, in a copy of the cache (its data files hard-linked, never written) swapped in when done."""
    log.info("keypoint cache %s: recomputing part validity at threshold %g (was %g)", folder, threshold,
             meta["threshold"])  # fmt: skip
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    written = (array_specs(tuple(meta["heatmap_hw"]))["part_valid"].file, META, SUMMARY)
    for p in (p for p in folder.iterdir() if p.is_file()):
        try:
            if p.name in written:
                raise OSError("copied: this file is rewritten")
            os.link(p, partial / p.name)
        except OSError:
            shutil.copy2(p, partial / p.name)
    meta = {**meta, "threshold": threshold, "complete": False}
    write_json_atomic(partial / META, meta)
    cache, summary = _finish(store, partial, meta, folder)
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
