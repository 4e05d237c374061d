"""Evaluate a model on a store's test split under the dataset's published protocols.

Features of both kinds come from one backbone pass per batch (:mod:`kglfr.eval.extract`): the BN
feature (the headline, as the AGW and KGLFR papers report) and the pooled feature before the BN; each
is scored with :func:`kglfr.eval.evaluate_protocol`, so the numbers are the ones ``kglfr evaluate``
gives. Each result records the trial it evaluated (RegDB: the model's own trial).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from kglfr.data.records import TEST
from kglfr.data.store import Store
from kglfr.errors import KglfrError
from kglfr.eval.extract import feature_sets_of, store_features
from kglfr.eval.features import FeatureSet
from kglfr.eval.protocols import PROTOCOLS, ProtocolResult, evaluate_protocol
from kglfr.eval.sysu_official import PERM_FILE, GalleryPermutations, load_permutations

log = logging.getLogger(__name__)

DATASET_PROTOCOLS = {
    "sysu": ("sysu-all", "sysu-indoor"),
    "regdb": ("regdb-v2i", "regdb-i2v"),
    "llcm": ("llcm-i2v", "llcm-v2i"),
}


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


@dataclass
class Evaluation:
    """Results per protocol and feature kind, and the Rank-1 a random ranking would get."""

    results: dict[str, dict[str, ProtocolResult]]  # protocol -> feature -> result
    chance_rank1: dict[str, float]  # protocol -> percent
    features: dict[str, FeatureSet] | None = None  # feature kind -> the test split's features (reused by --worst)

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
    if tuple(int(v) for v in size) != tuple(store.size):
        log.warning("store %s holds %d x %d images and the model takes %d x %d: they are resized (scores may differ "
                    "from a store prepared at the model's size)", store.path, *store.size, *size)  # fmt: skip
    feats = store_features(model, store, indices, size, batch_size, device, flip, amp_dtype, progress)
    sets = feature_sets_of(store, feats, indices)
    results: dict[str, dict[str, ProtocolResult]] = {}
    chance: dict[str, float] = {}
    for name in protocols:
        p = PROTOCOLS[name]
        by = {}
        for kind, fs in sets.items():
            r = evaluate_protocol([fs] if p.trial_per_file else fs, p, trials=None if p.trial_per_file else trials,
                                  official=official)  # fmt: skip
            by[kind] = _label_trial(r, store.manifest["trial"] if trial is None else trial) if p.trial_per_file else r
        results[name] = by
        gallery_ids = np.unique(store.pids[indices][store.modalities[indices] == int(p.gallery.modality)])
        chance[name] = 100.0 / max(len(gallery_ids), 1)
    return Evaluation(results, chance, sets)


def _label_trial(result: ProtocolResult, trial: int | None) -> ProtocolResult:
    """A one-file protocol (RegDB) numbers its single trial 1; it is the store split's ``trial``."""
    if trial is not None:
        result.trials = [replace(t, trial=int(trial)) for t in result.trials]
    return result
