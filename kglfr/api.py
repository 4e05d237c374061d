"""Using a trained model from Python: ``kglfr.load(checkpoint)`` -> :class:`ReIDModel`.

::

    import kglfr
    m = kglfr.load("runs/sysu-kglfr/checkpoint.pt")
    q = m.embed(["query_ir.jpg"], "infrared")            # 1 x D, L2-normalised
    g = m.embed(gallery_images, "visible")               # list of H x W x 3 uint8 RGB arrays or paths
    ranking = (q @ g.T).argsort(1)[:, ::-1]

Images are resized to the checkpoint's ``input_size`` (as ``kglfr prepare`` does: area when shrinking,
bilinear when growing) and ImageNet-normalised; a B x 3 x H x W tensor (uint8, or float in [0, 1]) is
resized on its device. Also here: image-folder listing and the ``DIR/<pid>/<camera>_*.jpg`` layout parser
that ``kglfr extract`` and ``kglfr search`` share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kglfr.data.records import Modality
from kglfr.errors import KglfrError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MODALITY_NAMES = {
    "visible": Modality.VISIBLE, "vis": Modality.VISIBLE, "rgb": Modality.VISIBLE,
    "infrared": Modality.INFRARED, "ir": Modality.INFRARED, "thermal": Modality.INFRARED, "nir": Modality.INFRARED,
}  # fmt: skip


def parse_modality(modality) -> Modality:
    """``Modality``, 0/1 or a name (visible/vis/rgb, infrared/ir/thermal/nir); one clear error otherwise."""
    if modality is None:
        raise KglfrError("no modality given: say whether the images are visible or infrared")
    if isinstance(modality, str):
        m = MODALITY_NAMES.get(modality.strip().lower())
        if m is None:
            raise KglfrError(f"unknown modality {modality!r}; use visible or infrared")
        return m
    try:
        return Modality(int(modality))
    except (ValueError, TypeError):
        raise KglfrError(f"unknown modality {modality!r}; use visible (0) or infrared (1)") from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted; hidden files and folders skipped)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise KglfrError(f"image folder {folder} does not exist")
    files = sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip
    if not files:
        raise KglfrError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return files


_CAMERA = re.compile(r"^(?:cam|c)?(\d+)(?:_|$)", re.IGNORECASE)


def parse_layout(relpath: str | Path) -> tuple[int, int]:
    """(pid, camera) of an image at ``<pid>/<camera>_<anything>.jpg`` under a folder (the custom layout);
    pid -1 when its folder is not a number, camera 0 when its name does not start with one (``c3_``,
    ``cam3_`` and ``3_`` all give 3)."""
    parts = Path(relpath).parts
    pid = int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else -1
    m = _CAMERA.match(Path(relpath).stem)
    cam = int(m.group(1)) if m else 0
    return pid, cam


def read_image(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB, or a ``KglfrError`` naming the file."""
    from kglfr.data.store import decode_image

    path = Path(path).expanduser()
    if not path.is_file():
        raise KglfrError(f"image {path} does not exist")
    try:
        return decode_image(path)
    except Exception as e:  # PIL raises several types for corrupt data
        raise KglfrError(f"cannot read image {path}: not a readable image file or damaged ({type(e).__name__})"
                         ) from None  # fmt: skip


class ReIDModel:
    """A trained kglfr model ready for inference: ``embed`` images of one modality into features."""

    def __init__(self, model: torch.nn.Module, checkpoint: dict, device: str | torch.device = "cpu",
                 path: str | Path | None = None) -> None:  # fmt: skip
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.path = None if path is None else Path(path)
        size = checkpoint.get("input_size") or (
            checkpoint.get("config", {}).get("data", {}).get("height", 288),
            checkpoint.get("config", {}).get("data", {}).get("width", 144),
        )
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self._sha: str | None = None

    @property
    def feature_dim(self) -> int:
        return int(self.model.feature_dim)

    @property
    def sha256(self) -> str:
        """Of the checkpoint file, or of the weights for a model built in memory (keys feature caches)."""
        if self._sha is None:
            if self.path is None:  # built in memory: hash the weights
                import hashlib

                h = hashlib.sha256()
                for k, v in self.model.state_dict().items():
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
                self._sha = h.hexdigest()
            else:
                from kglfr.eval.features import file_sha256

                self._sha = file_sha256(self.path if self.path.is_file() else self.path / "checkpoint.pt")
        return self._sha

    def preprocess(self, images) -> torch.Tensor:
        """List of arrays / paths, or a B x 3 x H x W tensor -> normalised float batch at ``input_size``."""
        from kglfr.data.store import resize
        from kglfr.data.transforms import TestTransform

        transform = TestTransform(self.input_size)
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise KglfrError(f"an image tensor must be B x 3 x H x W, got {tuple(images.shape)}")
            return transform(images.to(self.device))["images"]
        if isinstance(images, (str, Path, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        h, w = self.input_size
        arrays = []
        for im in images:
            a = read_image(im) if isinstance(im, (str, Path)) else np.asarray(im)
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=2)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise KglfrError(f"an image must be H x W x 3 uint8 RGB, got {a.shape} {a.dtype}")
            arrays.append(resize(np.ascontiguousarray(a), h, w))
        if not arrays:
            raise KglfrError("no images to embed")
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(self.device)
        return transform(x)["images"]

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor, modality, which: str = "bn", flip: bool = False) -> torch.Tensor:
        """Features of an already preprocessed batch (see :meth:`preprocess`), L2-normalised."""
        m = parse_modality(modality)
        f = self.model.extract(x, m, which=which, normalise=False)
        if flip:
            f = f + self.model.extract(x.flip(-1), m, which=which, normalise=False)
        return torch.nn.functional.normalize(f.float(), dim=1)

    def embed(self, images, modality, which: str = "bn", flip: bool = False, batch_size: int = 64,
              progress: bool = False) -> np.ndarray:  # fmt: skip
        """N x D float32 L2-normalised features of ``images`` (all of ``modality``).

        ``images``: a list of H x W x 3 uint8 RGB arrays or image paths (any size), an N x H x W x 3
        uint8 array, or a B x 3 x H x W tensor. ``which``: "bn" (the headline) or "pool".
        """
        if which not in ("bn", "pool"):
            raise KglfrError(f"which must be 'bn' or 'pool', got {which!r}")
        m = parse_modality(modality)
        if isinstance(images, torch.Tensor):
            return self.embed_tensor(self.preprocess(images), m, which, flip).cpu().numpy()
        if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        images = list(images)
        if not images:
            raise KglfrError("no images to embed")
        from tqdm import tqdm

        out = np.zeros((len(images), self.feature_dim), np.float32)
        with tqdm(total=len(images), desc="features", unit="img", disable=not progress, mininterval=1.0) as bar:
            for s in range(0, len(images), batch_size):
                chunk = images[s : s + batch_size]
                out[s : s + len(chunk)] = self.embed_tensor(self.preprocess(chunk), m, which, flip).cpu().numpy()
                bar.update(len(chunk))
        return out

    def __repr__(self) -> str:
        return (f"ReIDModel({self.path}, arch={getattr(self.model, 'arch', '?')}, input_size={self.input_size}, "
                f"feature_dim={self.feature_dim})")  # fmt: skip


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> ReIDModel:
    """The trained model of a ``kglfr train`` checkpoint (file or run folder) as a :class:`ReIDModel`."""
    from kglfr.train.checkpoint import load_model

    model, data = load_model(checkpoint, device)
    return ReIDModel(model, data, device, checkpoint)


def embed_paths(model: ReIDModel, paths: Sequence[Path], modality, **kw) -> np.ndarray:
    return model.embed([Path(p) for p in paths], modality, **kw)
