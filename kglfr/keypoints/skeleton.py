"""COCO-17 -> the 13 keypoints of KGLFR-Net, their left/right pairs, and the 11 body-part centres.

Pure functions on arrays; every function takes numpy arrays or torch tensors (and returns the same
kind), with any number of leading batch dimensions.

The 13 keypoints, in this order (``KEYPOINTS``): head, left/right shoulder, left/right elbow,
left/right wrist, left/right hip, left/right knee, left/right ankle.

- Head heatmap: the element-wise max of the nose, eye and ear heatmaps (``head="max"``, the default), or
  their sum (``head="sum"``, clipped to [0, 1] so that it stays a heatmap).
- Head keypoint (choice): the most confident of the five face keypoints, with its confidence
  (``head_point="best"``, the default). This is where the max-heatmap peaks, so the head coordinate
  and the head heatmap agree. ``head_point="mean"``: the confidence-weighted mean of the five
  positions, confidence = the largest of the five.

The 11 parts (``PARTS``; an assumption of ours, docs/assumptions.md, since the paper's sources were not
available): head; chest = 0.75 shoulder-centre + 0.25 hip-centre; abdomen = 0.25 shoulder-centre +
0.75 hip-centre; left/right upper arm (shoulder + elbow) / 2; left/right forearm (elbow + wrist) / 2;
left/right thigh (hip + knee) / 2; left/right shin (knee + ankle) / 2. A part is valid when every
keypoint it uses has confidence >= ``threshold`` (default ``VALID_THRESHOLD`` = 0.3).

Coordinates are image pixels, pixel (r, c) covering [c, c+1) x [r, r+1); a horizontal flip of an
image of width W maps x to W - x and swaps the left/right labels (``FLIP_KEYPOINTS``, ``FLIP_PARTS``).
``swap_left_right`` is the one place that swaps them (keypoints, part centres and validity, heatmap
channels); ``flip_keypoints`` and ``flip_heatmaps`` build on it, and the training transform
(``kglfr.data.transforms``) flips through these.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from kglfr.keypoints.coco import (
    BODY_COCO,
    COCO17,
    FLIP_COCO17,
    FLIP_KEYPOINTS,
    FLIP_PARTS,
    HEAD_COCO,
    KEYPOINT_SHORT,
    KEYPOINTS,
    NUM_KEYPOINTS,
    NUM_PARTS,
    PART_SHORT,
    PARTS,
    SKELETON,
    VALID_THRESHOLD,
)

__all__ = [
    "BODY_COCO",
    "COCO17",
    "FLIP_COCO17",
    "FLIP_KEYPOINTS",
    "FLIP_ORDERS",
    "FLIP_PARTS",
    "HEAD_COCO",
    "KEYPOINTS",
    "KEYPOINT_SHORT",
    "NUM_KEYPOINTS",
    "NUM_PARTS",
    "PARTS",
    "PART_SHORT",
    "PART_USES",
    "PART_WEIGHTS",
    "SKELETON",
    "VALID_THRESHOLD",
    "coco_to_13_heatmaps",
    "coco_to_13_keypoints",
    "flip_heatmaps",
    "flip_keypoints",
    "part_centres",
    "swap_left_right",
]

FLIP_ORDERS = {NUM_KEYPOINTS: FLIP_KEYPOINTS, len(COCO17): FLIP_COCO17, NUM_PARTS: FLIP_PARTS}  # by entry count


def _part_weights() -> np.ndarray:
    k = {n: i for i, n in enumerate(KEYPOINTS)}
    w = np.zeros((NUM_PARTS, NUM_KEYPOINTS), np.float64)
    w[0, k["head"]] = 1.0
    for row, (ws, wh) in ((1, (0.75, 0.25)), (2, (0.25, 0.75))):  # chest, abdomen
        for side in ("left", "right"):
            w[row, k[f"{side}_shoulder"]] = ws / 2
            w[row, k[f"{side}_hip"]] = wh / 2
    segments = {"upper_arm": ("shoulder", "elbow"), "forearm": ("elbow", "wrist"),
                "thigh": ("hip", "knee"), "shin": ("knee", "ankle")}  # fmt: skip
    for seg, (a, b) in segments.items():
        for side in ("left", "right"):
            row = PARTS.index(f"{side}_{seg}")
            w[row, k[f"{side}_{a}"]] = 0.5
            w[row, k[f"{side}_{b}"]] = 0.5
    return w


# PART_WEIGHTS[p] @ xy13 = centre of part p; the keypoints a part uses are its non-zero weights.
PART_WEIGHTS = _part_weights()
PART_USES = PART_WEIGHTS > 0
assert np.allclose(PART_WEIGHTS.sum(1), 1.0)

Array = np.ndarray | torch.Tensor
HeadMode = Literal["max", "sum"]
HeadPoint = Literal["best", "mean"]


def _is_torch(x: Array) -> bool:
    return isinstance(x, torch.Tensor)


def _const(table: np.ndarray, like: Array) -> Array:
    if _is_torch(like):
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return torch.as_tensor(table, dtype=dtype, device=like.device)
    return table.astype(like.dtype if np.issubdtype(like.dtype, np.floating) else np.float32)


def coco_to_13_heatmaps(heatmaps: Array, head: HeadMode = "max") -> Array:
    """``... x 17 x h x w`` COCO heatmaps -> ``... x 13 x h x w``; head = max (or sum) of the face maps."""
    if heatmaps.shape[-3] != len(COCO17):
        raise ValueError(f"expected 17 COCO heatmaps in dim -3, got shape {tuple(heatmaps.shape)}")
    face = heatmaps[..., HEAD_COCO[0] : HEAD_COCO[-1] + 1, :, :]
    body = heatmaps[..., BODY_COCO[0] :, :, :]
    if head == "max":
        h = face.amax(dim=-3, keepdim=True) if _is_torch(face) else face.max(axis=-3, keepdims=True)
    elif head == "sum":
        h = face.sum(dim=-3, keepdim=True) if _is_torch(face) else face.sum(axis=-3, keepdims=True)
        h = h.clamp(max=1.0) if _is_torch(h) else np.minimum(h, 1.0)
    else:
        raise ValueError(f"head must be 'max' or 'sum', not {head!r}")
    return torch.cat([h, body], dim=-3) if _is_torch(h) else np.concatenate([h, body], axis=-3)


def coco_to_13_keypoints(keypoints: Array, head_point: HeadPoint = "best") -> Array:
    """``... x 17 x 3`` (x, y, confidence) COCO keypoints -> ``... x 13 x 3`` (see the module doc)."""
    if keypoints.shape[-2:] != (len(COCO17), 3):
        raise ValueError(f"expected ... x 17 x 3 keypoints, got shape {tuple(keypoints.shape)}")
    t = _is_torch(keypoints)
    face = keypoints[..., : len(HEAD_COCO), :]
    conf = face[..., 2]
    if head_point == "best":
        best = conf.argmax(dim=-1) if t else conf.argmax(axis=-1)
        if t:
            head = torch.gather(face, -2, best[..., None, None].expand(*best.shape, 1, 3))
        else:
            head = np.take_along_axis(face, best[..., None, None], axis=-2)
    elif head_point == "mean":
        w = conf.clamp(min=0) if t else np.maximum(conf, 0)
        total = w.sum(-1, keepdim=True) if t else w.sum(-1, keepdims=True)
        uniform = total <= 0
        w = torch.where(uniform, torch.ones_like(w), w) if t else np.where(uniform, 1.0, w)
        w = w / (w.sum(-1, keepdim=True) if t else w.sum(-1, keepdims=True))
        xy = (w[..., None] * face[..., :2]).sum(-2)
        c = conf.amax(-1) if t else conf.max(-1)
        head = (torch.cat([xy, c[..., None]], -1) if t else np.concatenate([xy, c[..., None]], -1))[..., None, :]
    else:
        raise ValueError(f"head_point must be 'best' or 'mean', not {head_point!r}")
    body = keypoints[..., BODY_COCO[0] :, :]
    return torch.cat([head, body], dim=-2) if t else np.concatenate([head, body], axis=-2).astype(keypoints.dtype)


def part_centres(keypoints13: Array, threshold: float = VALID_THRESHOLD) -> tuple[Array, Array]:
    """``... x 13 x 3`` keypoints -> (``... x 11 x 2`` part centres in the same pixels, ``... x 11`` bool valid)."""
    if keypoints13.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"expected ... x 13 x 3 keypoints, got shape {tuple(keypoints13.shape)}")
    t = _is_torch(keypoints13)
    w = _const(PART_WEIGHTS, keypoints13)
    xy = keypoints13[..., :2]
    centres = torch.einsum("pk,...kd->...pd", w, xy) if t else np.einsum("pk,...kd->...pd", w, xy)
    ok = keypoints13[..., 2] >= threshold  # ... x 13
    uses = torch.as_tensor(PART_USES, device=keypoints13.device) if t else PART_USES
    # valid[p] = all(ok[k] for k used by p)  <=>  no used keypoint is not ok
    bad = (~ok)[..., None, :] & uses  # ... x 11 x 13
    valid = ~bad.any(-1)
    return centres, valid


def swap_left_right(x: Array, dim: int) -> Array:
    """``x`` with its left/right entries along ``dim`` swapped (a copy): 13 keypoints (``FLIP_KEYPOINTS``),
    17 COCO keypoints (``FLIP_COCO17``) or 11 parts (``FLIP_PARTS``), told apart by their number."""
    order = FLIP_ORDERS.get(x.shape[dim])
    if order is None:
        raise ValueError(f"no left/right pairs known for {x.shape[dim]} entries (13, 17 or 11 expected)")
    if _is_torch(x):
        return x.index_select(dim, torch.as_tensor(order, device=x.device))
    return np.take(x, order, axis=dim)


def flip_keypoints(points: Array, width: float) -> Array:
    """Points (``... x K x >=2``, x first; 13 or 17 keypoints or 11 part centres) of an image of ``width``
    after a horizontal flip: x -> W - x, left/right labels swapped."""
    out = swap_left_right(points, -2)
    out[..., 0] = width - out[..., 0]
    return out


def flip_heatmaps(heatmaps: Array) -> Array:
    """Heatmaps (``... x K x h x w``) after a horizontal flip of their image: mirrored, channels swapped."""
    out = swap_left_right(heatmaps, -3)
    return out.flip(-1) if _is_torch(out) else out[..., ::-1].copy()
