"""Using a trained model from Python: ``kglfr.load(checkpoint)`` -> :class:`ReIDModel`.

::

    import kglfr
    m = kglfr.load("runs/sysu-kglfr/checkpoint.pt")
    q = m.embed(["query_ir.jpg"], "infrared")            # 1 x D, L2-normalised
    g = m.embed(gallery_images, "visible")               # list of H x W x 3 uint8 RGB arrays or paths
    ranking = (q @ g.T).argsort(1)[:, ::-1]
    res = m.search("probes/", "infrared", "visible_gallery/", top=10)   # what kglfr search does
    res.draw("grid.png")

Images are resized to the checkpoint's ``input_size`` (as ``kglfr prepare`` does: area when shrinking,
bilinear when growing) and ImageNet-normalised; a B x 3 x H x W tensor (uint8, or float in [0, 1]) is
resized on its device. Features come from :mod:`kglfr.eval.extract` (one backbone pass per batch), the
extractor that evaluation, ``kglfr extract`` and ``kglfr search`` use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kglfr.data.datasets.base import IMAGE_SUFFIXES, parse_layout
from kglfr.data.datasets.base import image_folder as list_images  # recursive, one error when empty
from kglfr.eval.extract import MODALITY_NAMES, calibrate_images, embed_images, parse_modality, preprocess, read_image
from kglfr.model.quantize import float_model
from kglfr.runtime import parse_device, resolve_policy

IMAGE_EXTS = IMAGE_SUFFIXES  # the names this module had before they moved
__all__ = ["IMAGE_EXTS", "MODALITY_NAMES", "ReIDModel", "embed_paths", "list_images", "load", "parse_layout",
           "parse_modality", "read_image"]  # fmt: skip


class ReIDModel:
    """A trained kglfr model ready for inference: ``embed`` images of one modality into features."""

    def __init__(self, model: torch.nn.Module, checkpoint: dict, device: str | torch.device = "cpu",
                 path: str | Path | None = None, amp: str = "auto", command: str = "extract") -> None:  # fmt: skip
        self.device = parse_device(device)
        # autocast dtype and memory format (kglfr.runtime); command: what amp=auto decides for
        self.policy = resolve_policy(self.device, amp, command=command)
        self.model = self.policy.model(model).eval()
        self.checkpoint = checkpoint
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
                for k, v in float_model(self.model).state_dict().items():
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
                self._sha = h.hexdigest()
            else:
                from kglfr.io import file_sha256

                self._sha = file_sha256(self.path if self.path.is_file() else self.path / "checkpoint.pt")
        return self._sha

    def preprocess(self, images) -> torch.Tensor:
        """List of arrays / paths, or a B x 3 x H x W tensor -> normalised float batch at ``input_size``."""
        return preprocess(images, self.input_size, self.device)

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor, modality, which: str = "bn", flip: bool = False) -> torch.Tensor:
        """Features of an already preprocessed batch (see :meth:`preprocess`), L2-normalised."""
        from kglfr.eval.extract import check_which, embed_batch

        check_which(which)
        f = embed_batch(self.model, x, parse_modality(modality), flip, self.policy.amp_dtype)[which]
        return torch.nn.functional.normalize(f.float(), dim=1)

    def embed(self, images, modality, which: str = "bn", flip: bool = False, batch_size: int = 64,
              progress: bool = False) -> np.ndarray:  # fmt: skip
        """N x D float32 L2-normalised features of ``images`` (all of ``modality``).

        ``images``: a list of H x W x 3 uint8 RGB arrays or image paths (any size), one H x W x 3 array, an
        N x H x W x 3 uint8 RGB array, or a B x 3 x H x W RGB tensor, uint8 in 0..255 or float in 0..1 (not
        normalised: this resizes and ImageNet-normalises). ``which``: "bn" (the headline) or "pool".
        """
        return embed_images(self.model, images, modality, self.input_size, self.device, which, flip, batch_size,
                            progress, self.policy.amp_dtype)  # fmt: skip

    def calibrate(self, images, modality) -> bool:
        """An int8 model (``amp="int8"``): calibrate the backbone of ``modality`` on ``images`` (up to 128
        of them, evenly spread; taken as :meth:`embed` takes them), replacing the calibration it would
        otherwise take from the first images it embeds. False for other models: nothing to calibrate."""
        return calibrate_images(self.model, images, modality, self.input_size, self.device)

    def search(self, query, query_modality, gallery, **options):
        """Rank ``gallery`` (an image folder, cached, or a features ``.npz``) for ``query`` (an image or a
        folder) as ``kglfr search`` does: a :class:`kglfr.inference.search.SearchResult` (``.index``,
        ``.scores``, ``.warnings``, ``.draw(out)``); ``options``: see :func:`kglfr.inference.search.search`."""
        from kglfr.inference.search import search

        return search(self, query, query_modality, gallery, **options)

    def __repr__(self) -> str:
        return (f"ReIDModel({self.path}, arch={getattr(float_model(self.model), 'arch', '?')}, "
                f"input_size={self.input_size}, "
                f"feature_dim={self.feature_dim}, amp={self.policy.amp_name})")  # fmt: skip


def load(checkpoint: str | Path, device: str | torch.device = "cpu", amp: str = "auto",
         command: str = "extract") -> ReIDModel:  # fmt: skip
    """The trained model of a ``kglfr train`` checkpoint (file or run folder) as a :class:`ReIDModel`.
    ``amp``: auto (the runtime policy: bf16 on a GPU that has it, fp16 on older GPUs, bf16 on a CPU with
    native bf16, float32 on other CPUs; float32 everywhere for ``command="evaluate"``), off (float32), bf16,
    fp16, or int8 (CPU: int8 backbones calibrated on the first images of each modality the model embeds,
    :mod:`kglfr.model.quantize`); channels_last follows the policy. ``command``: one of
    :data:`kglfr.runtime.COMMANDS`."""
    from kglfr.runtime import parse_device
    from kglfr.train.checkpoint import load_model

    model, data = load_model(checkpoint, parse_device(device))
    return ReIDModel(model, data, device, checkpoint, amp, command)


def embed_paths(model: ReIDModel, paths: Sequence[Path], modality, **kw) -> np.ndarray:
    return model.embed([Path(p) for p in paths], modality, **kw)
