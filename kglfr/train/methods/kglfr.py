"""KGLFR-Net (the paper): ID loss + 0.5 x batch-hard triplet on KEGFR-erased images + 0.5 x the KMLFR
keypoint-masked local triplet (eq. 6). ``augment.erasing`` (keypoint, random, none) and ``loss.kmlfr`` give
the Table 2 ablation rows; the schema's defaults are this method's."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from kglfr.train.data import STREAM_ERASING, STREAM_KEYPOINT
from kglfr.train.erasing import keypoint_erasing, random_erasing
from kglfr.train.losses import batch_hard_triplet, keypoint_mask, masked_local_features
from kglfr.train.methods import register_method
from kglfr.train.methods.agw import erasing_ranges
from kglfr.train.methods.base import Losses, Method, Streams


def erase(images: torch.Tensor, batch, cfg: DictConfig, generator: torch.Generator) -> torch.Tensor:
    """KEGFR or Random Erasing on the (normalised) batch, as ``augment.erasing`` asks; fill 0 = the channel mean."""
    if cfg.augment.erasing == "keypoint":
        images, _ = keypoint_erasing(images, batch.pids, batch.parts, batch.part_valid, generator,
                                     **erasing_ranges(cfg))  # fmt: skip
    elif cfg.augment.erasing == "random":
        images, _ = random_erasing(images, generator, **erasing_ranges(cfg))
    return images


@register_method("kglfr")
class KGLFR(Method):
    defaults: dict = {}

    def needs_keypoints(self, cfg: DictConfig) -> bool:
        return cfg.augment.erasing == "keypoint" or bool(cfg.loss.kmlfr)

    def label(self, cfg: DictConfig) -> str:
        """The Table 2 row the switches make: KGLFR (KEGFR + KMLFR), KEGFR, KMLFR, RE, RE + KMLFR or baseline."""
        erasing, kmlfr = cfg.augment.erasing, bool(cfg.loss.kmlfr)
        if erasing == "keypoint":
            return "KGLFR" if kmlfr else "KEGFR"
        if erasing == "random":
            return "RE + KMLFR" if kmlfr else "RE"
        return "KMLFR" if kmlfr else "baseline"

    def published(self, cfg: DictConfig, protocol: str) -> dict | None:
        """KGLFR's figures (Table 1); an ablation row's from the paper's Table 2 (SYSU-MM01 all-search)."""
        if self.label(cfg) == "KGLFR":
            return super().published(cfg, protocol)
        if protocol != "sysu-all":
            return None
        from kglfr.train.ablation import TABLE2

        switches = (cfg.augment.erasing == "random", cfg.augment.erasing == "keypoint", bool(cfg.loss.kmlfr))
        for row in TABLE2:
            if (row.random_erasing, row.kegfr, row.kmlfr) == switches and row.paper:
                return {"rank1": row.paper[0], "mAP": row.paper[1], "source": f"paper (Table 2 row {row.idx})"}
        return None

    def prepare(self, images: torch.Tensor, batch, cfg: DictConfig, streams: Streams) -> tuple[torch.Tensor, dict]:
        """Erasing on the device (``STREAM_ERASING``); the step's KMLFR keypoint (``STREAM_KEYPOINT``, CPU)."""
        if cfg.augment.erasing != "none":
            images = erase(images, batch, cfg, streams(STREAM_ERASING, images.device))
        extra = {}
        if cfg.loss.kmlfr:
            extra["keypoint"] = int(torch.randint(0, 13, (1,), generator=streams(STREAM_KEYPOINT)))
        return images, extra

    def terms(self, out: dict[str, torch.Tensor], batch, cfg: DictConfig, extra: dict) -> Losses:
        """The base terms plus ``loss.local_weight`` x the KMLFR triplet (eqs. 3-5) under ``loss.kmlfr``."""
        losses = super().terms(out, batch, cfg, extra)
        if cfg.loss.kmlfr:
            mask = keypoint_mask(batch.heatmaps, extra["keypoint"])
            local = masked_local_features(out["feature_map"].float(), mask)
            loss_l, _ = batch_hard_triplet(local, batch.labels, cfg.loss.local_margin)
            losses.total = losses.total + cfg.loss.local_weight * loss_l
            losses.parts["local"] = loss_l.detach()
        return losses
