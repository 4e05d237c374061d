"""Heatmaps -> sub-pixel keypoints, the way top-down pose networks decode them; flip-test helpers.

Heatmap coordinates here are *index* coordinates: cell (row i, column j) is the point (x=j, y=i),
as in the official HRNet code. A network with output stride ``s`` (4 for HRNet) was trained with the
target of an input pixel of index ``p`` at heatmap index ``p / s``, so heatmap index ``j`` is input
pixel index ``s * j`` (continuous coordinate ``s * j + 0.5``; see ``heatmap_to_image``).

Refinements:

- ``"quarter"`` (the official HRNet ``get_final_preds`` post-processing, the default): from the
  argmax, move a quarter cell towards the higher of the two neighbours, separately in x and y, only
  when the peak is inside on both axes as there: ``1 < px < w - 1`` and ``1 < py < h - 1`` (a peak in
  column or row 0 or 1, or on the last, keeps its integer coordinates).
- ``"dark"`` (Zhang et al., "Distribution-Aware Coordinate Representation", CVPR 2020): blur the map
  with a Gaussian, take its log, and take one Newton step from the argmax with the finite-difference
  gradient and Hessian; exact for a Gaussian peak. Off by default.
- ``"none"``: the integer argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from kglfr.keypoints.coco import COCO_FLIP_PAIRS

REFINEMENTS = ("quarter", "dark", "none")


def swap_channels(heatmaps: np.ndarray, pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS) -> np.ndarray:
    """Exchange the channels (axis -3) of each left/right pair; a copy."""
    order = np.arange(heatmaps.shape[-3])
    for a, b in pairs:
        order[a], order[b] = b, a
    return heatmaps[..., order, :, :]


def flip_back(
    heatmaps: np.ndarray, pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS, shift: bool = True
) -> np.ndarray:
    """Heatmaps (``... x K x h x w``) of a horizontally flipped input -> heatmaps of the original input:
    mirror the columns, swap left/right channels and, with ``shift`` (as the official HRNet flip test
    does, since the maps of a flipped input are not exactly aligned), move every map one cell to the
    right, repeating the first column."""
    out = swap_channels(np.asarray(heatmaps)[..., ::-1], pairs)
    if shift:
        out[..., 1:] = out[..., :-1].copy()
    return np.ascontiguousarray(out)


def argmax_coords(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``... x h x w`` -> (``... x 2`` float32 index coordinates (x, y) of the maximum, ``...`` max values)."""
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.reshape(*heatmaps.shape[:-2], h * w)
    idx = flat.argmax(-1)
    maxvals = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    coords = np.stack([idx % w, idx // w], -1).astype(np.float32)
    return coords, maxvals.astype(np.float32)


def _gather(maps: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """maps: N x h x w; ys, xs: N ints (clipped) -> N values."""
    h, w = maps.shape[-2:]
    return maps[np.arange(len(maps)), np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]


def quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move integer peaks a quarter cell towards the higher neighbour, per axis, as the official HRNet
    ``get_final_preds`` does: only peaks with ``1 < px < w - 1`` and ``1 < py < h - 1`` move."""
    h, w = heatmaps.shape[-2:]
    maps = heatmaps.reshape(-1, h, w)
    c = coords.reshape(-1, 2).copy()
    px, py = np.floor(c[:, 0] + 0.5).astype(int), np.floor(c[:, 1] + 0.5).astype(int)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    dx = _gather(maps, py, px + 1) - _gather(maps, py, px - 1)
    dy = _gather(maps, py + 1, px) - _gather(maps, py - 1, px)
    c[:, 0] += np.where(inside, np.sign(dx) * 0.25, 0.0)
    c[:, 1] += np.where(inside, np.sign(dy) * 0.25, 0.0)
    return c.reshape(coords.shape).astype(np.float32)


def dark_refine(heatmaps: np.ndarray, coords: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK: Gaussian-blur each map (``kernel`` odd, 11 as in DARK for 64 x 48 maps; 0 = no blur),
    keep its maximum, take logs and move from the argmax by ``-H^-1 g`` (finite differences).
    Peaks with a non-positive-definite Hessian or at the border keep their coordinates."""
    h, w = heatmaps.shape[-2:]
    maps = np.asarray(heatmaps, np.float32).reshape(-1, h, w).copy()
    if kernel:
        for n, m in enumerate(maps):
            peak = m.max()
            b = cv2.GaussianBlur(m, (kernel, kernel), 0)
            bmax = b.max()
            maps[n] = b * (peak / bmax) if bmax > 0 else b
    logm = np.log(np.maximum(maps, 1e-10))
    c = coords.reshape(-1, 2).copy()
    px, py = np.floor(c[:, 0] + 0.5).astype(int), np.floor(c[:, 1] + 0.5).astype(int)
    inside = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)

    def at(dy: int, dx: int) -> np.ndarray:
        return _gather(logm, py + dy, px + dx).astype(np.float64)

    f = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = at(0, 1) - 2 * f + at(0, -1)
    hyy = at(1, 0) - 2 * f + at(-1, 0)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    ok = inside & (det > 1e-12) & (hxx < 0)  # a maximum: negative-definite Hessian
    safe = np.where(ok, det, 1.0)
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(-hxy * gx + hxx * gy) / safe
    ok &= (np.abs(ox) <= 1.0) & (np.abs(oy) <= 1.0)  # a step beyond the neighbours is not trusted
    c[:, 0] += np.where(ok, ox, 0.0)
    c[:, 1] += np.where(ok, oy, 0.0)
    return c.reshape(coords.shape).astype(np.float32)


def decode_heatmaps(heatmaps: np.ndarray, refine: str = "quarter", dark_kernel: int = 11):
    """``... x K x h x w`` heatmaps -> (``... x K x 2`` sub-cell index coordinates (x, y), ``... x K`` peak
    values). As in the official code, a map whose maximum is not positive gives coordinates (0, 0)."""
    if refine not in REFINEMENTS:
        raise ValueError(f"refine must be one of {REFINEMENTS}, not {refine!r}")
    heatmaps = np.asarray(heatmaps, np.float32)
    coords, maxvals = argmax_coords(heatmaps)
    if refine == "quarter":
        coords = quarter_offset(heatmaps, coords)
    elif refine == "dark":
        coords = dark_refine(heatmaps, coords, dark_kernel)
    coords *= (maxvals > 0)[..., None]
    return coords, maxvals


def heatmap_to_image(
    coords: np.ndarray,
    heatmap_hw: tuple[int, int],
    input_hw: tuple[int, int],
    image_hw: tuple[int, int],
) -> np.ndarray:
    """Heatmap index coordinates -> continuous pixel coordinates of the image that was resized
    (``cv2.resize``, half-pixel centres) from ``image_hw`` to the network input ``input_hw``.

    Index ``j`` is input pixel index ``s * j`` (``s`` = input / heatmap size, the output stride), i.e.
    continuous input coordinate ``s * j + 0.5``, then scaled by image / input size."""
    h, w = heatmap_hw
    Hin, Win = input_hw
    H, W = image_hw
    out = np.empty_like(np.asarray(coords, np.float32))
    out[..., 0] = (coords[..., 0] * (Win / w) + 0.5) * (W / Win)
    out[..., 1] = (coords[..., 1] * (Hin / h) + 0.5) * (H / Hin)
    return out
