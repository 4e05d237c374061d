"""The interface every pose backend implements, and the backend registry.

A backend takes a batch of images (the originals resized to its ``pose_input_hw``, or the store's
images) and returns COCO-17 heatmaps and keypoints in the coordinates of those images. Adding a
backend is one file with ``@register_backend("name")``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kglfr.errors import KglfrError
from kglfr.io import file_sha256  # noqa: F401  (re-exported: the backends import it from here)
from kglfr.keypoints.coco import COCO17

__all__ = ["COCO17", "BatchInfo", "PoseBackend", "PoseOutput", "backend_names", "build_backend", "register_backend"]


@dataclass
class PoseOutput:
    """Output of a backend for B images of size H x W.

    ``heatmaps``: B x 17 x h x w float32, COCO order, spanning the whole input image (cell (i, j)
    covers pixels [j*W/w, (j+1)*W/w) x [i*H/h, (i+1)*H/h)), peak value = confidence, roughly in [0, 1].
    ``keypoints``: B x 17 x 3 float32: x, y in input pixels (pixel (r, c) covers [c, c+1) x [r, r+1)),
    and a confidence in [0, 1].
    """

    heatmaps: np.ndarray
    keypoints: np.ndarray


@dataclass(frozen=True)
class BatchInfo:
    """What a backend may know about the images besides their pixels (the oracle needs it)."""

    relpaths: Sequence[str]  # paths relative to the dataset root
    source_hw: np.ndarray  # B x 2, the size of each original image before the store resized it
    root: Path  # the dataset root


class PoseBackend(ABC):
    """Base class. Subclasses set ``name`` and implement ``identity`` and ``predict``."""

    name: str = ""

    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the backend's output could change (name, weights hash,
        input size, options). The cache is keyed to it."""

    @abstractmethod
    def predict(self, images: np.ndarray, info: BatchInfo) -> PoseOutput:
        """``images``: B x H x W x 3 uint8 RGB (see ``pose_input_hw``)."""

    def pose_input_hw(self, store_hw: tuple[int, int]) -> tuple[int, int] | None:
        """The (H, W) the cache resizes each ORIGINAL image to before ``predict``; None: give the
        backend the store's images as they are (a backend that does not look at pixels)."""
        return None


BackendFactory = Callable[..., PoseBackend]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def wrap(factory: BackendFactory) -> BackendFactory:
        _BACKENDS[name] = factory
        return factory

    return wrap


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def build_backend(name: str, **options) -> PoseBackend:
    """Build backend ``name``; options: ``weights`` (path or None), ``device`` ("cpu"/"cuda"), and
    backend-specific ones. Unknown names raise ``KglfrError`` listing the valid ones."""
    if name not in _BACKENDS:
        raise KglfrError(f"unknown pose backend {name!r}; choose one of {', '.join(backend_names())}")
    return _BACKENDS[name](**options)
