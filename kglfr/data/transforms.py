"""Batch transforms that move images, keypoint heatmaps and part centres together.

Training: resize to 288 x 144 (a no-op for a store prepared at that size), pad 10 with black, random
crop back to 288 x 144, horizontal flip with probability 0.5, ImageNet normalisation. The heatmaps
(any resolution; they span their image) are moved by the same crop and flip in their own resolution
with an affine ``grid_sample``, and a flip mirrors them and swaps their left/right channels, so that they
equal what the pose network would output on the transformed image. Part centres and keypoints are
mapped analytically (x -> W - x on a flip) and their left/right labels swapped. Every flip goes through
``kglfr.keypoints.skeleton`` (``flip_heatmaps``, ``flip_keypoints``, ``swap_left_right``).

Everything runs on whole batches with torch ops, on the device the tensors are on; the random draws
come from a ``torch.Generator`` so a batch is reproducible. Infrared images enter as 3 identical
channels: the prepared store already holds them that way, so no special case is needed here.

Coordinates: pixel (r, c) covers [c, c+1) x [r, r+1); a point at x lands at x - (dx - pad) after a crop
at offset dx of the padded image, and at W - x after a flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kglfr.keypoints.skeleton import flip_heatmaps, flip_keypoints, swap_left_right

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_SIZE = (288, 144)


def store_batch_to_tensor(images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """B x H x W x 3 uint8 from the store -> B x 3 x H x W uint8 tensor (a channels-last view, no copy on CPU)."""
    t = torch.as_tensor(images)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected B x H x W x 3 images, got shape {tuple(t.shape)}")
    return t.to(device, non_blocking=True).permute(0, 3, 1, 2)


def _as_float01(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def _resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a batch (float [0, 1] out); anti-aliased when shrinking, like the store's INTER_AREA."""
    x = _as_float01(images)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink).clamp_(0, 1)


def normalise(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] B x 3 x H x W -> (x - mean) / std, float32."""
    scale = 1.0 / (255.0 if images.dtype == torch.uint8 else 1.0)
    s = torch.tensor([scale / v for v in std], device=images.device).view(1, 3, 1, 1)
    m = torch.tensor([-a / v for a, v in zip(mean, std)], device=images.device).view(1, 3, 1, 1)
    x = images.float()
    x = x.clone() if x is images else x  # never write into the caller's tensor
    return x.mul_(s).add_(m)  # in place: 10x faster on CPU than a broadcasting addcmul


def denormalise(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """The inverse of ``normalise``: B x 3 x H x W uint8."""
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images * s + m).mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def _where_flipped(flip: torch.Tensor, flipped: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``flipped`` for the samples where ``flip`` is set, ``x`` for the others."""
    return torch.where(flip.to(x.device).view(-1, *([1] * (x.ndim - 1))), flipped, x)


@dataclass
class JointParams:
    """The random draws of one batch: crop offsets into the padded image and flips."""

    offset: torch.Tensor  # B x 2 long, (dy, dx) in 0 .. 2 * pad
    flip: torch.Tensor  # B bool

    def to(self, device: str | torch.device) -> JointParams:
        return JointParams(self.offset.to(device), self.flip.to(device))


def _scale_points(points: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    out = points.clone()
    out[..., 0] *= sx
    out[..., 1] *= sy
    return out


class TestTransform:
    """Resize + ImageNet normalisation. Heatmaps pass through (they span the image whatever its
    size); part centres and keypoints are scaled to the new size."""

    __test__ = False  # not a pytest test class

    def __init__(self, size: tuple[int, int] = TRAIN_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(
        self,
        images: torch.Tensor,
        heatmaps: torch.Tensor | None = None,
        parts: torch.Tensor | None = None,
        part_valid: torch.Tensor | None = None,
        keypoints: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        h0, w0 = images.shape[-2:]
        x = images if tuple(images.shape[-2:]) == self.size else _resize_images(images, self.size)
        sy, sx = self.size[0] / h0, self.size[1] / w0
        return {
            "images": normalise(x, self.mean, self.std),
            "heatmaps": heatmaps,
            "parts": None if parts is None else _scale_points(parts.float(), sx, sy),
            "part_valid": part_valid,
            "keypoints": None if keypoints is None else _scale_points(keypoints.float(), sx, sy),
        }


class TrainTransform:
    """Resize, pad + random crop, random horizontal flip, normalise; images, heatmaps, centres together.

    ``heatmap_size``: (h, w) of the transformed heatmaps; default: the size they come in. For the KMLFR
    mask ask for the feature-map size (18 x 9) here: sampling the 32 x 16 cached maps once, bicubically,
    at those cells gives masks within 0.034 (mean largest cell error) of the masks from full-resolution
    80 x 40 maps, against 0.148 for transforming at 32 x 16 and resizing again bilinearly
    (``benchmarks/bench_keypoints.py``). ``heatmap_mode``: ``grid_sample`` interpolation; bicubic
    (default, clamped to [0, 1]) reconstructs the coarse cached maps better than bilinear.
    """

    def __init__(
        self,
        size: tuple[int, int] = TRAIN_SIZE,
        pad: int = 10,
        flip_prob: float = 0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        heatmap_size: tuple[int, int] | None = None,
        heatmap_mode: str = "bicubic",
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.pad = int(pad)
        self.heatmap_mode = heatmap_mode
        self.flip_prob = float(flip_prob)
        self.mean, self.std = tuple(mean), tuple(std)
        self.heatmap_size = None if heatmap_size is None else (int(heatmap_size[0]), int(heatmap_size[1]))

    def sample(self, batch: int, generator: torch.Generator | None = None) -> JointParams:
        """Draw crop offsets (uniform over 0..2*pad, like a random crop of the padded image) and flips,
        on the generator's device (CPU by default)."""
        device = generator.device if generator is not None else "cpu"
        offset = torch.randint(0, 2 * self.pad + 1, (batch, 2), generator=generator, device=device)
        flip = torch.rand(batch, generator=generator, device=device) < self.flip_prob
        return JointParams(offset, flip)

    # -- the pieces, usable on their own -----------------------------------------------------------
    def crop_flip_images(self, images: torch.Tensor, params: JointParams) -> torch.Tensor:
        """Pad with zeros, crop at ``params.offset`` and flip: B x C x H x W, same dtype, contiguous.

        One window copy per sample (the part of the crop inside the image; the rest stays 0), flipped
        on the way where asked. On a 2-core CPU this is 4-5x faster than a batched ``gather`` over an
        index grid; on the CPU the copies go through numpy, because B small torch copies each open a
        parallel region, which stalls badly when other processes keep the cores busy. On a GPU they
        are B small copies.
        """
        b, c, h, w = images.shape
        p = self.pad
        out = torch.zeros((b, c, h, w), dtype=images.dtype, device=images.device)
        on_cpu = images.device.type == "cpu" and not images.requires_grad
        src_all, dst_all = (images.numpy(), out.numpy()) if on_cpu else (images, out)
        for i, ((dy, dx), flip) in enumerate(zip(params.offset.tolist(), params.flip.tolist())):
            y0, x0 = dy - p, dx - p  # the crop's top-left corner in image pixels
            sy0, sy1, sx0, sx1 = max(y0, 0), min(y0 + h, h), max(x0, 0), min(x0 + w, w)
            if sy1 <= sy0 or sx1 <= sx0:
                continue
            src = src_all[i, :, sy0:sy1, sx0:sx1]
            if flip:  # output column j shows crop column w - 1 - j
                dst_all[i, :, sy0 - y0 : sy1 - y0, w - (sx1 - x0) : w - (sx0 - x0)] = (
                    src[..., ::-1] if on_cpu else src.flip(-1)
                )
            else:
                dst_all[i, :, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = src
        return out

    def affine(self, params: JointParams, image_hw: tuple[int, int]) -> torch.Tensor:
        """B x 2 x 3 ``affine_grid`` matrices of the crop (not the flip), mapping output to input normalised
        coordinates."""
        h, w = image_hw
        off = params.offset.float()
        theta = torch.zeros(len(off), 2, 3, device=off.device)
        theta[:, 0, 0] = 1.0
        theta[:, 0, 2] = 2 * (off[:, 1] - self.pad) / w
        theta[:, 1, 1] = 1.0
        theta[:, 1, 2] = 2 * (off[:, 0] - self.pad) / h
        return theta

    def transform_heatmaps(self, heatmaps: torch.Tensor, params: JointParams) -> torch.Tensor:
        """Heatmaps (B x K x h x w, spanning the image) through the same crop and flip, channels swapped
        on a flip (K = 13 or 17)."""
        hm = heatmaps.float()
        out_hw = self.heatmap_size or tuple(hm.shape[-2:])
        theta = self.affine(params.to(hm.device), self.size)
        grid = F.affine_grid(theta, [hm.shape[0], hm.shape[1], *out_hw], align_corners=False)
        out = F.grid_sample(hm, grid, mode=self.heatmap_mode, padding_mode="zeros", align_corners=False)
        if self.heatmap_mode == "bicubic":  # cubic interpolation over- and undershoots a little
            out = out.clamp_(0.0, 1.0)
        return _where_flipped(params.flip, flip_heatmaps(out), out)

    def transform_points(self, points: torch.Tensor, params: JointParams,
                         scale: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:  # fmt: skip
        """Points (B x K x >=2, x first, in the input image's pixels) through resize, crop and flip; their
        left/right labels follow the flip (K = 13 or 17 keypoints, or 11 part centres)."""
        off = params.offset.to(points.device).to(points.dtype)
        out = points.clone()
        out[..., 0] = points[..., 0] * scale[0] - (off[:, 1:2] - self.pad)
        out[..., 1] = points[..., 1] * scale[1] - (off[:, 0:1] - self.pad)
        return _where_flipped(params.flip, flip_keypoints(out, self.size[1]), out)

    def transform_part_valid(self, part_valid: torch.Tensor, params: JointParams) -> torch.Tensor:
        """Part validity (B x 11): left/right swapped on a flip."""
        return _where_flipped(params.flip, swap_left_right(part_valid, 1), part_valid)

    # -- the whole batch ---------------------------------------------------------------------------
    def __call__(
        self,
        images: torch.Tensor,
        heatmaps: torch.Tensor | None = None,
        parts: torch.Tensor | None = None,
        part_valid: torch.Tensor | None = None,
        keypoints: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        params: JointParams | None = None,
    ) -> dict:
        """Transform a batch. ``images``: B x 3 x H0 x W0, uint8 (0..255) or float (0..1), any size;
        ``heatmaps``: B x K x h x w; ``parts``: B x 11 x 2 and ``keypoints``: B x 13 x 3 in the input
        images' pixels; ``part_valid``: B x 11. Returns the same keys (transformed, None where not given)
        plus ``params``. Validity is kept as it is (a centre may end up to ``pad`` pixels outside)."""
        b = images.shape[0]
        params = self.sample(b, generator) if params is None else params
        h0, w0 = images.shape[-2:]
        x = images if tuple(images.shape[-2:]) == self.size else _resize_images(images, self.size)
        scale = (self.size[1] / w0, self.size[0] / h0)
        x = self.crop_flip_images(x, params)
        out = {
            "images": normalise(x, self.mean, self.std),
            "heatmaps": None if heatmaps is None else self.transform_heatmaps(heatmaps, params),
            "parts": None if parts is None else self.transform_points(parts.float(), params, scale),
            "part_valid": None if part_valid is None else self.transform_part_valid(part_valid, params),
            "keypoints": None if keypoints is None else self.transform_points(keypoints.float(), params, scale),
            "params": params,
        }
        return out
