"""The one feature extractor: (model, store or images) -> features, one backbone pass per batch.

Every feature kglfr computes goes through :func:`embed_batch`: ``forward_features`` once on the batch
(once more on its mirror with ``flip``), then ``forward_head`` gives both the pooled and the BN feature.
:func:`store_features` / :func:`store_feature_set` read a store split (evaluation, ``kglfr extract
--store``, ``evaluate --worst``), :func:`embed_images` embeds images of one modality (``kglfr.load(...)
.embed``, ``kglfr search``) and :func:`folder_feature_set` an image folder (``kglfr extract --images``,
the search gallery). Images are decoded by :func:`read_image` (``kglfr.data.images.decode_image``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from kglfr.data.datasets.base import image_folder, parse_layout
from kglfr.data.images import decode_image
from kglfr.data.records import TEST, TRAIN, Modality
from kglfr.errors import KglfrError
from kglfr.eval.features import FeatureSet, check_features
from kglfr.io import not_a_file
from kglfr.model.quantize import CALIBRATION_IMAGES, Int8Model
from kglfr.runtime import input_format

log = logging.getLogger(__name__)

FEATURES = ("bn", "pool")
MODALITY_NAMES = {
    "visible": Modality.VISIBLE, "vis": Modality.VISIBLE, "rgb": Modality.VISIBLE,
    "infrared": Modality.INFRARED, "ir": Modality.INFRARED, "thermal": Modality.INFRARED, "nir": Modality.INFRARED,
}  # fmt: skip


def parse_modality(modality) -> Modality:
    """``Modality``, 0/1 or a name (visible/vis/rgb, infrared/ir/thermal/nir); one clear error otherwise."""
    if modality is None:
        raise KglfrError("no modality given: say whether the images are visible or infrared")
    if isinstance(modality, str):
        m = MODALITY_NAMES.get(modality.strip().lower())
        if m is None:
            raise KglfrError(f"unknown modality {modality!r}; use visible or infrared")
        return m
    try:
        return Modality(int(modality))
    except (ValueError, TypeError):
        raise KglfrError(f"unknown modality {modality!r}; use visible (0) or infrared (1)") from None


def read_image(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB, or a ``KglfrError`` naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KglfrError(not_a_file(path, "image"))
    try:
        return decode_image(path)  # 16-bit and float images scaled per image, as prepare does by default
    except Exception as e:  # PIL raises several types for corrupt data
        raise KglfrError(f"cannot read image {path}: not a readable image file or damaged ({type(e).__name__})"
                         ) from None  # fmt: skip


def _as_array(image) -> np.ndarray:
    a = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise KglfrError(f"an image must be H x W x 3 uint8 RGB, got {a.shape} {a.dtype}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise KglfrError(f"an image is empty ({a.shape[0]} x {a.shape[1]} pixels); give images of at least 1 x 1")
    return np.ascontiguousarray(a)


def preprocess(images, size: tuple[int, int], device: str | torch.device = "cpu") -> torch.Tensor:
    """List of arrays / paths, or a B x 3 x H x W tensor -> the normalised float batch at ``size``
    (resized as ``kglfr prepare`` does: area when shrinking, bilinear when growing)."""
    from kglfr.data.store import resize
    from kglfr.data.transforms import TestTransform

    transform = TestTransform(size)
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape) == 0:
            raise KglfrError(f"an image tensor must be B x 3 x H x W with B, H, W >= 1, got {tuple(images.shape)}")
        if images.is_floating_point() and not bool(torch.isfinite(images).all()):
            bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
            raise KglfrError(f"{bad} of {len(images)} images hold NaN or infinite values; features of them would "
                             "be NaN: check how the images were made")  # fmt: skip
        return transform(images.to(device))["images"]
    if isinstance(images, (str, Path, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
        images = [images]
    arrays = [resize(_as_array(im), *size) for im in images]
    if not arrays:
        raise KglfrError("no images to embed")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device)
    return transform(x)["images"]


@torch.no_grad()
def embed_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    modality: Modality | int | torch.Tensor,
    flip: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """{"bn", "pool"}: the two test-time features (B x C, not normalised) of a preprocessed batch from
    one backbone pass (two with ``flip``: the mirror's features are added). Uses the model's mode; the
    batch follows the model's memory format (channels_last under the runtime policy)."""
    core = getattr(model, "module", model)  # DDP
    if input_format(core) == torch.channels_last:  # else the batch's own layout, as before the policy
        x = x.contiguous(memory_format=torch.channels_last)
    pool, bn = core.forward_head(_backbone(core, x, modality, amp_dtype))
    if flip:
        fpool, fbn = core.forward_head(_backbone(core, x.flip(-1), modality, amp_dtype))
        pool, bn = pool + fpool, bn + fbn
    return {"bn": bn, "pool": pool}


def _backbone(core, x: torch.Tensor, modality, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The layer4 map, under autocast when asked, as float32: the head (GeM's cube and cube root, the BN
    neck) runs in float32, where bf16 would cost the trained model's features most of their agreement."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        return core.forward_features(x, modality).float()


def normalised(feats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """L2-normalised float32 arrays of :func:`embed_batch`'s features."""
    return {k: torch.nn.functional.normalize(v.float(), dim=1).cpu().numpy() for k, v in feats.items()}


def calibrate(model: torch.nn.Module, modality: Modality, count: int, batch_of: Callable, again: bool = False) -> None:
    """Calibrate an int8 model (:class:`~kglfr.model.quantize.Int8Model`) not yet calibrated for ``modality``
    (or ``again``) on up to ``CALIBRATION_IMAGES`` of ``count`` images, evenly spread over them
    (``batch_of(positions)`` is their preprocessed batch), so its ranges do not depend on the batch size."""
    if not isinstance(model, Int8Model) or (model.calibrated(modality) and not again) or count == 0:
        return
    pick = np.unique(np.linspace(0, count - 1, min(count, CALIBRATION_IMAGES)).round().astype(np.int64))
    model.calibrate(modality, batch_of(pick))


def calibrate_images(model: torch.nn.Module, images, modality, size: tuple[int, int], device="cpu") -> bool:
    """Calibrate an int8 model's ``modality`` backbone on ``images`` now (as :func:`embed_images` takes them),
    replacing an earlier calibration; False for a model that has nothing to calibrate."""
    if not isinstance(model, Int8Model):
        return False
    count, batch_of = image_batches(images, size, device, "no images to calibrate on")
    calibrate(model, parse_modality(modality), count, batch_of, again=True)
    return True


def image_batches(images, size: tuple[int, int], device, empty: str = "no images to embed") -> tuple[int, Callable]:
    """(how many, ``batch_of(positions)``: their preprocessed batch) of ``images`` as :func:`embed_images`
    takes them; a tensor is preprocessed once, files and arrays batch by batch. ``empty``: the error."""
    if isinstance(images, torch.Tensor):
        x = preprocess(images, size, device)
        return len(x), lambda pick: x[torch.from_numpy(np.asarray(pick))]
    if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]
    images = list(images)
    if not images:
        raise KglfrError(empty)
    return len(images), lambda pick: preprocess([images[i] for i in pick], size, device)


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="features", unit="img", disable=not progress, file=sys.stderr,
                mininterval=1.0, dynamic_ncols=True)  # fmt: skip


def store_features(
    model: torch.nn.Module,
    store,
    indices: np.ndarray,
    size: tuple[int, int],
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    flip: bool = False,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """BN and pooled features (L2-normalised, float32) of the store images at ``indices``; batches are
    grouped by modality so each runs through one stem. The model is put in eval mode meanwhile."""
    from kglfr.data.transforms import TestTransform, store_batch_to_tensor

    was_training = model.training
    model.eval()
    transform, device = TestTransform(size), torch.device(device)
    out: dict[str, np.ndarray] = {}
    mods = store.modalities[indices]
    bar = _bar(len(indices), progress)
    try:
        for m in Modality:
            pos = np.flatnonzero(mods == int(m))
            calibrate(model, m, len(pos), lambda pick, pos=pos: transform(
                store_batch_to_tensor(store.read_batch(indices[pos[pick]]), device))["images"])  # fmt: skip
            for start in range(0, len(pos), batch_size):
                sel = pos[start : start + batch_size]
                x = transform(store_batch_to_tensor(store.read_batch(indices[sel]), device))["images"]
                for k, v in normalised(embed_batch(model, x, m, flip, amp_dtype)).items():
                    out.setdefault(k, np.zeros((len(indices), v.shape[1]), np.float32))[sel] = v
                bar.update(len(sel))
    finally:
        bar.close()
        model.train(was_training)
    return {k: out[k] for k in FEATURES if k in out}


def split_indices(store, split: str = "test", trial: int | None = None) -> np.ndarray:
    """Store indices of ``split`` ("test", "train" or "all") of ``trial``; an error when there are none."""
    if split not in ("test", "train", "all"):
        raise KglfrError(f"split must be test, train or all, got {split!r}")
    indices = np.arange(len(store)) if split == "all" else store.indices(TEST if split == "test" else TRAIN, trial)
    if not len(indices):
        raise KglfrError(f"store {store.path} has no {split} images" + (f" (trial {trial})" if trial else ""))
    return indices


def feature_sets_of(store, feats: dict[str, np.ndarray], indices: np.ndarray,
                    split: str = "test") -> dict[str, FeatureSet]:  # fmt: skip
    """Validated :class:`FeatureSet` per feature kind of :func:`store_features`' output."""
    paths = np.asarray([store.relpaths[i] for i in indices])
    pids, cams, mods = store.pids[indices], store.cameras[indices], store.modalities[indices]
    return {k: check_features(v, pids, cams, paths, mods, source=f"{store.path} {split} split ({k} feature)")
            for k, v in feats.items()}  # fmt: skip


def store_feature_set(model, store, split: str = "test", which: str = "bn", flip: bool = False, batch_size: int = 64,
                      progress: bool = False, trial: int | None = None) -> FeatureSet:  # fmt: skip
    """The ``which`` features of a store split for a :class:`kglfr.api.ReIDModel`-like ``model`` (``.model``,
    ``.input_size``, ``.device``, ``.checkpoint``): the split of ``trial`` (RegDB: 1..10), by default the
    checkpoint's (``data.trial``)."""
    check_which(which)
    if trial is None:
        trial = checkpoint_trial(model)
    indices = split_indices(store, split, trial)
    feats = store_features(model.model, store, indices, model.input_size, batch_size, model.device, flip,
                           _amp(model), progress)  # fmt: skip
    return feature_sets_of(store, {which: feats[which]}, indices, split)[which]


def checkpoint_trial(model) -> int | None:
    """The trial (``data.trial``) a ReIDModel-like model was trained on; None for a store without trials."""
    return model.checkpoint.get("config", {}).get("data", {}).get("trial")


def _amp(model) -> torch.dtype | None:
    """The autocast dtype of a ReIDModel-like model's runtime policy (float32 without one)."""
    policy = getattr(model, "policy", None)
    return None if policy is None else policy.amp_dtype


def check_which(which: str) -> None:
    if which not in FEATURES:
        raise KglfrError(f"which must be 'bn' or 'pool', got {which!r}")


def embed_images(model: torch.nn.Module, images, modality, size: tuple[int, int], device="cpu",
                 which: str = "bn", flip: bool = False, batch_size: int = 64, progress: bool = False,
                 amp_dtype: torch.dtype | None = None) -> np.ndarray:  # fmt: skip
    """N x D float32 L2-normalised ``which`` features of ``images`` (all of ``modality``): a list of
    H x W x 3 uint8 RGB arrays or paths, an N x H x W x 3 uint8 array, or a B x 3 x H x W tensor."""
    check_which(which)
    m = parse_modality(modality)
    count, batch_of = image_batches(images, size, device)
    calibrate(model, m, count, batch_of)
    out: np.ndarray | None = None
    with _bar(count, progress) as bar:
        for s in range(0, count, batch_size):
            pick = np.arange(s, min(s + batch_size, count))
            f = normalised(embed_batch(model, batch_of(pick), m, flip, amp_dtype))[which]
            if out is None:
                out = np.zeros((count, f.shape[1]), np.float32)
            out[pick] = f
            bar.update(len(pick))
    return out


def folder_feature_set(model, folder, modality, which: str = "bn", flip: bool = False, batch_size: int = 64,
                       progress: bool = False, files: Sequence[Path] | None = None) -> FeatureSet:  # fmt: skip
    """Features of every image under ``folder`` (recursively) for a ReIDModel-like ``model``; pids and
    cameras from the custom layout ``<pid>/<camera>_*.jpg`` (:func:`parse_layout`), paths relative to
    ``folder``."""
    m = parse_modality(modality)
    folder = Path(folder).expanduser()
    files = image_folder(folder) if files is None else list(files)
    rel = [f.relative_to(folder).as_posix() for f in files]
    layout = [parse_layout(r) for r in rel]
    feats = embed_images(model.model, files, m, model.input_size, model.device, which, flip, batch_size, progress,
                         _amp(model))  # fmt: skip
    pids = np.asarray([p for p, _ in layout], np.int64)
    cams = np.asarray([c for _, c in layout], np.int64)
    return check_features(feats, pids, cams, np.asarray(rel), np.full(len(files), int(m), np.int64), str(folder))
