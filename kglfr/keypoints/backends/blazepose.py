"""The ``blazepose`` pose backend: MediaPipe's BlazePose GHUM "full" landmark model, offline, on CPU.

The model file is ``pose_landmark_full.tflite`` from the ``mediapipe==0.10.21`` wheel (Apache-2.0),
run with ``ai-edge-litert`` (``pip install 'kglfr[pose]'``); see ``kglfr.keypoints.weights`` for where
the file is looked up and how ``kglfr keypoints --fetch-model`` gets it.

MediaPipe's own pipeline runs a person detector first and crops a rotated square around the body;
re-ID images are already person crops, so the landmark model runs on the crop directly: the crop is
centred in a square of side ``square`` x its longer side (default 1.25, the margin MediaPipe's own
ROI gives the body), the outside filled by repeating the edge pixels (``pad="edge"``, default; or
zeros), resized to 256 x 256, RGB in [0, 1]. On the synthetic dataset this setting found more
keypoints than a tight zero-padded square (infrared: 93 % of visible keypoints at confidence >= 0.3
against 82 %, mean error 5.1 % against 5.7 % of the image height). Of the model's 39 landmarks (33
BlazePose points + 6 auxiliary) the 17 COCO keypoints are BlazePose points 0, 2, 5, 7, 8, 11, 12, 13,
14, 15, 16, 23, 24, 25, 26, 27, 28, mapped back to the crop's pixels (the model's x, y are in input
pixels with 0 at the left/top edge, i.e. continuous coordinates) and clipped to the crop.

Confidence = sigmoid(visibility) x sigmoid(presence) x min(1, person / ``person_gate``), where
``person`` is the model's person score (``Identity_1``, already a probability) and ``person_gate``
defaults to 0.5. Visibility alone is not enough: on an empty or noise image the face landmarks get
visibilities above 0.9, while the person score is ~0; on crops with a person the score is mostly
above 0.5 (then the gate does nothing), and multiplying by it outright would push good keypoints of
a person scored 0.6 under the 0.3 validity threshold. ``person_gate=0`` turns the gate off.

Heatmaps (``heatmaps="gaussian"``, default): Gaussians of peak = confidence, sigma as HRNet's targets
(2 cells at 80 x 40), rendered at the keypoints on the ``heatmap_size`` grid spanning the crop
(``PoseOutput``'s convention). ``heatmaps="model"``: the model's own 64 x 64 heatmap channels
(logits, passed through a sigmoid) resampled from the square input to the crop's grid; they are
blobby and elongated along limbs, their scale does not follow the keypoint confidences, and
on hard (infrared) images they spread over the whole body.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from kglfr.errors import KglfrError
from kglfr.keypoints.backends.base import BatchInfo, PoseBackend, PoseOutput, file_sha256, register_backend
from kglfr.keypoints.heatmaps import HRNET_HEATMAP_HW, default_sigma, render_gaussians
from kglfr.keypoints.weights import blazepose_model_path

log = logging.getLogger(__name__)

# BlazePose landmark index of each COCO-17 keypoint, in COCO order.
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
INPUT_SIZE = 256
NUM_LANDMARKS = 39  # 33 body landmarks + 6 auxiliary (ROI) points
HEATMAP_MODES = ("gaussian", "model")
PADS = {"zero": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE}
POSE_EXTRA = "blazepose needs the pose extra: pip install 'kglfr[pose]'"


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise KglfrError(POSE_EXTRA) from None
    return Interpreter


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


@register_backend("blazepose")
class BlazePoseBackend(PoseBackend):
    """BlazePose full landmark model on re-ID crops (CPU, one image per call of the interpreter).

    Options: ``weights`` (the .tflite; default: see ``blazepose_model_path``), ``device`` (only "cpu"
    is supported; "cuda"/"auto" run on the CPU with a note in the log), ``threads`` (interpreter
    threads, default ``os.cpu_count()``), ``pad`` ("edge" or "zero"), ``square`` (side of the padded
    square relative to the crop's longer side, >= 1; default 1.25), ``heatmaps`` ("gaussian" or
    "model"), ``heatmap_size`` ((h, w), default 80 x 40), ``person_gate`` (default 0.5; 0 = off).
    """

    name = "blazepose"

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | None = "cpu",
        threads: int | None = None,
        pad: str = "edge",
        square: float = 1.25,
        heatmaps: str = "gaussian",
        heatmap_size: tuple[int, int] = HRNET_HEATMAP_HW,
        person_gate: float = 0.5,
    ) -> None:
        if pad not in PADS:
            raise KglfrError(f"unknown blazepose pad {pad!r}; choose one of {', '.join(PADS)}")
        if heatmaps not in HEATMAP_MODES:
            raise KglfrError(f"unknown blazepose heatmaps {heatmaps!r}; choose one of {', '.join(HEATMAP_MODES)}")
        if not square >= 1.0:
            raise KglfrError(f"blazepose square must be >= 1 (got {square})")
        if device not in (None, "cpu", "auto"):
            log.info("blazepose runs on the CPU (device %r ignored)", device)
        Interpreter = _interpreter_class()
        self.model_path = blazepose_model_path(weights)
        self._sha = file_sha256(self.model_path)[:16]
        self.pad, self.square, self.heatmap_mode = pad, float(square), heatmaps
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        if not 0.0 <= person_gate <= 1.0:
            raise KglfrError(f"blazepose person_gate must be in [0, 1] (got {person_gate})")
        self.person_gate = float(person_gate)
        try:
            self._it = Interpreter(model_path=str(self.model_path), num_threads=int(threads or os.cpu_count() or 1))
            self._it.allocate_tensors()
        except Exception as e:  # litert raises ValueError/RuntimeError for files that are not models
            raise KglfrError(f"cannot load the blazepose model {self.model_path}: {e}") from None
        self._check_tensors()

    def _check_tensors(self) -> None:
        """Find the tensors by name and shape rather than trusting their order."""
        ins = self._it.get_input_details()
        outs = {d["name"]: d for d in self._it.get_output_details()}
        want = {"Identity": (1, NUM_LANDMARKS * 5), "Identity_1": (1, 1), "Identity_3": (1, 64, 64, NUM_LANDMARKS)}
        bad = [n for n, shape in want.items() if n not in outs or tuple(outs[n]["shape"]) != shape]
        if len(ins) != 1 or tuple(ins[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or bad:
            found = ", ".join(f"{d['name']} {tuple(d['shape'])}" for d in [*ins, *outs.values()])
            raise KglfrError(
                f"{self.model_path} is not the BlazePose full landmark model (tensors: {found}); "
                "run `kglfr keypoints --fetch-model` or pass the pose_landmark_full.tflite of mediapipe 0.10.21"
            )
        if ins[0]["dtype"] != np.float32:
            raise KglfrError(f"{self.model_path}: expected a float32 input, found {ins[0]['dtype']}")
        self._in = ins[0]["index"]
        self._landmarks = outs["Identity"]["index"]
        self._person = outs["Identity_1"]["index"]
        self._heat = outs["Identity_3"]["index"]

    def identity(self) -> str:
        h, w = self.heatmap_size
        return (
            f"blazepose-full-{self.pad}-sq{self.square:g}-{self.heatmap_mode}{h}x{w}"
            f"-gate{self.person_gate:g}-{self._sha}"
        )

    def pose_input_hw(self, store_hw: tuple[int, int]) -> tuple[int, int]:
        """The crop size whose padded square is exactly the model's 256 x 256 input (no second
        resampling), at the store images' aspect: 205 x 102 for 288 x 144 stores at ``square`` 1.25."""
        side = round(INPUT_SIZE / self.square)
        h, w = store_hw
        return (side, max(1, round(side * w / h))) if h >= w else (max(1, round(side * h / w)), side)

    def _geometry(self, H: int, W: int) -> tuple[float, float, float]:
        """(k, ox, oy): crop pixel x maps to model-input pixel (x + ox) * k (continuous coordinates)."""
        side = self.square * max(H, W)
        return INPUT_SIZE / side, (side - W) / 2.0, (side - H) / 2.0

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 crop -> 256 x 256 x 3 float32 in [0, 1], the crop centred in a padded square."""
        H, W = image.shape[:2]
        k, ox, oy = self._geometry(H, W)
        # warpAffine works on pixel indices (centres at integers): idx' = (idx + 0.5 + o) * k - 0.5
        m = np.array([[k, 0, (0.5 + ox) * k - 0.5], [0, k, (0.5 + oy) * k - 0.5]], np.float64)
        src = image
        if k < 0.5:  # strong shrinking: pre-shrink with area averaging against aliasing
            src = cv2.resize(image, (max(1, round(W * 2 * k)), max(1, round(H * 2 * k))), interpolation=cv2.INTER_AREA)
            fx, fy = W / src.shape[1], H / src.shape[0]  # original pixels per pre-shrunk pixel
            m = np.array([[k * fx, 0, (0.5 * fx + ox) * k - 0.5], [0, k * fy, (0.5 * fy + oy) * k - 0.5]])
        out = cv2.warpAffine(
            src, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=PADS[self.pad], borderValue=(0, 0, 0)
        )
        return out.astype(np.float32) / 255.0

    def run_model(self, x: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """One 256 x 256 x 3 input -> (39 x 5 landmarks, person score, 64 x 64 x 39 heatmap logits)."""
        self._it.set_tensor(self._in, x[None])
        self._it.invoke()
        lm = self._it.get_tensor(self._landmarks).reshape(NUM_LANDMARKS, 5).copy()
        person = float(self._it.get_tensor(self._person).reshape(-1)[0])
        heat = self._it.get_tensor(self._heat)[0].copy()
        return lm, person, heat

    def _model_heatmaps(self, heat: np.ndarray, H: int, W: int) -> np.ndarray:
        """64 x 64 x 39 logits over the square input -> 17 x h x w sigmoid maps over the crop grid."""
        h, w = self.heatmap_size
        k, ox, oy = self._geometry(H, W)
        cell = INPUT_SIZE / heat.shape[0]  # model-input pixels per heatmap cell
        # centre of output cell (i, j) in crop pixels -> heatmap index coordinates (cell centres at integers)
        xs = ((np.arange(w) + 0.5) * (W / w) + ox) * k / cell - 0.5
        ys = ((np.arange(h) + 0.5) * (H / h) + oy) * k / cell - 0.5
        mx, my = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
        maps = np.empty((len(BLAZEPOSE_TO_COCO), h, w), np.float32)
        for c, b in enumerate(BLAZEPOSE_TO_COCO):
            maps[c] = cv2.remap(
                np.ascontiguousarray(heat[..., b]), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        return _sigmoid(maps).astype(np.float32)

    def predict_one(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One crop -> (17 x 3 keypoints (x, y, confidence) in crop pixels, 17 x h x w heatmaps, person score)."""
        H, W = image.shape[:2]
        lm, person, heat = self.run_model(self.model_input(image))
        k, ox, oy = self._geometry(H, W)
        sel = lm[list(BLAZEPOSE_TO_COCO)]
        x = np.clip(sel[:, 0] / k - ox, 0.0, W)
        y = np.clip(sel[:, 1] / k - oy, 0.0, H)
        conf = _sigmoid(sel[:, 3]) * _sigmoid(sel[:, 4])
        gate = min(1.0, person / self.person_gate) if self.person_gate > 0 else 1.0
        conf = conf * gate
        kp = np.stack([x, y, conf], -1).astype(np.float32)
        if self.heatmap_mode == "model":
            maps = self._model_heatmaps(heat, H, W) * np.float32(gate)
        else:
            maps = (
                render_gaussians(
                    kp[:, :2], np.ones(17, bool), (H, W), self.heatmap_size, default_sigma(self.heatmap_size)
                )
                * conf[:, None, None]
            )
        return kp, maps.astype(np.float32), person

    def predict(self, images: np.ndarray, info: BatchInfo | None = None) -> PoseOutput:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected B x H x W x 3 uint8 images, got {images.dtype} {images.shape}")
        h, w = self.heatmap_size
        kps = np.zeros((len(images), 17, 3), np.float32)
        maps = np.zeros((len(images), 17, h, w), np.float32)
        for i, image in enumerate(images):
            kps[i], maps[i], _ = self.predict_one(image)
        return PoseOutput(heatmaps=maps, keypoints=kps)
