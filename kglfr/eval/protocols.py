"""The published VI-ReID test protocols: which images query, which form the gallery, per trial.

Everything here works on plain arrays of identities, cameras and paths (one entry per test image);
:func:`evaluate_protocol` runs the trials on a :class:`~kglfr.eval.features.FeatureSet`.

Verified against the public code that produced the published numbers:

- **SYSU-MM01** (AGW ``Cross-Modal-Re-ID-baseline``: ``data_manager.process_query_sysu`` /
  ``process_gallery_sysu``, ``eval_metrics.eval_sysu``; the dataset authors' MATLAB
  ``evaluation/get_cmc_multi_cam.m``). Queries: every infrared image (cameras 3, 6). Gallery, per
  trial t = 0..9: ``random.seed(t)``, then for each identity ascending and each visible camera
  ascending (all-search 1, 2, 4, 5; indoor-search 1, 2) that has images, ``random.choice`` of the
  image list sorted by path (single-shot) or ``random.sample(list, 10)`` (multi-shot, as the
  Python ports of the MATLAB 10-shot setting do; a folder with fewer than 10 images gives all of
  them in ``random.sample`` order). Ranking: a camera-3 query never sees camera-2 images; CMC counts
  identities (ranking deduplicated by identity); mAP/mINP use the raw ranking.
- **RegDB** (``eval_regdb``): each trial has its own split and model, so one feature file is one
  trial. Visible (camera 1) to thermal (camera 2) or the reverse, every test image of one modality
  against every one of the other; plain CMC.
- **LLCM** (the dataset authors' DEEN code, ``ZYK100/LLCM``: ``DEEN/data_manager.py``
  ``process_query_llcm`` / ``process_gallery_llcm``, ``DEEN/test.py``, ``eval_llcm``). Visible
  cameras 1-9, near-infrared cameras 1, 2, 4-9 (the same camera numbers in both modalities). Per trial
  t = 0..9 a single-shot set is drawn exactly like SYSU's gallery. IR->VIS (``test_mode [1, 2]``):
  every infrared image queries the drawn visible set. VIS->IR (``test_mode [2, 1]``): the published
  code draws the single-shot set from the **infrared** images and calls ``eval_llcm`` with that
  drawn set as the probes and every visible image as the gallery; ``llcm-v2i`` reproduces exactly
  that, so its numbers compare with the published LLCM tables. Ranking: gallery images of the
  query's identity from the query's camera are removed; CMC counts identities.

SYSU-MM01 also has the dataset authors' fixed draw (``exp/rand_perm_cam.mat``, MATLAB
``evaluation/get_testing_set.m``): ``official=`` in :func:`evaluate_protocol`, see
:mod:`kglfr.eval.sysu_official`. Its trials are the file's runs 1..10, not comparable one to one with
the seeded draw's.

In every protocol a query whose identity has no image left in its gallery counts nowhere (the
published code's normalisation), and ties in distance keep gallery order.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np

from kglfr.data.conventions import (
    GALLERY_DRAWS,
    LLCM_INFRARED,
    LLCM_VISIBLE,
    REGDB_THERMAL,
    REGDB_VISIBLE,
    SYSU_CAMERAS,
    SYSU_INDOOR,
    SYSU_INFRARED,
    SYSU_VISIBLE,
)
from kglfr.data.records import Modality
from kglfr.errors import KglfrError
from kglfr.eval import metrics as M
from kglfr.eval.rerank import RerankConfig, k_reciprocal_rerank
from kglfr.eval.sysu_official import GalleryPermutations, OfficialPlan, official_draw, plan_official

log = logging.getLogger(__name__)

DATASET_CAMERAS = {"sysu": SYSU_CAMERAS, "regdb": REGDB_VISIBLE + REGDB_THERMAL, "llcm": LLCM_VISIBLE}


class ProtocolError(KglfrError):
    """Features that cannot be evaluated with the protocol asked for."""


@dataclass(frozen=True)
class ImageSet:
    """The images of one side of a protocol: a modality and its cameras. ``drawn``: one image (or
    ``shots``) per (identity, camera), drawn again for every trial; otherwise every image."""

    modality: Modality
    cameras: tuple[int, ...]
    drawn: bool = False


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    dataset: str
    query: ImageSet
    gallery: ImageSet
    rule: str  # a key of kglfr.eval.metrics.REMOVAL_RULES
    dedup_cmc: bool
    trial_per_file: bool = False  # RegDB: every trial has its own model, so its own feature file
    multi_shot: bool = False  # whether --multi-shot applies
    note: str = ""

    @property
    def drawn(self) -> ImageSet | None:
        return self.query if self.query.drawn else self.gallery if self.gallery.drawn else None


VIS, IR = Modality.VISIBLE, Modality.INFRARED

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "sysu-all",
            "SYSU-MM01 all-search",
            "sysu",
            ImageSet(IR, SYSU_INFRARED),
            ImageSet(VIS, SYSU_VISIBLE, drawn=True),
            "sysu-cam3-cam2",
            True,
            multi_shot=True,
        ),
        Protocol(
            "sysu-indoor",
            "SYSU-MM01 indoor-search",
            "sysu",
            ImageSet(IR, SYSU_INFRARED),
            ImageSet(VIS, SYSU_INDOOR, drawn=True),
            "sysu-cam3-cam2",
            True,
            multi_shot=True,
        ),
        Protocol(
            "regdb-v2i",
            "RegDB visible-to-thermal",
            "regdb",
            ImageSet(VIS, REGDB_VISIBLE),
            ImageSet(IR, REGDB_THERMAL),
            "same-identity-camera",
            False,
            trial_per_file=True,
        ),
        Protocol(
            "regdb-i2v",
            "RegDB thermal-to-visible",
            "regdb",
            ImageSet(IR, REGDB_THERMAL),
            ImageSet(VIS, REGDB_VISIBLE),
            "same-identity-camera",
            False,
            trial_per_file=True,
        ),
        Protocol(
            "llcm-i2v",
            "LLCM IR-to-VIS",
            "llcm",
            ImageSet(IR, LLCM_INFRARED),
            ImageSet(VIS, LLCM_VISIBLE, drawn=True),
            "same-identity-camera",
            True,
        ),
        Protocol(
            "llcm-v2i",
            "LLCM VIS-to-IR",
            "llcm",
            ImageSet(IR, LLCM_INFRARED, drawn=True),
            ImageSet(VIS, LLCM_VISIBLE),
            "same-identity-camera",
            True,
            note="as the published DEEN code: drawn infrared probes, every visible image as gallery",
        ),
    )
}


def get_protocol(name: str | Protocol) -> Protocol:
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ProtocolError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None


# ----------------------------------------------------------------------------------------------
# Modalities


def infer_llcm_modalities(paths: np.ndarray) -> np.ndarray:
    """LLCM modality from the path's first folder: ``vis``/``test_vis`` visible, ``nir``/``test_nir``
    infrared (the camera numbers alone do not tell, both modalities use cameras 1-9)."""
    out = np.empty(len(paths), dtype=np.int8)
    for i, p in enumerate(paths):
        top = str(p).replace("\\", "/").lstrip("/").split("/", 1)[0].lower()
        if "nir" in top:
            out[i] = IR
        elif "vis" in top:
            out[i] = VIS
        else:
            raise ProtocolError(
                f"cannot tell the modality of LLCM image {str(p)!r}: paths must start with vis/ or nir/ "
                "(or test_vis/, test_nir/), or the features file must hold a 'modalities' array "
                "(0 visible, 1 infrared)"
            )
    return out


def image_modalities(
    dataset: str, cams: np.ndarray, paths: np.ndarray, modalities: np.ndarray | None = None
) -> np.ndarray:
    """The modality of every image (values of :class:`Modality`) under ``dataset``'s conventions:
    SYSU by camera (3 and 6 infrared), RegDB by camera (1 visible, 2 thermal), LLCM from the
    ``modalities`` array when given, else from the paths."""
    cams = np.asarray(cams)
    if dataset == "sysu":
        return np.where(np.isin(cams, SYSU_INFRARED), IR, VIS).astype(np.int8)
    if dataset == "regdb":
        return np.where(np.isin(cams, REGDB_THERMAL), IR, VIS).astype(np.int8)
    if dataset == "llcm":
        if modalities is not None:
            return np.asarray(modalities, dtype=np.int8)
        return infer_llcm_modalities(paths)
    raise ValueError(f"unknown dataset {dataset!r}")


# ----------------------------------------------------------------------------------------------
# Query and gallery construction (pure functions on arrays)


def select(image_set: ImageSet, cams: np.ndarray, modality: np.ndarray) -> np.ndarray:
    """Indices (in file order) of the images of ``image_set``: its modality and cameras."""
    return np.flatnonzero((modality == image_set.modality) & np.isin(cams, image_set.cameras))


def listing_order(idx: np.ndarray, pids: np.ndarray, cams: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """``idx`` sorted by (identity, camera, path): the published code's listing order."""
    idx = np.asarray(idx)
    if not len(idx):
        return idx
    return idx[np.lexsort((paths[idx], cams[idx], pids[idx]))]


def draw_groups(idx: np.ndarray, pids: np.ndarray, cams: np.ndarray, paths: np.ndarray) -> list[np.ndarray]:
    """The (identity, camera) groups of the images ``idx`` in the published draw order: identity
    ascending, camera ascending, each group's images sorted by path."""
    ordered = listing_order(idx, pids, cams, paths)
    if not len(ordered):
        return []
    p, c = pids[ordered], cams[ordered]
    cuts = np.flatnonzero((p[1:] != p[:-1]) | (c[1:] != c[:-1])) + 1
    return np.split(ordered, cuts)


def draw_from(groups: list[np.ndarray], trial: int, shots: int = 1) -> np.ndarray:
    """``random.seed(trial)``, then per group ``random.choice`` (``shots == 1``) or
    ``random.sample(group, min(shots, n))``. Returns indices in draw order."""
    rng = random.Random(trial)  # the same stream as random.seed(trial) + the module functions
    chosen: list[int] = []
    for group in groups:
        images = group.tolist()
        if shots == 1:
            chosen.append(rng.choice(images))
        else:
            chosen.extend(rng.sample(images, min(shots, len(images))))
    return np.asarray(chosen, dtype=np.int64)


def draw(
    idx: np.ndarray, pids: np.ndarray, cams: np.ndarray, paths: np.ndarray, trial: int, shots: int = 1
) -> np.ndarray:
    """The published per-trial draw over the images ``idx`` (already restricted to the protocol's
    cameras): ``random.seed(trial)``; then for every identity ascending and every camera ascending
    that has images, ``random.choice`` over that (identity, camera)'s images sorted by path
    (``shots == 1``) or ``random.sample(images, min(shots, n))``. Returns indices in draw order,
    which is the gallery order (ties in distance keep it)."""
    return draw_from(draw_groups(idx, pids, cams, paths), trial, shots)


@dataclass
class TrialPlan:
    """What does not change between the trials of one features file: the indices of each side
    that is not drawn (in listing order; RegDB: file order) and the drawn side's groups."""

    query: np.ndarray | None  # None: drawn per trial
    gallery: np.ndarray | None
    groups: list[np.ndarray]  # the drawn side's (identity, camera) groups
    official: OfficialPlan | None = None  # the drawn side from rand_perm_cam.mat instead of random.seed

    @staticmethod
    def build(
        protocol: Protocol, pids, cams, paths, modality, official: GalleryPermutations | None = None
    ) -> TrialPlan:
        sides, groups = [], []
        for image_set in (protocol.query, protocol.gallery):
            idx = select(image_set, cams, modality)
            if image_set.drawn:
                groups = draw_groups(idx, pids, cams, paths)
                sides.append(None)
            else:
                sides.append(idx if protocol.trial_per_file else listing_order(idx, pids, cams, paths))
        plan = None if official is None else plan_official(groups, pids, cams, official)
        return TrialPlan(sides[0], sides[1], groups, plan)

    def sets(self, trial: int, shots: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(query indices, gallery indices) of one trial: the seed, or with ``official`` the file's
        run (1-based)."""
        if self.query is not None and self.gallery is not None:
            return self.query, self.gallery
        if self.official is not None:
            drawn = official_draw(self.official, trial, shots)
        else:
            drawn = draw_from(self.groups, trial, shots)
        return (drawn if self.query is None else self.query, drawn if self.gallery is None else self.gallery)


def trial_sets(
    protocol: Protocol,
    pids: np.ndarray,
    cams: np.ndarray,
    paths: np.ndarray,
    modality: np.ndarray,
    trial: int,
    shots: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, gallery indices) of one trial, in the published code's order."""
    return TrialPlan.build(protocol, pids, cams, paths, modality).sets(trial, shots)


def check_cameras(protocol: Protocol, cams: np.ndarray, modality: np.ndarray, source: str) -> None:
    """Fail when one side of the protocol has none of its cameras in the file; warn when some
    cameras are missing (the numbers then do not compare with published ones) or when the file has
    cameras the dataset does not (features of another dataset?)."""
    foreign = sorted(set(np.unique(cams).tolist()) - set(DATASET_CAMERAS[protocol.dataset]))
    if foreign:
        known = ", ".join(map(str, DATASET_CAMERAS[protocol.dataset]))
        raise ProtocolError(
            f"{source} has images from camera(s) {', '.join(map(str, foreign))}, which "
            f"{protocol.title.split()[0]} does not have (its cameras: {known}); are these features of "
            f"another dataset? Choose the protocol of the dataset they were extracted from"
        )
    for role, image_set in (("query", protocol.query), ("gallery", protocol.gallery)):
        present = set(np.unique(cams[modality == image_set.modality]).tolist())
        missing = [c for c in image_set.cameras if c not in present]
        kind = image_set.modality.name.lower()
        if len(missing) == len(image_set.cameras):
            found = ", ".join(map(str, sorted(set(np.unique(cams).tolist())))) or "none"
            raise ProtocolError(
                f"{protocol.name} takes its {role} from {kind} camera(s) "
                f"{', '.join(map(str, image_set.cameras))}, but {source} has no such image "
                f"(cameras in the file: {found})"
            )
        if missing:
            log.warning(
                "%s: %s has no %s image from camera(s) %s; the %s is incomplete and the "
                "numbers do not compare with published ones",
                protocol.name,
                source,
                kind,
                ", ".join(map(str, missing)),
                role,
            )


# Sizes of the official test sets: (identities, queries, gallery images per trial, single-shot).
# A different size is only warned about: synthetic and custom test sets are smaller.
OFFICIAL_SIZES = {
    "sysu-all": (96, 3803, 301),
    "sysu-indoor": (96, 3803, 112),
    "regdb-v2i": (206, 2060, 2060),
    "regdb-i2v": (206, 2060, 2060),
}


def check_sizes(protocol: Protocol, pids: np.ndarray, q: np.ndarray, g: np.ndarray, shots: int, source: str) -> None:
    """Warn when a trial's test set differs in size from the official one of the protocol."""
    if protocol.name not in OFFICIAL_SIZES or shots != 1:  # multi-shot: groups may hold fewer than 10
        return
    ids, nq, ng = OFFICIAL_SIZES[protocol.name]
    got = (len(np.unique(pids[np.concatenate([q, g])])), len(q), len(g))
    if got != (ids, nq, ng):
        log.warning("%s: %s has %d identities, %d queries and %d gallery images per trial; the official test "
                    "set has %d, %d and %d, so the numbers do not compare with published ones",
                    protocol.name, source, *got, ids, nq, ng)  # fmt: skip


def check_feature_values(feats: np.ndarray, source: str) -> None:
    """Warn about features that cannot rank anything: zero vectors, or the same vector for every image."""
    zero = np.flatnonzero(~np.any(feats != 0, axis=1))
    if len(zero):
        log.warning("%s: %d of %d feature vectors are all zero (their distances are meaningless); "
                    "was the model run on these images?", source, len(zero), len(feats))  # fmt: skip
    if len(feats) > 1 and np.all(feats == feats[0]):
        log.warning("%s: every image has the same feature vector; the ranking is arbitrary "
                    "(an untrained or broken model?)", source)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Running the trials


@dataclass(frozen=True)
class TrialResult:
    trial: int  # the seed (drawn protocols, 0-based), the official run (1-based) or the trial number (RegDB)
    metrics: M.Metrics
    num_query: int
    num_gallery: int
    source: str
    sha256: str | None = None  # of the features file, when read from one


@dataclass
class ProtocolResult:
    protocol: Protocol
    shots: int  # 1 single-shot, 10 multi-shot, 0 every image (RegDB)
    distance: str
    rerank: RerankConfig | None
    trials: list[TrialResult] = field(default_factory=list)
    gallery_draw: str | None = None  # "seeded" or "official"; None when nothing is drawn (RegDB)
    gallery_perm: tuple[str, str | None] | None = None  # official: (rand_perm_cam.mat, its sha256)

    @property
    def shot_name(self) -> str:
        return {0: "all images", 1: "single-shot"}.get(self.shots, f"multi-shot ({self.shots})")

    def table(self) -> np.ndarray:
        """Trials x metrics (percent), columns in ``METRIC_KEYS`` order."""
        return np.array([[t.metrics.summary()[k] for k in M.METRIC_KEYS] for t in self.trials])

    def mean(self) -> dict[str, float]:
        return dict(zip(M.METRIC_KEYS, self.table().mean(0).tolist()))

    def std(self) -> dict[str, float]:
        """Sample standard deviation over trials (n - 1 in the denominator; 0 for one trial)."""
        t = self.table()
        std = t.std(0, ddof=1) if len(t) > 1 else np.zeros(t.shape[1])
        return dict(zip(M.METRIC_KEYS, std.tolist()))


def evaluate_protocol(
    features,
    protocol: str | Protocol,
    *,
    trials: int | None = None,
    shots: int = 1,
    distance: str = "cosine",
    rerank: RerankConfig | None = None,
    official: GalleryPermutations | None = None,
) -> ProtocolResult:
    """Run ``protocol`` on ``features`` (a :class:`~kglfr.eval.features.FeatureSet`, or for RegDB a
    sequence of them, one per trial) and return every trial's metrics.

    ``trials``: number of gallery draws, seeds 0..trials-1 (default ``GALLERY_DRAWS``, 10); for
    RegDB it must equal the number of feature sets when given. ``shots``: 1, or 10 for SYSU
    multi-shot. ``rerank``: k-reciprocal re-ranking of every trial's query + gallery, off when None.
    ``official``: SYSU only, draw the gallery from the dataset authors' permutations (trials are then
    the file's runs 1..n) instead of ``random.seed(trial)``.
    """
    protocol = get_protocol(protocol)
    sets = list(features) if isinstance(features, (list, tuple)) else [features]
    _check_request(protocol, sets, shots, official)
    runs = _trial_runs(protocol, sets, trials, official)
    result = ProtocolResult(protocol, 0 if protocol.drawn is None else shots, distance, rerank)
    if protocol.drawn is not None:
        result.gallery_draw = "seeded" if official is None else "official"
    if official is not None:
        result.gallery_perm = (official.source, official.sha256)
    prepared: dict[int, _PreparedFile] = {}  # per features file: what every trial shares
    for trial, fs in runs:
        if id(fs) not in prepared:
            prepared[id(fs)] = _prepare_file(protocol, fs, official, distance, len(runs))
        file = prepared[id(fs)]
        q, g = file.plan.sets(trial, shots)
        if not len(q) or not len(g):
            raise ProtocolError(
                f"{protocol.name}: {fs.source} gives an empty {'query set' if not len(q) else 'gallery'}"
            )
        if trial == runs[0][0] or protocol.trial_per_file:
            check_sizes(protocol, fs.pids, q, g, shots, fs.source)
        metrics = _trial_metrics(protocol, file, q, g, distance, rerank, trial)
        result.trials.append(TrialResult(trial, metrics, len(q), len(g), fs.source, fs.sha256))
    _warn_without_positive(result)
    return result


def _check_request(protocol: Protocol, sets: list, shots: int, official: GalleryPermutations | None) -> None:
    """Raise ``ProtocolError`` for options the protocol does not take."""
    if not sets:
        raise ProtocolError("no features given")
    if shots != 1 and not protocol.multi_shot:
        raise ProtocolError(f"multi-shot applies to the SYSU-MM01 protocols only, not {protocol.name}")
    if shots < 1:
        raise ProtocolError(f"shots must be 1 or more, got {shots}")
    if official is not None and protocol.dataset != "sysu":
        raise ProtocolError(f"the official gallery draw (rand_perm_cam.mat) is SYSU-MM01's; {protocol.name} "
                            "has none, use the seeded draw")  # fmt: skip


def _trial_runs(protocol: Protocol, sets: list, trials: int | None, official: GalleryPermutations | None) -> list:
    """(trial, features) for every trial: RegDB one file per trial (1..n); the drawn protocols one
    file, seeds 0..n-1 or with ``official`` the file's runs 1..n."""
    if protocol.trial_per_file:
        if trials is not None and trials != len(sets):
            raise ProtocolError(
                f"{protocol.name}: every trial has its own model, so each features file is one "
                f"trial; got {len(sets)} file(s) but trials = {trials}"
            )
        return [(i + 1, fs) for i, fs in enumerate(sets)]
    if len(sets) != 1:
        raise ProtocolError(
            f"{protocol.name} takes one features file holding every test image (the "
            f"{'gallery' if protocol.gallery.drawn else 'probe set'} is drawn from it per trial); "
            f"got {len(sets)}"
        )
    n = GALLERY_DRAWS if trials is None else trials
    if n < 1:
        raise ProtocolError(f"trials must be 1 or more, got {n}")
    first = 0 if official is None else 1  # seeds 0..n-1, or the file's runs 1..n
    return [(t + first, sets[0]) for t in range(n)]


@dataclass(frozen=True)
class _PreparedFile:
    """What every trial of one features file shares: the plan, the prepared features and those of
    the side that is not drawn (None for the drawn side)."""

    fs: object  # the FeatureSet
    plan: TrialPlan
    feats: np.ndarray
    query_feats: np.ndarray | None
    gallery_feats: np.ndarray | None


def _prepare_file(
    protocol: Protocol, fs, official: GalleryPermutations | None, distance: str, n_runs: int
) -> _PreparedFile:
    modality = image_modalities(protocol.dataset, fs.cams, fs.paths, fs.modalities)
    check_cameras(protocol, fs.cams, modality, fs.source)
    check_feature_values(fs.feats, fs.source)
    plan = TrialPlan.build(protocol, fs.pids, fs.cams, fs.paths, modality, official)
    if plan.official is not None and plan.official.runs < n_runs:
        raise ProtocolError(
            f"{official.source} holds {plan.official.runs} run(s), fewer than the "
            f"{n_runs} trials asked; ask for {plan.official.runs} trials or fewer"
        )
    feats = M.prepare(fs.feats, distance)  # normalised once for every trial
    # the sides that are not drawn are the same every trial: gather their features once
    q_fixed, g_fixed = (None if side is None else feats[side] for side in (plan.query, plan.gallery))
    return _PreparedFile(fs, plan, feats, q_fixed, g_fixed)


def _trial_metrics(
    protocol: Protocol,
    file: _PreparedFile,
    q: np.ndarray,
    g: np.ndarray,
    distance: str,
    rerank: RerankConfig | None,
    trial: int,
) -> M.Metrics:
    """The metrics of one trial's query indices ``q`` against its gallery indices ``g``."""
    fs, kwargs = file.fs, dict(rule=protocol.rule, dedup_cmc=protocol.dedup_cmc)
    qf = file.feats[q] if file.query_feats is None else file.query_feats
    gf = file.feats[g] if file.gallery_feats is None else file.gallery_feats
    try:
        if rerank is None:
            return M.evaluate_prepared(
                qf, gf, fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g], distance=distance, **kwargs
            )
        dist = k_reciprocal_rerank(
            qf, gf, k1=rerank.k1, k2=rerank.k2, lambda_value=rerank.lambda_value, distance=distance
        )
        return M.evaluate(None, None, fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g], dist=dist, **kwargs)
    except M.NoValidQueryError:
        raise ProtocolError(
            f"{protocol.name} trial {trial}: no query identity has a gallery image in "
            f"{fs.source}; are these the test images of this dataset?"
        ) from None


def _warn_without_positive(result: ProtocolResult) -> None:
    worst = max(result.trials, key=lambda t: t.metrics.num_without_positive)
    n = worst.metrics.num_without_positive
    if n:
        log.warning(
            "%s: %d of %d queries (trial %s) have no gallery image of their identity left in their "
            "ranking; as in the published code they count in no metric (CMC, mAP and mINP are "
            "averaged over the %d that have one)",
            result.protocol.name,
            n,
            worst.metrics.num_queries,
            worst.trial,
            worst.metrics.num_valid,
        )
