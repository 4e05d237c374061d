"""Heatmap helpers: Gaussian rendering, resampling between resolutions, peak finding, quantisation.

Convention (the pose-backend contract): a heatmap of h x w cells spans an image of H x W pixels,
cell (i, j) covering pixels [j*W/w, (j+1)*W/w) x [i*H/h, (i+1)*H/h); its centre is at pixel
((j + 0.5) * W/w, (i + 0.5) * H/h). Keypoints are in pixels, pixel (r, c) covering [c, c+1) x [r, r+1).
"""

from __future__ import annotations

import numpy as np

# HRNet's COCO training targets: Gaussians of sigma 2 heatmap cells at stride 4 (64 x 48 maps of a
# 256 x 192 input). Run on a 320 x 160 input it gives 80 x 40 maps; we keep sigma = 2 cells at that
# size, i.e. sigma = 2/80 of the map height, scaled with the map height for other sizes.
HRNET_HEATMAP_HW = (80, 40)
HRNET_SIGMA_CELLS = 2.0


def default_sigma(heatmap_hw: tuple[int, int]) -> float:
    """Gaussian sigma, in cells, of HRNet-like targets at ``heatmap_hw``."""
    return HRNET_SIGMA_CELLS * heatmap_hw[0] / HRNET_HEATMAP_HW[0]


def render_gaussians(
    points: np.ndarray,
    visible: np.ndarray,
    image_hw: tuple[int, int],
    heatmap_hw: tuple[int, int],
    sigma: float | None = None,
) -> np.ndarray:
    """Gaussian heatmaps of peak 1 at ``points`` (``... x K x 2`` image pixels, x first).

    Returns ``... x K x h x w`` float32; maps of points that are not ``visible`` are all zero.
    ``sigma`` is in heatmap cells (default ``default_sigma(heatmap_hw)``).
    """
    h, w = heatmap_hw
    H, W = image_hw
    sigma = default_sigma(heatmap_hw) if sigma is None else sigma
    points = np.asarray(points, np.float64)
    u = points[..., 0] * (w / W)  # ... x K, cell units
    v = points[..., 1] * (h / H)
    cols = np.arange(w) + 0.5
    rows = np.arange(h) + 0.5
    gx = np.exp(-((cols - u[..., None]) ** 2) / (2 * sigma**2))  # ... x K x w
    gy = np.exp(-((rows - v[..., None]) ** 2) / (2 * sigma**2))  # ... x K x h
    maps = gy[..., :, None] * gx[..., None, :]
    maps *= np.asarray(visible, bool)[..., None, None]
    return maps.astype(np.float32)


def _axis_weights(n_in: int, n_out: int, method: str = "bilinear") -> np.ndarray:
    """n_out x n_in matrix resampling one axis of cells spanning the same extent.

    ``bilinear``: each output cell takes the input's value at its centre, interpolated linearly
    between input cell centres (half-pixel convention, edges clamped; ``F.interpolate(mode="bilinear",
    align_corners=False)`` without anti-aliasing). ``area`` (shrinking only): each output cell averages
    the input cells it overlaps, weighted by overlap (``cv2.INTER_AREA``).
    """
    if n_out == n_in:
        return np.eye(n_in)
    if method not in ("bilinear", "area"):
        raise ValueError(f"method must be 'bilinear' or 'area', not {method!r}")
    m = np.zeros((n_out, n_in))
    if n_out < n_in and method == "area":
        scale = n_in / n_out
        for o in range(n_out):
            a, b = o * scale, (o + 1) * scale
            for i in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
                m[o, i] = max(0.0, min(b, i + 1) - max(a, i))
        return m / scale
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def resize_maps(maps: np.ndarray, out_hw: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """Resample ``... x h x w`` maps to ``... x out_h x out_w`` over the same image extent; float32.

    ``bilinear`` (default) samples the maps at the new cell centres, which keeps a smooth heatmap's
    peak height and is what the cache stores (measured best for the 18 x 9 KMLFR mask); ``area``
    averages (anti-aliased, flattens peaks). Growing is bilinear either way.
    """
    h, w = maps.shape[-2:]
    if (h, w) == tuple(out_hw):
        return np.asarray(maps, np.float32)
    ry = _axis_weights(h, out_hw[0], method).astype(np.float32)
    rx = _axis_weights(w, out_hw[1], method).astype(np.float32)
    return np.einsum("oh,...hw,pw->...op", ry, np.asarray(maps, np.float32), rx, optimize=True)


def quantise(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``... x h x w`` float maps -> (uint8 maps, float32 ``...`` scales), map ~= q / 255 * scale.

    Negative values become 0 and values above 1 are clipped (heatmaps are in [0, 1]); each map is
    stretched to 0..255 by its own maximum, so a faint map keeps its shape.
    """
    m = np.clip(np.asarray(maps, np.float32), 0.0, 1.0)
    scale = m.max(axis=(-2, -1))
    safe = np.where(scale > 0, scale, 1.0)
    q = np.rint(m * (255.0 / safe)[..., None, None])
    return q.astype(np.uint8), scale.astype(np.float32)


def dequantise(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * (np.asarray(scale, np.float32) / 255.0)[..., None, None]


def peaks(maps: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """The argmax of each ``... x h x w`` map as (x, y, value) in image pixels (cell centres)."""
    h, w = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], h * w)
    idx = flat.argmax(-1)
    value = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    H, W = image_hw
    x = (idx % w + 0.5) * (W / w)
    y = (idx // w + 0.5) * (H / h)
    return np.stack([x, y, value], -1).astype(np.float32)
