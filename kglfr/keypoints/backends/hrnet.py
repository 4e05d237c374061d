"""The ``hrnet`` pose backend: HRNet-W32 (or W48) with the official COCO weights, frozen.

Weights: the official checkpoints of deep-high-resolution-net.pytorch, e.g.
``pose_hrnet_w32_256x192.pth`` (``--weights FILE``, or the file of that name in ``$KGLFR_HOME`` /
``~/.cache/kglfr``). They load with strict key matching into ``kglfr.keypoints.hrnet_arch.PoseHRNet``;
files saved as ``{"state_dict": ...}`` or from ``DataParallel`` (``module.`` prefixes) are accepted,
with a warning naming the mapping, and so are mmpose's (``backbone.`` + the official names,
``keypoint_head.final_layer.``; what ``kglfr keypoints --fetch-model hrnet`` downloads). The width
(W32 or W48) is read from the file unless ``arch`` is given. Files are read with
``torch.load(weights_only=True)``: no pickled code runs.

Inference: the keypoint cache gives each ORIGINAL image already resized to the network input
(``pose_input_hw``, default 320 x 160, H x W); other sizes are resized here with ``cv2``. Images are
ImageNet-normalised and run in batches under ``torch.inference_mode`` (fp16 autocast on CUDA). With
``flip=True`` the horizontally flipped image is run too and its heatmaps flipped back (mirror, COCO
left/right swap, one-cell shift as the official code) and averaged. Keypoints are decoded from the
heatmaps as in the official ``get_final_preds`` (argmax + quarter-cell shift towards the higher
neighbour; ``refine="dark"`` for DARK's Taylor refinement) and mapped to the input image's pixels;
confidence is the heatmap maximum clipped to [0, 1].

Heatmaps: the raw network output, B x 17 x 80 x 40 for a 320 x 160 input, spanning the whole store
image. HRNet was trained with the target of input pixel ``p`` at cell ``p / 4``, so its cell ``j``
stands for input pixel ``4 j`` (continuous ``4 j + 0.5``), not for the cell's centre ``4 j + 2`` that
``PoseOutput``'s convention gives it: read with that convention, a peak shows 0.375 cell (1.35 pixels
of a 288-pixel-high image) right of and below where the network puts it. The keypoints are decoded
with HRNet's own convention; the heatmaps are returned unshifted (they are used as soft masks, at
18 x 9 and coarser, where the offset is a small fraction of a cell).

torch is imported when the backend is built, so that importing the backend registry (and using the
``blazepose`` backend) works where torch is not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from kglfr.errors import KglfrError
from kglfr.io import TorchLoadError, torch_load_safe
from kglfr.keypoints.backends.base import BatchInfo, PoseBackend, PoseOutput, file_sha256, register_backend
from kglfr.keypoints.decode import REFINEMENTS, decode_heatmaps, flip_back, heatmap_to_image
from kglfr.keypoints.weights import hrnet_weights_path

if TYPE_CHECKING:
    import torch

    from kglfr.keypoints.hrnet_arch import PoseHRNet

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEFAULT_INPUT = (320, 160)  # H x W, as the paper runs it on re-ID crops
_SHOWN = 5  # keys listed in an error
ARCH_NAMES = ("w32", "w48")


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from ``{"state_dict": ...}`` and ``module.`` prefixes."""
    import torch

    try:
        obj = torch_load_safe(path)
    except TorchLoadError as e:
        what = "an unsafe file" if e.unsafe else "not a PyTorch checkpoint, or a truncated one"
        raise KglfrError(
            f"cannot read pose weights {path} ({path.stat().st_size} bytes): {what} ({e.reason}); pass the "
            "official pose_hrnet_w32_256x192.pth"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            log.warning("%s: using the state dict stored under %r", path, key)
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KglfrError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__})")
    state = dict(obj)
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            log.warning("%s: removing the %r prefix from all %d keys", path, prefix, len(state))
            state = {k[len(prefix) :]: v for k, v in state.items()}
    from kglfr.keypoints.hrnet_arch import from_mmpose, is_mmpose_layout

    if is_mmpose_layout(list(state)):
        log.info("%s: mmpose layout (backbone. / keypoint_head.final_layer.), mapped to the official names", path)
        state = from_mmpose(state)
    return state


def load_hrnet_weights(model: PoseHRNet, path: str | Path) -> None:
    """Load ``path`` into ``model`` with strict key matching (see ``_read_checkpoint`` for accepted
    wrappers and mmpose's layout); see :func:`load_hrnet_state`."""
    path = Path(path)
    load_hrnet_state(model, _read_checkpoint(path), path)


def detect_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"w32"`` / ``"w48"``: the HRNet width a state dict holds (its first high-resolution branch's
    channels), or None when it is not an HRNet of a known width."""
    from kglfr.keypoints.hrnet_arch import width_of

    width = width_of(state)
    return f"w{width}" if width is not None and f"w{width}" in ARCH_NAMES else None


def load_hrnet_state(model: PoseHRNet, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a state dict read from ``path`` into ``model`` strictly. Checkpoints saved before BatchNorm
    counted batches lack ``num_batches_tracked``: those entries, unused at inference, are kept from the
    model with a warning. Anything else that does not match raises ``KglfrError`` with the counts and
    the first few keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing and not unexpected and all(k.endswith("num_batches_tracked") for k in missing):
        log.warning("%s has no num_batches_tracked entries (%d); keeping the model's", path, len(missing))
        state = {**state, **{k: own[k] for k in missing}}
        missing = []
    if missing or unexpected:
        raise KglfrError(
            f"{path} is not an HRNet-{model.cfg.width} pose checkpoint: {len(state)} entries, {len(own)} expected; "
            f"{len(missing)} missing (e.g. {', '.join(missing[:_SHOWN]) or '-'}), "
            f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:_SHOWN]) or '-'})"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        found = detect_arch(state)
        hint = f"; the file holds HRNet-{found.upper()} (leave arch out: it is read from the file)" if found else ""
        shown = ", ".join(f"{k} {a} vs {b}" for k, a, b in wrong[:3])
        raise KglfrError(
            f"{path}: {len(wrong)} tensors have other shapes than HRNet-{model.cfg.width}'s ({shown}){hint}"
        )
    model.load_state_dict(state, strict=True)


def _resolve_device(device: str | None) -> torch.device:
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KglfrError(f"device {device!r} requested but torch sees no CUDA GPU; use device='cpu'")
    return dev


@register_backend("hrnet")
class HRNetBackend(PoseBackend):
    """HRNet top-down pose network on whole re-ID crops.

    Options: ``weights`` (checkpoint path; default: the official file name in the kglfr home),
    ``device`` ("cpu", "cuda", "auto"), ``arch`` ("w32" or "w48"; default: read from the weights file, else
    w32), ``train_size`` ("256x192" or
    "384x288", only for the default file name), ``input_size`` (H, W; default 320 x 160), ``flip``
    (flip test, default off), ``flip_shift`` (the official one-cell shift of the flipped maps, default
    on), ``refine`` ("quarter", "dark", "none"), ``batch_size``, ``fp16``
    (default: on for CUDA), ``random_init`` (no weights: random parameters, for tests and benchmarks).
    """

    name = "hrnet"

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | None = "cpu",
        arch: str | None = None,
        train_size: str = "256x192",
        input_size: tuple[int, int] = DEFAULT_INPUT,
        flip: bool = False,
        flip_shift: bool = True,
        refine: str = "quarter",
        batch_size: int = 16,
        fp16: bool | None = None,
        random_init: bool = False,
        seed: int = 0,
    ) -> None:
        import torch

        from kglfr.keypoints.hrnet_arch import PoseHRNet

        if arch is not None and arch not in ARCH_NAMES:
            raise KglfrError(f"unknown hrnet arch {arch!r}; choose one of {', '.join(ARCH_NAMES)}")
        if refine not in REFINEMENTS:
            raise KglfrError(f"unknown keypoint refinement {refine!r}; choose one of {', '.join(REFINEMENTS)}")
        h, w = int(input_size[0]), int(input_size[1])
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise KglfrError(f"hrnet input size must be multiples of 32, got {h} x {w}")
        self.arch, self.input_size, self.flip, self.refine = arch or "w32", (h, w), bool(flip), refine
        self.flip_shift = bool(flip_shift)
        self.batch_size = max(1, int(batch_size))
        self.device = _resolve_device(device)
        self.fp16 = self.device.type == "cuda" if fp16 is None else bool(fp16)
        if self.fp16 and self.device.type != "cuda":
            raise KglfrError("hrnet fp16 needs a CUDA device")
        if random_init:
            if weights is not None:
                raise KglfrError("pass either weights or random_init, not both")
            self.weights_path, self._weights_tag = None, f"random{seed}"
            self.arch = arch or "w32"
            with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
                torch.manual_seed(seed)
                self.model = PoseHRNet(self.arch)
        else:
            self.weights_path = hrnet_weights_path(weights, self.arch, train_size)
            self._weights_tag = file_sha256(self.weights_path)[:16]
            state = _read_checkpoint(self.weights_path)
            self.arch = arch or detect_arch(state) or "w32"  # not given: the width the file holds
            self.model = PoseHRNet(self.arch)
            load_hrnet_state(self.model, state, self.weights_path)
        self.model.eval().requires_grad_(False).to(self.device)

    def identity(self) -> str:
        h, w = self.input_size
        extra = "" if self.refine == "quarter" else f"-{self.refine}"
        extra += "-noshift" if self.flip and not self.flip_shift else ""
        extra += "-fp16" if self.fp16 else ""
        return f"hrnet-{self.arch}-{h}x{w}-flip{int(self.flip)}{extra}-{self._weights_tag}"

    def pose_input_hw(self, store_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input: the original image is resized straight to it (320 x 160 by default)."""
        return self.input_size

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """B x H x W x 3 uint8 RGB -> B x 3 x h x w float32, resized and ImageNet-normalised."""
        import torch

        h, w = self.input_size
        H, W = images.shape[1:3]
        interp = cv2.INTER_AREA if h * w < H * W else cv2.INTER_LINEAR
        if (h, w) == (H, W):
            resized = images
        else:
            resized = np.stack([cv2.resize(im, (w, h), interpolation=interp) for im in images])
        x = (resized.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def heatmaps(self, x: torch.Tensor) -> np.ndarray:
        """Network heatmaps (flip-averaged if ``flip``) for a normalised batch: B x 17 x h/4 x w/4 float32."""
        import torch

        x = x.to(self.device, non_blocking=True)
        if self.flip:
            x = torch.cat([x, x.flip(3)])
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            out = self.model(x).float().cpu().numpy()
        if self.flip:
            n = len(out) // 2
            out = 0.5 * (out[:n] + flip_back(out[n:], shift=self.flip_shift))
        return out.astype(np.float32, copy=False)

    def predict(self, images: np.ndarray, info: BatchInfo | None = None) -> PoseOutput:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected B x H x W x 3 uint8 images, got {images.dtype} {images.shape}")
        H, W = images.shape[1:3]
        maps = [
            self.heatmaps(self.preprocess(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        hm = (
            np.concatenate(maps)
            if maps
            else np.zeros((0, 17, self.input_size[0] // 4, self.input_size[1] // 4), np.float32)
        )
        coords, maxvals = decode_heatmaps(hm, self.refine)
        xy = heatmap_to_image(coords, hm.shape[-2:], self.input_size, (H, W))
        xy = np.clip(xy, 0.0, np.array([W, H], np.float32))  # the quarter shift may step 0.5 px outside
        kp = np.concatenate([xy, np.clip(maxvals, 0.0, 1.0)[..., None]], -1).astype(np.float32)
        return PoseOutput(heatmaps=hm, keypoints=kp)
