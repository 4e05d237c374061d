"""Grad-CAM of the last backbone stage (layer4) for the BN feature (the paper's Figure 8).

Target (the choice made here, identical for training and test identities): the cosine similarity of
each image's BN feature to the mean BN feature of all the images given (one identity's visible and
infrared images), the mean detached. The map is relu(sum_c mean_hw(dT/dA_c) A_c) on layer4's output A,
taken with plain forward / tensor hooks, upsampled to the input size and scaled to [0, 1] per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kglfr.runtime import input_format
from kglfr.viz import new_figure, save_figure


def gradcam(
    model, images: Sequence, modalities: Sequence, groups: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(maps N x H x W in [0, 1], the resized images N x H x W x 3 uint8) for ``images`` of ``modalities``
    (one per image), on a :class:`kglfr.api.ReIDModel`-like model (``.model``, ``.input_size``, ``.preprocess``).
    ``groups``: a group number per image, each image's target centre the mean of its group's (default: one group;
    several groups give the maps of several independent sets in one pass)."""
    from kglfr.data.store import resize
    from kglfr.eval.extract import parse_modality, read_image
    from kglfr.model.quantize import float_model

    net = float_model(model.model)  # gradients: an int8 model's maps come from its float32 model
    mods = [parse_modality(m) for m in modalities]
    h, w = model.input_size
    arrays = [resize(read_image(im) if isinstance(im, (str, Path)) else np.asarray(im), h, w) for im in images]
    x = model.preprocess(arrays).requires_grad_(False)
    mt = torch.tensor([int(m) for m in mods], device=x.device)
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        store["act"] = output
        output.register_hook(lambda g: store.__setitem__("grad", g))

    handle = net.layer4.register_forward_hook(keep)
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            policy = getattr(model, "policy", None)
            if input_format(net) == torch.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with nullcontext() if policy is None else policy.autocast():
                feat = F.normalize(net.extract(x, mt, which="bn", normalise=False).float(), dim=1)
            centre = F.normalize(_group_means(feat.detach(), groups), dim=1)
            target = (feat * centre).sum()
            net.zero_grad(set_to_none=True)
            target.backward()
    finally:
        handle.remove()
        net.train(was_training)
    act, grad = store["act"].detach().float(), store["grad"].detach().float()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1)[0].view(-1, 1, 1)
    hi = cam.flatten(1).max(1)[0].view(-1, 1, 1)
    cam = (cam - lo) / (hi - lo).clamp_min(1e-12)
    net.zero_grad(set_to_none=True)
    return cam.cpu().numpy(), np.stack(arrays)


def _group_means(feat: torch.Tensor, groups: Sequence[int] | None) -> torch.Tensor:
    """Per row, the mean of the rows in its group (all rows when ``groups`` is None)."""
    if groups is None:
        return feat.mean(0, keepdim=True)
    g = torch.as_tensor(list(groups), device=feat.device)
    _, inverse = torch.unique(g, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, feat.shape[1], device=feat.device).index_add_(0, inverse, feat)
    counts = torch.bincount(inverse).clamp_min(1).unsqueeze(1).to(feat.dtype)
    return (sums / counts)[inverse]


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    from matplotlib import colormaps

    heat = (colormaps["jet"](cam)[..., :3] * 255).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + heat * alpha).clip(0, 255).astype(np.uint8)


def gradcam_figure(model, visible: Sequence, infrared: Sequence, out: str | Path, title: str | None = None) -> Path:
    """One row per pair: visible image, its Grad-CAM, infrared image, its Grad-CAM (either side may be
    empty when only one modality is given). The target centre is the mean over all images given."""
    images = list(visible) + list(infrared)
    if not images:
        from kglfr.errors import KglfrError

        raise KglfrError("no images for Grad-CAM")
    mods = ["visible"] * len(visible) + ["infrared"] * len(infrared)
    cams, arrays = gradcam(model, images, mods)
    vis = list(zip(arrays[: len(visible)], cams[: len(visible)]))
    ir = list(zip(arrays[len(visible) :], cams[len(visible) :]))
    rows = max(len(vis), len(ir))
    sides = [s for s in (vis, ir) if s]
    cols = 2 * len(sides)
    h, w = model.input_size
    cw = 1.2
    fig = new_figure(cols * cw, rows * cw * h / w + (0.35 if title else 0.1))
    if title:
        fig.suptitle(title, fontsize=9)
    names = [n for n, s in (("visible", vis), ("infrared", ir)) if s]
    for r in range(rows):
        for si, side in enumerate(sides):
            if r >= len(side):
                continue
            img, cam = side[r]
            for c, (pic, label) in enumerate(((img, names[si]), (overlay(img, cam), "Grad-CAM"))):
                ax = fig.add_subplot(rows, cols, r * cols + 2 * si + c + 1)
                ax.imshow(pic)
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(label, fontsize=7)
    return save_figure(fig, out)
