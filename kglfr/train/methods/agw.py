"""AGW (Ye et al., TPAMI 2021), as its cross-modal code trains it: ID loss + weighted regularised triplet on
one view of P x (K vis + K ir) images; no erasing (``augment.erasing=random`` adds Random Erasing)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from kglfr.train.data import STREAM_ERASING
from kglfr.train.erasing import random_erasing
from kglfr.train.methods import register_method
from kglfr.train.methods.base import Method, Streams


def erasing_ranges(cfg: DictConfig) -> dict:
    A = cfg.augment
    return {"prob": A.erasing_prob, "area": (A.area_min, A.area_max), "ratio": (A.ratio_min, 1.0 / A.ratio_min)}


@register_method("agw")
class AGW(Method):
    defaults = {"loss": {"triplet": "wrt", "global_weight": 1.0, "kmlfr": False}, "augment": {"erasing": "none"}}

    def problems(self, cfg: DictConfig) -> list[tuple[str, str]]:
        out = []
        if cfg.augment.erasing == "keypoint":
            out.append(("augment.erasing", "keypoint erasing is KGLFR's (method.name=kglfr); agw takes none or random"))
        if cfg.loss.kmlfr:
            out.append(("loss.kmlfr", "the keypoint-masked local triplet is KGLFR's (method.name=kglfr)"))
        return out

    def prepare(self, images: torch.Tensor, batch, cfg: DictConfig, streams: Streams) -> tuple[torch.Tensor, dict]:
        if cfg.augment.erasing == "random":
            images, _ = random_erasing(images, streams(STREAM_ERASING, images.device), **erasing_ranges(cfg))
        return images, {}
