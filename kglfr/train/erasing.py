"""Random Erasing and keypoint erasing (KEGFR, eq. 1; choices in docs/assumptions.md) on normalised image batches.

Images are B x C x H x W float, ImageNet-normalised, so the default fill 0 is the per-channel mean.
Rectangles: area uniform in ``area`` x H*W, aspect h/w log-uniform in ``ratio``, h = sqrt(area*ratio),
w = sqrt(area/ratio), rounded and capped at the image size. Boxes are (y0, y1, x0, x1), half-open, in
pixels (pixel (r, c) covers [c, c+1) x [r, r+1), as in ``kglfr.data.transforms``).

Every random draw comes from the given ``torch.Generator`` (on its own device; results are moved to
the images' device), in a fixed order and a fixed amount per batch, so a seeded generator reproduces
a batch exactly. Everything is vectorised over the batch; no Python loop over samples or identities.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "apply_boxes",
    "boxes_from_centres",
    "keypoint_erasing",
    "random_centres",
    "random_erasing",
    "sample_box_sizes",
]

Range = tuple[float, float]
DEFAULT_AREA: Range = (0.02, 0.4)
DEFAULT_RATIO: Range = (0.3, 1 / 0.3)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    """Uniform [0, 1) draws on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else "cpu"
    out = torch.rand(shape, generator=generator, device=gen_device)
    return out if device is None else out.to(device)


def sample_box_sizes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    area: Range = DEFAULT_AREA,
    ratio: Range = DEFAULT_RATIO,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` rectangle sizes (h, w), n x 2 long, each in [1, height] x [1, width].

    Area uniform in [area[0], area[1]] x height*width, aspect h/w log-uniform in [ratio[0], ratio[1]];
    h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)), then capped at the image size.
    """
    if not (0 < area[0] <= area[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"bad area {area} or ratio {ratio} range")
    u = _rand((n, 2), generator, None).double()  # computed where drawn: the same sizes on every device
    target = (area[0] + (area[1] - area[0]) * u[:, 0]) * (height * width)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[:, 1])
    h = torch.sqrt(target * aspect).round().long().clamp(1, height)
    w = torch.sqrt(target / aspect).round().long().clamp(1, width)
    sizes = torch.stack([h, w], dim=1)
    return sizes if device is None else sizes.to(device)


def random_centres(
    n: int, height: int, width: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """``n`` centres (x, y), n x 2 float, uniform over the image [0, width) x [0, height)."""
    u = _rand((n, 2), generator, device)
    return u * torch.tensor([width, height], dtype=u.dtype, device=u.device)


def boxes_from_centres(centres: Tensor, sizes: Tensor, height: int, width: int) -> Tensor:
    """Rectangles of ``sizes`` (n x 2, h w) centred on ``centres`` (n x 2, x y pixels), clipped to the image.

    Returns n x 4 long (y0, y1, x0, x1), half-open. Before clipping, y0 = floor(cy - h/2 + 0.5) and
    y1 = y0 + h (likewise x), so the box centre is within 0.5 px of the given one; a centre inside
    the image always keeps its own pixel after clipping.
    """
    c = centres.to(torch.float64)
    s = sizes.to(device=c.device, dtype=torch.float64)
    y0 = torch.floor(c[:, 1] - s[:, 0] / 2 + 0.5)
    x0 = torch.floor(c[:, 0] - s[:, 1] / 2 + 0.5)
    y1, x1 = y0 + s[:, 0], x0 + s[:, 1]
    boxes = torch.stack([y0.clamp(0, height), y1.clamp(0, height), x0.clamp(0, width), x1.clamp(0, width)], dim=1)
    return boxes.long()


def apply_boxes(
    images: Tensor, boxes: Tensor, apply: Tensor, fill: float | Tensor = 0.0, inplace: bool = False
) -> Tensor:
    """Set the pixels of box ``boxes[i]`` (y0, y1, x0, x1) of image i to ``fill`` where ``apply[i]``.

    ``fill``: a float or a tensor broadcastable to C x 1 x 1 (e.g. one value per channel, shape C).
    One broadcast mask over the batch; returns a new tensor unless ``inplace``.
    """
    if images.ndim != 4 or boxes.shape != (images.shape[0], 4) or apply.shape != (images.shape[0],):
        raise ValueError(
            f"expected B x C x H x W images, B x 4 boxes, B apply; got {tuple(images.shape)}, "
            f"{tuple(boxes.shape)}, {tuple(apply.shape)}"
        )
    _, c, h, w = images.shape
    b = boxes.to(images.device)
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    inside = (ys >= b[:, 0].view(-1, 1, 1)) & (ys < b[:, 1].view(-1, 1, 1))
    inside = inside & (xs >= b[:, 2].view(-1, 1, 1)) & (xs < b[:, 3].view(-1, 1, 1))
    mask = (inside & apply.to(images.device).view(-1, 1, 1)).unsqueeze(1)  # B x 1 x H x W
    if isinstance(fill, Tensor):
        value = fill.to(device=images.device, dtype=images.dtype)
        value = value.view(1, c, 1, 1) if value.numel() == c and value.ndim <= 1 else value
    else:
        value = torch.tensor(float(fill), device=images.device, dtype=images.dtype)
    out = torch.where(mask, value, images)
    return images.copy_(out) if inplace else out


def random_erasing(
    images: Tensor,
    generator: torch.Generator | None = None,
    prob: float = 0.5,
    area: Range = DEFAULT_AREA,
    ratio: Range = DEFAULT_RATIO,
    fill: float | Tensor = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Random Erasing (Zhong et al.): per sample with probability ``prob``, one rectangle fully inside
    the image (size from ``sample_box_sizes``, top-left uniform over the valid positions) set to ``fill``.

    Returns (erased copy, {"boxes": B x 4 long, "applied": B bool}). Draw order: sizes, positions, apply.
    """
    bsz, _, h, w = images.shape
    dev = images.device
    sizes = sample_box_sizes(bsz, h, w, generator, area, ratio, device=dev)
    u = _rand((bsz, 2), generator, dev)
    y0 = torch.floor(u[:, 0] * (h - sizes[:, 0] + 1)).long().clamp(max=h - sizes[:, 0])
    x0 = torch.floor(u[:, 1] * (w - sizes[:, 1] + 1)).long().clamp(max=w - sizes[:, 1])
    boxes = torch.stack([y0, y0 + sizes[:, 0], x0, x0 + sizes[:, 1]], dim=1)
    applied = _rand((bsz,), generator, dev) < prob
    return apply_boxes(images, boxes, applied, fill), {"boxes": boxes, "applied": applied}


def keypoint_erasing(
    images: Tensor,
    pids: Tensor,
    parts: Tensor,
    part_valid: Tensor,
    generator: torch.Generator | None = None,
    prob: float = 0.5,
    area: Range = DEFAULT_AREA,
    ratio: Range = DEFAULT_RATIO,
    fill: float | Tensor = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KEGFR keypoint erasing (eq. 1): one body part per identity, erased around each sample's own centre.

    ``pids``: B identity labels; ``parts``: B x J x 2 part centres (x, y) in the images' pixels;
    ``part_valid``: B x J bool. Each identity of the batch draws one part j uniformly among the parts
    valid in at least one of its samples (uniformly over all J when none is), so that a part nobody
    shows is never picked while another is available. Every sample of that identity, visible and
    infrared, gets a rectangle (size drawn per sample) centred on its own centre of part j, clipped to
    the image; a sample whose part j is invalid, not finite or outside the image falls back to a random
    centre. Each sample is erased with probability ``prob``.

    Returns (erased copy, info) with info "part" (B long), "boxes" (B x 4 long), "applied" (B bool),
    "fallback" (B bool). Draw order (fixed amount per batch): part keys B x J, random centres B x 2,
    sizes B x 2, apply B.
    """
    bsz, _, h, w = images.shape
    if parts.ndim != 3 or parts.shape[0] != bsz or parts.shape[2] != 2:
        raise ValueError(f"expected parts B x J x 2 with B={bsz}, got {tuple(parts.shape)}")
    if part_valid.shape != parts.shape[:2] or pids.shape != (bsz,):
        raise ValueError(
            f"expected part_valid {tuple(parts.shape[:2])} and pids ({bsz},), "
            f"got {tuple(part_valid.shape)} and {tuple(pids.shape)}"
        )
    dev = images.device
    num_parts = parts.shape[1]
    pids, parts, part_valid = pids.to(dev), parts.to(dev), part_valid.to(dev).bool()
    _, ident = torch.unique(pids, return_inverse=True)  # B, identity index in [0, P)
    # One random key per (identity slot, part); the argmax over the allowed parts is a uniform choice.
    keys = _rand((bsz, num_parts), generator, dev)
    slots = (torch.arange(bsz, device=dev).unsqueeze(1) == ident.unsqueeze(0)).float()  # identity slot x sample
    shown = (slots @ part_valid.float()) > 0  # parts valid in some sample of the identity (exact, deterministic)
    allowed = shown | ~shown.any(1, keepdim=True)
    id_part = torch.where(allowed, keys, torch.full_like(keys, -1.0)).argmax(1)
    part = id_part[ident]
    rows = torch.arange(bsz, device=dev)
    centre = parts[rows, part].float()
    inside = torch.isfinite(centre).all(1) & (centre[:, 0] >= 0) & (centre[:, 0] < w)
    inside = inside & (centre[:, 1] >= 0) & (centre[:, 1] < h)
    fallback = ~(part_valid[rows, part] & inside)
    random_c = random_centres(bsz, h, w, generator, device=dev)
    centre = torch.where(fallback.unsqueeze(1), random_c, centre)
    sizes = sample_box_sizes(bsz, h, w, generator, area, ratio, device=dev)
    boxes = boxes_from_centres(centre, sizes, h, w)
    applied = _rand((bsz,), generator, dev) < prob
    out = apply_boxes(images, boxes, applied, fill)
    return out, {"part": part, "boxes": boxes, "applied": applied, "fallback": fallback}
