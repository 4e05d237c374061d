"""The oracle pose backend: the synthetic dataset's ground-truth keypoints, as a pose network would give them.

``kglfr synth`` writes ``kglfr_keypoints.json`` beside the images: per image relpath, 17 COCO
keypoints ``[x, y, v]`` in source-image pixels (v = 1 visible, 0 occluded). The oracle scales them to
the store image and renders HRNet-like Gaussian heatmaps (80 x 40 maps spanning the input image,
sigma 2 cells; see ``kglfr.keypoints.heatmaps``). A visible keypoint has confidence 1 and a heatmap
of peak 1; an occluded one has confidence 0 and an all-zero heatmap. Used to test the keypoint
pipeline end to end and to train on synthetic data without a pose network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kglfr.data.synth.sidecar import SIDECAR_NAME, read_keypoints_sidecar
from kglfr.errors import KglfrError
from kglfr.keypoints.backends.base import BatchInfo, PoseBackend, PoseOutput, file_sha256, register_backend
from kglfr.keypoints.heatmaps import HRNET_HEATMAP_HW, default_sigma, render_gaussians

SIDECAR = SIDECAR_NAME


def read_sidecar(root: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """Read ``root/kglfr_keypoints.json``: ({relpath: 17 x 3 float32 (x, y, v)}, sha256 of the file)."""
    path = Path(root) / SIDECAR
    if not path.is_file():
        raise KglfrError(
            f"the oracle backend needs a synthetic dataset (made by 'kglfr synth'): no {SIDECAR} in {root}"
        )
    return read_keypoints_sidecar(path), file_sha256(path)


@register_backend("oracle")
class OracleBackend(PoseBackend):
    """Ground-truth keypoints of a synthetic dataset at ``root`` (the store's source root).

    ``heatmap_size``: (h, w) of the output maps (default 80 x 40, HRNet's on a 320 x 160 input);
    ``sigma``: Gaussian sigma in cells (default 2 at 80 x 40, scaled with the map height).
    ``weights`` and ``device`` are accepted for the common backend signature; weights must be None.
    """

    name = "oracle"

    def __init__(
        self,
        root: str | Path | None = None,
        weights: str | Path | None = None,
        device: str = "cpu",
        heatmap_size: tuple[int, int] = HRNET_HEATMAP_HW,
        sigma: float | None = None,
    ) -> None:
        if weights is not None:
            raise KglfrError("the oracle backend reads ground truth and takes no weights")
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = default_sigma(self.heatmap_size) if sigma is None else float(sigma)
        self._root = Path(root) if root is not None else None
        self._tables: dict[Path, tuple[dict[str, np.ndarray], str]] = {}

    def _table(self, root: Path) -> tuple[dict[str, np.ndarray], str]:
        root = Path(root)
        if root not in self._tables:
            self._tables[root] = read_sidecar(root)
        return self._tables[root]

    def identity(self) -> str:
        if self._root is None:
            raise KglfrError("the oracle backend needs the dataset root (build it with root=...)")
        _, sha = self._table(self._root)
        h, w = self.heatmap_size
        return f"oracle:sidecar={sha}:maps={h}x{w}:sigma={self.sigma:g}"

    def ground_truth(self, info: BatchInfo, image_hw: tuple[int, int]) -> np.ndarray:
        """B x 17 x 3 (x, y, v) ground truth scaled from each source image to ``image_hw``."""
        table, _ = self._table(Path(info.root) if info.root is not None else self._root)
        missing = [r for r in info.relpaths if r not in table]
        if missing:
            raise KglfrError(
                f"{len(missing)} images have no ground-truth keypoints in {Path(info.root) / SIDECAR} "
                f"(e.g. {missing[0]}); is the store prepared from this synthetic dataset?"
            )
        gt = np.stack([table[r] for r in info.relpaths]).astype(np.float32)  # B x 17 x 3
        src = np.asarray(info.source_hw, np.float32).reshape(-1, 2)
        gt[..., 0] *= image_hw[1] / src[:, 1:2]
        gt[..., 1] *= image_hw[0] / src[:, 0:1]
        return gt

    def predict(self, images: np.ndarray, info: BatchInfo) -> PoseOutput:
        image_hw = images.shape[1:3]
        gt = self.ground_truth(info, image_hw)
        visible = gt[..., 2] > 0
        heatmaps = render_gaussians(gt[..., :2], visible, image_hw, self.heatmap_size, self.sigma)
        keypoints = gt.copy()
        keypoints[..., 2] = visible.astype(np.float32)
        return PoseOutput(heatmaps=heatmaps, keypoints=keypoints)
