"""What a training method is: its config defaults, the views of its batch, its batch hook and its losses.

The trainer's step, with the method's parts marked::

    batch = data.make_batch(...)                 # the method's views of P x (K vis + K ir) drawn images
    images, extra = method.prepare(batch, ...)   # on the device: erasing, draws for the losses
    out = model(images, batch.modalities)
    losses = method.losses(out, batch, cfg, extra)   # Losses(total, parts)

The base class is AGW's recipe (one view of all images, ID loss + a global triplet, no erasing); the
methods override what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from omegaconf import DictConfig

from kglfr.data.views import ALL_IMAGES, View
from kglfr.train.losses import adp_triplet, batch_hard_triplet, cross_entropy, weighted_regularized_triplet

# (stream, device) -> the step's generator of that stream (kglfr.train.data's STREAM_*), per process rank
Streams = Callable[..., torch.Generator]


@dataclass
class Losses:
    """The loss to back-propagate and its detached parts (0-d tensors on the device, not yet read back)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


def adp_normalized(cfg: DictConfig) -> bool:
    """Whether the ADP triplet takes L2-normalised features: ``loss.adp_normalize`` on, or auto from random
    initialisation (large pooled features put the published squared difference at its clamp, no gradient)."""
    mode = cfg.loss.adp_normalize
    return mode == "on" or (mode == "auto" and str(cfg.model.pretrained) == "none")


def global_triplet(features: torch.Tensor, labels: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """The triplet loss ``loss.triplet`` names on the global (pooled) features."""
    L = cfg.loss
    if L.triplet == "wrt":
        return weighted_regularized_triplet(features, labels)[0]
    if L.triplet == "adp":
        return adp_triplet(features, labels, L.adp_alpha, L.adp_gamma, L.adp_square, adp_normalized(cfg))[0]
    return batch_hard_triplet(features, labels, L.global_margin)[0]


class Method:
    """A training method. ``name`` is set by ``register_method``; ``defaults`` (nested config values) sit
    between the schema and the preset, so a preset states only what differs from its method."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}

    def views(self, cfg: DictConfig) -> tuple[View, ...]:
        """The views of the drawn images that a batch holds, in batch order."""
        return (ALL_IMAGES,)

    def label(self, cfg: DictConfig) -> str:
        """What a report calls the method this config trains."""
        return self.name

    def published(self, cfg: DictConfig, protocol: str) -> dict | None:
        """The published figures (percent, with their source) of what this config trains, or None."""
        from kglfr.eval.published import published

        return published(self.name, protocol)

    def needs_keypoints(self, cfg: DictConfig) -> bool:
        """Whether a batch needs the store's keypoint cache (heatmaps, part centres)."""
        return False

    def problems(self, cfg: DictConfig) -> list[tuple[str, str]]:
        """(key, what is wrong) for settings this method cannot honour; the config check reports them."""
        return []

    def prepare(self, images: torch.Tensor, batch, cfg: DictConfig, streams: Streams) -> tuple[torch.Tensor, dict]:
        """The batch hook, on the device: the images the model sees, and what the losses need besides."""
        return images, {}

    def losses(self, out: dict[str, torch.Tensor], batch, cfg: DictConfig, extra: dict) -> Losses:
        """The step's loss (:meth:`terms`), with its total as the last part, ``loss``."""
        losses = self.terms(out, batch, cfg, extra)
        losses.parts["loss"] = losses.total.detach()
        return losses

    def terms(self, out: dict[str, torch.Tensor], batch, cfg: DictConfig, extra: dict) -> Losses:
        """ID loss + ``loss.global_weight`` x the global triplet; parts id, triplet, acc."""
        L, labels = cfg.loss, batch.labels
        logits = out["logits"].float()
        loss_id = cross_entropy(logits, labels, L.label_smoothing)
        loss_g = global_triplet(out["global"].float(), labels, cfg)
        total = L.id_weight * loss_id + L.global_weight * loss_g
        acc = (logits.argmax(1) == labels).float().mean()
        return Losses(total, {"id": loss_id.detach(), "triplet": loss_g.detach(), "acc": acc})
