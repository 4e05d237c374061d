"""Views of a training batch, and the channel augmentations of CAJ (Ye et al., ICCV 2021).

The sampler draws P identities x (K visible + K infrared) images. A training method says which views of
them its batch holds: a :class:`View` takes the drawn images of one modality (or all of them, in the
sampler's order), gives them their own geometric transform (pad, crop, flip) and then an optional
augmentation of the normalised images. The batch is the views one after the other, labels repeated per
view. KGLFR's batch is one view of all images; CAJ's is visible, visible channel-exchanged, infrared.

The channel augmentations work on normalised B x 3 x H x W images, as CAJ's code applies them after
``Normalize``; every random draw comes from the given generator, a fixed amount per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kglfr.data.records import Modality

__all__ = [
    "ALL_IMAGES",
    "CAJ_ERASE_FILL",
    "GREY_WEIGHTS",
    "View",
    "adaptive_grey",
    "channel_exchange",
    "channel_random_erasing",
]

Augment = Callable[[Tensor, torch.Generator], Tensor]
CAJ_ERASE_FILL = (0.4914, 0.4822, 0.4465)  # CAJ's ChannelRandomErasing fill, written into normalised images
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R 601 luma, CAJ's ChannelAdapGray


@dataclass(frozen=True)
class View:
    """One view of the drawn images: ``modality`` None takes every image in the sampler's order; ``augment``
    (normalised images, generator) -> images runs after the geometric transform."""

    name: str
    modality: Modality | None = None
    augment: Augment | None = None

    def rows(self, modalities: np.ndarray) -> np.ndarray | None:
        """The positions of this view's images among the drawn ones (None: all of them, as they are)."""
        return None if self.modality is None else np.flatnonzero(modalities == int(self.modality))


ALL_IMAGES = View("all")


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _copy_channel(images: Tensor, channel: Tensor) -> Tensor:
    """Each image's channel ``channel[i]`` (-1: keep the image) copied into all three channels."""
    pick = channel.clamp(min=0).view(-1, 1, 1, 1).expand(-1, 1, *images.shape[-2:])
    copied = images.gather(1, pick).expand_as(images)
    return torch.where((channel >= 0).view(-1, 1, 1, 1), copied, images)


def channel_exchange(images: Tensor, generator: torch.Generator) -> Tensor:
    """CAJ's ``ChannelExchange(gray=2)``: each image becomes one of its R, G, B channels (uniform), copied
    into all three."""
    u = _uniform(images.shape[0], generator, images.device)
    return _copy_channel(images, (u * 3).long().clamp(max=2))


def adaptive_grey(images: Tensor, generator: torch.Generator, prob: float = 0.5) -> Tensor:
    """CAJ's ``ChannelAdapGray``: one of four outcomes, uniform: R, G or B copied into all three channels,
    or (the fourth) with probability ``prob`` the grey image 0.2989 R + 0.587 G + 0.114 B, else the image."""
    n = images.shape[0]
    u = _uniform(2 * n, generator, images.device)
    pick = (u[:n] * 4).long().clamp(max=3)
    out = _copy_channel(images, torch.where(pick < 3, pick, -1))
    w = torch.tensor(GREY_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    grey = (images * w).sum(1, keepdim=True).expand_as(images)
    return torch.where(((pick == 3) & (u[n:] < prob)).view(-1, 1, 1, 1), grey, out)


def channel_random_erasing(
    images: Tensor,
    generator: torch.Generator,
    prob: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio_min: float = 0.3,
    fill: tuple[float, float, float] = CAJ_ERASE_FILL,
    attempts: int = 100,
) -> Tensor:
    """CAJ's ``ChannelRandomErasing``: with probability ``prob`` an image gets one rectangle set to ``fill``
    (per channel). Area uniform in ``area`` x H*W, aspect h/w uniform in [ratio_min, 1/ratio_min],
    h, w = round(sqrt(area * aspect)), round(sqrt(area / aspect)); the first of ``attempts`` draws with
    h < H and w < W is used (none: the image is kept); the top-left corner is uniform where it fits."""
    b, _, height, width = images.shape
    dev = generator.device
    u = torch.rand(b, attempts, 2, generator=generator, device=dev, dtype=torch.float64)
    corner = torch.rand(b, 2, generator=generator, device=dev, dtype=torch.float64)
    erase = torch.rand(b, generator=generator, device=dev) < prob
    target = (area[0] + (area[1] - area[0]) * u[..., 0]) * (height * width)
    aspect = ratio_min + (1 / ratio_min - ratio_min) * u[..., 1]
    h, w = torch.sqrt(target * aspect).round().long(), torch.sqrt(target / aspect).round().long()
    fits = (h < height) & (w < width)
    first = fits.float().argmax(1)  # the first attempt that fits (0 when none does: masked below)
    h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
    erase = erase & fits.any(1)
    y0 = (corner[:, 0] * (height - h + 1)).long()
    x0 = (corner[:, 1] * (width - w + 1)).long()
    ys, xs = torch.arange(height, device=dev), torch.arange(width, device=dev)
    inside = ((ys[None, :] >= y0[:, None]) & (ys[None, :] < (y0 + h)[:, None]))[:, :, None] & (
        (xs[None, :] >= x0[:, None]) & (xs[None, :] < (x0 + w)[:, None])
    )[:, None, :]
    mask = (inside & erase[:, None, None]).to(images.device)[:, None]
    value = torch.tensor(fill, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return torch.where(mask, value, images)
