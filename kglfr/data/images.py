"""Image decoding: every image file kglfr reads becomes H x W x 3 uint8 RGB here.

8-bit images (JPEG, 8-bit PNG, palette, greyscale, RGBA, ...) are converted to RGB as PIL does.
Images of more than 8 bits per value (16-bit greyscale PNG/TIFF as thermal cameras write them, 32-bit
integer or float TIFF: PIL modes ``I;16*``, ``I``, ``F``) are scaled to 0..255 before the conversion,
which would otherwise clip every value above 255 to white:

- by default per image, min-max: the smallest finite value becomes 0 and the largest 255 (a constant
  image becomes black);
- with ``value_range=(lo, hi)``: ``lo`` becomes 0 and ``hi`` 255 for every image, values outside are
  clipped (keeps brightness comparable across images, e.g. a thermal camera's calibrated range).

The scaled value is ``round((v - lo) / (hi - lo) * 255)``; NaN becomes 0. ``value_range`` does not
apply to 8-bit images.

An EXIF orientation tag (phone cameras store a portrait photo as a landscape one tagged "rotate 90")
is applied here, so a tagged image and the same image physically rotated decode to the same pixels, in
``prepare``, ``extract``, ``search`` and Grad-CAM alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kglfr.errors import KglfrError

HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# Part of a store's fingerprint: stores decoded before high bit-depth images were scaled (where 16-bit
# images came out white) are rebuilt once by the next ``prepare``.
DECODER_VERSION = 3  # 3: the EXIF orientation is applied


def check_value_range(value_range: tuple[float, float] | None) -> tuple[float, float] | None:
    """``value_range`` as two floats with lo < hi, or None; raises ``KglfrError`` naming the parameter."""
    if value_range is None:
        return None
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise KglfrError(f"value_range must be two numbers (lo, hi), got {value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise KglfrError(f"value_range must be two finite numbers with lo < hi, got {lo:g} {hi:g}")
    return lo, hi


def to_uint8(values: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Scale an array of any numeric type to uint8 (see the module doc): min-max, or ``value_range``."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if value_range is not None:
        lo, hi = value_range
    elif finite.any():
        lo, hi = float(v[finite].min()), float(v[finite].max())
    else:
        lo, hi = 0.0, 0.0
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    scaled = np.clip((np.where(finite, v, lo) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def decode_image(path: str | Path, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Decode an image file to H x W x 3 uint8 RGB; raises ``OSError`` for corrupt or truncated files.

    High bit-depth images are scaled per image (min-max) or by the fixed ``value_range`` (lo, hi)."""
    with Image.open(path) as opened:
        opened.load()  # PIL raises here on truncated data, where cv2 would return a half-grey image
        im = ImageOps.exif_transpose(opened)  # a copy, upright, when the file has an orientation tag
        if im.mode in HIGH_DEPTH_MODES:
            grey = to_uint8(np.asarray(im), value_range)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


ORIENTATION_TAG = 0x0112
SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`decode_image` returns it (EXIF orientation applied), read
    from its header."""
    with Image.open(path) as im:
        w, h = im.size
        turned = im.getexif().get(ORIENTATION_TAG) in SWAPS_SIDES
    return (h, w) if turned else (w, h)
