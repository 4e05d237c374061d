"""Losses of KGLFR-Net (paper eqs. 2-6; choices in docs/assumptions.md).

- ``batch_hard_triplet``: eqs. 2 and 5, the hardest-positive / hardest-negative triplet on Euclidean
  distances, averaged over anchors (margin 0.3 on the global feature, 0.01 on the local one).
- ``weighted_regularized_triplet``: AGW's WRT (softmax-weighted positives and negatives, soft margin).
- ``adp_triplet``: CAJ's ADP triplet (WRT with a sharpness ``alpha`` and a squared, clamped difference).
- ``cross_entropy``: the ID loss, with optional label smoothing.
- ``keypoint_mask`` / ``masked_local_features`` / ``draw_keypoint``: eqs. 3 and 4 of KMLFR.

Pure functions on tensors, vectorised over the batch, on the tensors' device. The stats dicts hold
detached 0-dim tensors (no host sync on the hot path; call ``.item()`` when logging).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "adp_triplet",
    "adp_softmax_weights",
    "batch_hard_triplet",
    "cross_entropy",
    "draw_keypoint",
    "keypoint_mask",
    "masked_local_features",
    "pairwise_distance",
    "weighted_regularized_triplet",
]

_EPS = 1e-12


def pairwise_distance(x: Tensor, y: Tensor | None = None, squared: bool = False) -> Tensor:
    """Euclidean distances between the rows of ``x`` (N x D) and ``y`` (M x D; default ``x``): N x M.

    Squared distances are clamped at 0; the distance is ``sqrt(clamp(d2, min=1e-12))``, so equal rows
    give 1e-6 with a zero (not NaN) gradient. With ``y=None`` the diagonal is exactly the clamped value.
    """
    if x.ndim != 2 or (y is not None and (y.ndim != 2 or y.shape[1] != x.shape[1])):
        raise ValueError(f"expected N x D and M x D, got {tuple(x.shape)} and {None if y is None else tuple(y.shape)}")
    same = y is None
    y = x if y is None else y
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    if same:
        d2 = d2.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), 0.0)
    if squared:
        return d2.clamp(min=0.0)
    return d2.clamp(min=_EPS).sqrt()


def _check_pair(features: Tensor, labels: Tensor) -> None:
    if features.ndim != 2 or labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"expected features B x D and labels B, got {tuple(features.shape)} and {tuple(labels.shape)}")


def _masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(same label, different label), B x B bool."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    return same, ~same


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid`` entries; 0 (still in the graph) when none is valid."""
    values = torch.where(valid, values, torch.zeros_like(values))
    return values.sum() / valid.sum().clamp(min=1).to(values.dtype)


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Batch-hard triplet loss (eqs. 2, 5): mean over anchors of ``relu(d_ap - d_an + margin)``.

    ``d_ap``: largest distance to a sample of the same label (either modality, the anchor itself
    excluded); ``d_an``: smallest distance to a sample of another label. Anchors with no other positive
    or no negative are left out of the mean (loss 0 if none is left). Stats (detached): ``correct``
    (fraction of counted anchors with ``d_an >= d_ap``), ``d_ap``, ``d_an`` (means), ``anchors`` (count).
    """
    _check_pair(features, labels)
    dist = pairwise_distance(features)
    same, diff = _masks(labels)
    pos = same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    has_pos, has_neg = pos.any(1), diff.any(1)
    d_ap = torch.where(pos, dist, torch.full_like(dist, -torch.inf)).amax(1)
    d_an = torch.where(diff, dist, torch.full_like(dist, torch.inf)).amin(1)
    d_ap = torch.where(has_pos, d_ap, torch.zeros_like(d_ap))
    d_an = torch.where(has_neg, d_an, torch.zeros_like(d_an))
    valid = has_pos & has_neg
    loss = _masked_mean(F.relu(d_ap - d_an + margin), valid)
    return loss, _stats(d_ap, d_an, valid)


def _stats(d_ap: Tensor, d_an: Tensor, valid: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        d_ap, d_an = d_ap.detach(), d_an.detach()
        return {
            "correct": _masked_mean((d_an >= d_ap).to(d_ap.dtype), valid),
            "d_ap": _masked_mean(d_ap, valid),
            "d_an": _masked_mean(d_an, valid),
            "anchors": valid.sum(),
        }


def _masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Row softmax over the ``mask`` entries (max-subtracted over those entries only); 0 elsewhere and
    on rows without any entry."""
    has = mask.any(1, keepdim=True)
    z = torch.where(mask, logits, torch.full_like(logits, -torch.inf))
    z = torch.where(has, z, torch.zeros_like(z))
    return torch.softmax(z, dim=1) * mask.to(logits.dtype)


def weighted_regularized_triplet(features: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """AGW's weighted regularised triplet (``TripletLoss_WRT``), no margin.

    Per anchor: ``furthest = sum_p softmax_p(d_ap) d_ap`` over its positives (the anchor itself included,
    as in AGW), ``closest = sum_n softmax_n(-d_an) d_an`` over its negatives; loss = mean over anchors of
    ``softplus(furthest - closest)`` (= ``SoftMarginLoss(closest - furthest, 1)``). The weights are not
    detached. Unlike AGW the softmax subtracts the max over the masked entries only and has no +1e-6 in
    its denominator (AGW's version underflows to 0 for negatives far apart); values agree otherwise.
    Anchors without a negative are left out of the mean. Stats as ``batch_hard_triplet``.
    """
    _check_pair(features, labels)
    dist = pairwise_distance(features)
    same, diff = _masks(labels)
    furthest = (_masked_softmax(dist, same) * dist).sum(1)
    closest = (_masked_softmax(-dist, diff) * dist).sum(1)
    valid = diff.any(1)
    loss = _masked_mean(F.softplus(furthest - closest), valid)
    return loss, _stats(furthest, closest, valid)


ADP_CLAMP = 88.0  # CAJ clamps the squared difference here (exp(88) is near float32's largest value)


def adp_softmax_weights(values: Tensor, mask: Tensor) -> Tensor:
    """CAJ's ``softmax_weights``: ``exp(v - max) * mask / (sum(exp(v - max) * mask) + 1e-6)`` per row, the max
    taken over ``values * mask`` (so masked entries count as 0). The published ``+1e-6`` keeps a row whose
    entries all underflow (negatives far apart) at weight 0 instead of 0/0."""
    m = mask.to(values.dtype)
    diff = values - (values * m).amax(1, keepdim=True)
    e = torch.exp(diff) * m
    return e / (e.sum(1, keepdim=True) + 1e-6)


def adp_triplet(features: Tensor, labels: Tensor, alpha: float = 1.0, gamma: float = 1.0, square: bool = True,
                normalize: bool = False) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """CAJ's ADP triplet (``TripletLoss_ADP``). ``furthest = sum_p w_p d_ap`` with ``w = adp_softmax(alpha *
    d_ap)`` over the positives (the anchor included), ``closest = sum_n w_n d_an`` with ``w = adp_softmax(
    -alpha * d_an)`` over the negatives. ``square``: ``x = min(gamma (furthest - closest)^2, 88)`` and the
    soft margin ``log(1 + exp(y x))`` with y = +1 where ``furthest > closest``, else -1 (no gradient once
    the clamp holds); otherwise ``softplus(gamma (furthest - closest))``. Mean over anchors.
    ``normalize``: L2-normalise the features first (distances <= 2: the clamp never holds)."""
    _check_pair(features, labels)
    x = F.normalize(features, dim=1) if normalize else features
    dist = pairwise_distance(x)
    same, diff = _masks(labels)
    d_ap, d_an = dist * same.to(dist.dtype), dist * diff.to(dist.dtype)
    furthest = (d_ap * adp_softmax_weights(d_ap * alpha, same)).sum(1)
    closest = (d_an * adp_softmax_weights(-d_an * alpha, diff)).sum(1)
    if square:
        gap = torch.clamp_max((furthest - closest).pow(2) * gamma, ADP_CLAMP)
        sign = torch.where(furthest > closest, 1.0, -1.0).to(gap.dtype)
        loss = F.softplus(sign * gap).mean()
    else:
        loss = F.softplus(gamma * (furthest - closest)).mean()
    return loss, _stats(furthest, closest, torch.ones_like(furthest, dtype=torch.bool))


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """ID loss: mean cross-entropy of ``logits`` (B x classes) against ``labels`` (B), optionally smoothed."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def keypoint_mask(heatmaps: Tensor, keypoint: int | None = None) -> Tensor:
    """Eq. 3: ``m = relu(k / max(k))`` per sample, B x h x w.

    ``heatmaps``: B x K x h x w with ``keypoint`` the channel to use, or B x h x w (one keypoint already
    chosen, ``keypoint=None``). The max is over each sample's spatial map; a map whose max is <= 0
    gives an all-zero mask. The heatmaps are expected at the feature-map size already.
    """
    if heatmaps.ndim == 4:
        if keypoint is None:
            raise ValueError("keypoint is required for B x K x h x w heatmaps")
        if not 0 <= keypoint < heatmaps.shape[1]:
            raise ValueError(f"keypoint {keypoint} out of range for {heatmaps.shape[1]} heatmap channels")
        k = heatmaps[:, keypoint]
    elif heatmaps.ndim == 3:
        if keypoint is not None:
            raise ValueError("keypoint must be None for B x h x w heatmaps")
        k = heatmaps
    else:
        raise ValueError(f"expected B x K x h x w or B x h x w heatmaps, got shape {tuple(heatmaps.shape)}")
    k = k if k.is_floating_point() else k.float()
    peak = k.amax(dim=(-2, -1), keepdim=True)
    positive = peak > 0
    m = F.relu(k / torch.where(positive, peak, torch.ones_like(peak)))
    return torch.where(positive, m, torch.zeros_like(m))


def masked_local_features(feature_map: Tensor, mask: Tensor) -> Tensor:
    """Eq. 4: ``l = mean over h x w of mask * f``, B x C (``feature_map`` B x C x h x w, ``mask`` B x h x w)."""
    if feature_map.ndim != 4 or mask.ndim != 3:
        raise ValueError(
            f"expected B x C x h x w and B x h x w, got {tuple(feature_map.shape)} and {tuple(mask.shape)}"
        )
    if tuple(mask.shape[-2:]) != tuple(feature_map.shape[-2:]):
        raise ValueError(
            f"mask size {tuple(mask.shape[-2:])} != feature map size {tuple(feature_map.shape[-2:])} "
            "(resize the heatmaps to the feature-map size first)"
        )
    if mask.shape[0] != feature_map.shape[0]:
        raise ValueError(f"mask batch {mask.shape[0]} != feature map batch {feature_map.shape[0]}")
    return (feature_map * mask.unsqueeze(1).to(feature_map.dtype)).mean(dim=(2, 3))


def draw_keypoint(generator: torch.Generator | None = None, num_keypoints: int = 13) -> int:
    """One keypoint index in [0, num_keypoints) for the whole batch (KMLFR, once per iteration)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(num_keypoints, (1,), generator=generator, device=device).item())
