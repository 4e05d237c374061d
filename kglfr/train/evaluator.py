"""Evaluate a model on a store's test split under the dataset's published protocols.

Features of both kinds are extracted in one pass: the BN feature (the headline, as the AGW and
KGLFR papers report) and the pooled feature before the BN; each is scored with
:func:`kglfr.eval.evaluate_protocol`, so the numbers are the ones ``kglfr evaluate`` gives.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kglfr.data.records import TEST, Modality
from kglfr.data.store import Store
from kglfr.data.transforms import TestTransform, store_batch_to_tensor
from kglfr.errors import KglfrError
from kglfr.eval.features import FeatureSet, check_features
from kglfr.eval.protocols import PROTOCOLS, ProtocolResult, evaluate_protocol
from kglfr.eval.sysu_official import PERM_FILE, GalleryPermutations, load_permutations

log = logging.getLogger(__name__)

DATASET_PROTOCOLS = {
    "sysu": ("sysu-all", "sysu-indoor"),
    "regdb": ("regdb-v2i", "regdb-i2v"),
    "llcm": ("llcm-i2v", "llcm-v2i"),
}
FEATURES = ("bn", "pool")


def default_protocols(dataset: str) -> tuple[str, ...]:
    return DATASET_PROTOCOLS.get(dataset, ())


def check_protocols(dataset: str, names: Sequence[str] | None) -> tuple[str, ...]:
    """The protocols to run for ``dataset`` (its defaults when ``names`` is None), checked."""
    if names is None:
        return default_protocols(dataset)
    for n in names:
        if n not in PROTOCOLS:
            raise KglfrError(f"unknown protocol {n!r}; choose from {', '.join(PROTOCOLS)}")
        if PROTOCOLS[n].dataset != dataset:
            raise KglfrError(f"protocol {n} is for {PROTOCOLS[n].dataset}, but the store holds {dataset}")
    return tuple(names)


def store_permutations(store: Store, path: str | None = None) -> GalleryPermutations:
    """SYSU-MM01's official gallery permutations for ``store``: ``path``, or by default the file
    shipped in the store's source root (``<root>/exp/rand_perm_cam.mat``)."""
    if store.dataset != "sysu":
        raise KglfrError(f"the official gallery draw (rand_perm_cam.mat) is SYSU-MM01's; store {store.path} "
                         f"holds {store.dataset}, use the seeded draw")  # fmt: skip
    return load_permutations(path if path else store.root / PERM_FILE)


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    store: Store,
    indices: np.ndarray,
    size: tuple[int, int],
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    flip: bool = False,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """BN and pooled features (L2-normalised, float32) of the store images at ``indices``.

    Images are grouped by modality so each batch runs through one stem. ``flip``: average the features
    of the image and its mirror before normalising.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    transform = TestTransform(size)
    dim = None
    out: dict[str, np.ndarray] = {}
    device = torch.device(device)
    mods = store.modalities[indices]
    bar = tqdm(total=len(indices), desc="features", unit="img", disable=not progress, file=sys.stderr,
               mininterval=1.0, dynamic_ncols=True)  # fmt: skip
    for m in Modality:
        pos = np.flatnonzero(mods == int(m))
        for start in range(0, len(pos), batch_size):
            sel = pos[start : start + batch_size]
            x = transform(store_batch_to_tensor(store.read_batch(indices[sel]), device))["images"]
            feats = _embed(model, x, m, amp_dtype)
            if flip:
                flipped = _embed(model, x.flip(-1), m, amp_dtype)
                feats = {k: feats[k] + flipped[k] for k in feats}
            for k, v in feats.items():
                v = torch.nn.functional.normalize(v.float(), dim=1).cpu().numpy()
                if dim is None:
                    dim = v.shape[1]
                    out = {f: np.zeros((len(indices), dim), np.float32) for f in FEATURES}
                out[k][sel] = v
            bar.update(len(sel))
    bar.close()
    model.train(was_training)
    return out


def _embed(model, x: torch.Tensor, modality: Modality, amp_dtype) -> dict[str, torch.Tensor]:
    core = getattr(model, "module", model)
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        return {"bn": core.extract(x, modality, which="bn", normalise=False),
                "pool": core.extract(x, modality, which="pool", normalise=False)}  # fmt: skip


def feature_sets_of(store: Store, feats: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, FeatureSet]:
    paths = np.asarray([store.relpaths[i] for i in indices])
    return {
        k: check_features(
            v,
            store.pids[indices],
            store.cameras[indices],
            paths,
            store.modalities[indices],
            source=f"{store.path} test split ({k} feature)",
        )  # fmt: skip
        for k, v in feats.items()
    }


@dataclass
class Evaluation:
    """Results per protocol and feature kind, and the Rank-1 a random ranking would get."""

    results: dict[str, dict[str, ProtocolResult]]  # protocol -> feature -> result
    chance_rank1: dict[str, float]  # protocol -> percent

    def headline(self) -> dict[str, dict[str, float]]:
        return {p: {f: r.mean()["rank1"] for f, r in by.items()} for p, by in self.results.items()}


def evaluate_model(
    model: torch.nn.Module,
    store: Store,
    protocols: Sequence[str],
    *,
    trial: int | None = None,
    size: tuple[int, int] = (288, 144),
    trials: int = 10,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    flip: bool = False,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    official: GalleryPermutations | None = None,
) -> Evaluation:
    """Extract the test split's features once and score them under every protocol; ``official``:
    draw SYSU's gallery from these permutations (:func:`store_permutations`) instead of the seeds."""
    indices = store.indices(TEST, trial)
    if not len(indices):
        raise KglfrError(f"store {store.path} has no test images (trial {trial})")
    feats = extract_features(model, store, indices, size, batch_size, device, flip, amp_dtype, progress)
    sets = feature_sets_of(store, feats, indices)
    results: dict[str, dict[str, ProtocolResult]] = {}
    chance: dict[str, float] = {}
    for name in protocols:
        p = PROTOCOLS[name]
        by = {}
        for kind, fs in sets.items():
            by[kind] = evaluate_protocol([fs] if p.trial_per_file else fs, p,
                                         trials=None if p.trial_per_file else trials,
                                         official=official)  # fmt: skip
        results[name] = by
        gallery_ids = np.unique(store.pids[indices][store.modalities[indices] == int(p.gallery.modality)])
        chance[name] = 100.0 / max(len(gallery_ids), 1)
    return Evaluation(results, chance)
