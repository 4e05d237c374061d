"""The ground-truth keypoint sidecar of a synthetic dataset: ``<root>/kglfr_keypoints.json``.

::

    {"format": "kglfr-synth-keypoints", "version": 1,
     "order": ["nose", "left_eye", ..., "right_ankle"],          # the 17 COCO keypoints
     "coordinates": "...",                                       # the convention, in words
     "images": {"cam3/0001/0002.jpg": [[x, y, v], ... 17 rows], ...}}

Keys are the image paths relative to the dataset root, exactly as the dataset reader gives them
(``ImageRecord.relpath``). x, y are in pixels of the written image, x right and y down, with pixel
(i, j) covering [j, j+1) x [i, i+1), so the centre of the top-left pixel is (0.5, 0.5). v is 1 when the
keypoint shows in the image and 0 when it is outside the image, under an occluder, or hidden by the
person's own torso or head (the far shoulder in a side view, the face seen from behind). "left" is the
person's left, as in COCO.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kglfr.data.synth.figure import KEYPOINT_NAMES
from kglfr.errors import DatasetError
from kglfr.io import write_atomic

SIDECAR_NAME = "kglfr_keypoints.json"
FORMAT = "kglfr-synth-keypoints"
VERSION = 1
COORDINATES = (
    "x right, y down, in pixels of the written image; pixel (i, j) covers [j, j+1) x [i, i+1), "
    "so the centre of the top-left pixel is (0.5, 0.5); v = 1 visible, 0 outside or occluded"
)


def write_keypoints_sidecar(root: str | Path, keypoints: Mapping[str, np.ndarray]) -> Path:
    """Write ``{relpath: (17, 3) array}`` as the sidecar of ``root`` (sorted by path, 2 decimals)."""
    images = {
        rel: [[round(float(x), 2), round(float(y), 2), int(v > 0)] for x, y, v in np.asarray(kp)]
        for rel, kp in sorted(keypoints.items())
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "order": list(KEYPOINT_NAMES),
        "coordinates": COORDINATES,
        "images": images,
    }
    path = Path(root) / SIDECAR_NAME
    write_atomic(path, lambda f: f.write(json.dumps(payload, separators=(",", ":")) + "\n"))
    return path


def read_keypoints_sidecar(root: str | Path) -> dict[str, np.ndarray]:
    """Read the ground-truth keypoints of a synthetic dataset: ``{relpath: float32 array (17, 3)}``.

    ``root`` is the dataset folder (or the sidecar file itself). Raises ``DatasetError`` when the file
    is missing or does not follow the format described in this module.
    """
    path = Path(root).expanduser()
    if path.is_dir() or path.name != SIDECAR_NAME:
        path = path / SIDECAR_NAME
    if not path.is_file():
        raise DatasetError(
            f"no keypoint sidecar at {path}: only datasets written by 'kglfr synth' carry ground-truth "
            "keypoints; use a pose backend for other datasets"
        )
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: keypoint sidecar is not readable JSON ({e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DatasetError(f'{path}: not a keypoint sidecar (expected "format": "{FORMAT}")')
    if payload.get("version") != VERSION:
        raise DatasetError(
            f"{path}: keypoint sidecar version {payload.get('version')!r} is not supported (expected {VERSION})"
        )
    if payload.get("order") != list(KEYPOINT_NAMES):
        raise DatasetError(f"{path}: keypoint order must be the 17 COCO keypoints ({', '.join(KEYPOINT_NAMES)})")
    images = payload.get("images")
    if not isinstance(images, dict) or not images:
        raise DatasetError(f'{path}: "images" must map image paths to keypoints and must not be empty')
    out: dict[str, np.ndarray] = {}
    for rel, rows in images.items():
        try:
            kp = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            kp = None
        if kp is None or kp.shape != (len(KEYPOINT_NAMES), 3):
            raise DatasetError(f"{path}: keypoints of {rel!r} must be 17 rows of [x, y, v]")
        if not np.isfinite(kp).all() or not np.isin(kp[:, 2], (0.0, 1.0)).all():
            raise DatasetError(f"{path}: keypoints of {rel!r} must be finite with v = 0 or 1")
        out[rel] = kp
    return out
