"""The report page's pictures: CMC curves, thumbnail sheets, worst-query rows with Grad-CAM, keypoints."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kglfr.viz import new_figure, save_figure

log = logging.getLogger(__name__)

THUMB_HEIGHT = 64
SHEET_COLUMNS = 32
SHEET_ROWS = 32


def cmc_figure(curves: dict[str, np.ndarray], out: Path, chance: dict[str, float] | None = None) -> Path:
    """CMC curves (percent, rank 1..k) of several protocols/features in one plot."""
    fig = new_figure(5.6, 3.4, dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for label, cmc in curves.items():
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker="." if len(cmc) <= 30 else None, label=label)
    for label, c in (chance or {}).items():
        ax.axhline(c, ls=":", lw=1, color="red")
        ax.text(1, c, f" chance Rank-1 ({label})", fontsize=6, color="red", va="bottom")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out)


@dataclass
class Sheets:
    """Thumbnails packed in JPEG sheets: thumbnail ``t`` is in sheet ``t // per_sheet`` at column
    ``t % columns`` and row ``(t % per_sheet) // columns``."""

    files: list[str]
    width: int
    height: int
    columns: int
    per_sheet: int


def thumbnail_sheets(store, store_indices: np.ndarray, folder: Path, prefix: str = "thumbs") -> Sheets:
    """Small JPEG sheets of ``store``'s images ``store_indices`` (in that order) under ``folder``."""
    import cv2
    from PIL import Image

    h, w = store.size
    th, tw = THUMB_HEIGHT, max(8, round(THUMB_HEIGHT * w / h))
    per = SHEET_COLUMNS * SHEET_ROWS
    files = []
    for s, start in enumerate(range(0, len(store_indices), per)):
        chunk = np.asarray(store_indices[start : start + per])
        rows = -(-len(chunk) // SHEET_COLUMNS)
        sheet = np.full((rows * th, SHEET_COLUMNS * tw, 3), 255, np.uint8)
        for k in range(0, len(chunk), 256):
            images = store.read_batch(chunk[k : k + 256])
            for j, im in enumerate(images):
                t = k + j
                y, x = (t // SHEET_COLUMNS) * th, (t % SHEET_COLUMNS) * tw
                sheet[y : y + th, x : x + tw] = cv2.resize(np.asarray(im), (tw, th), interpolation=cv2.INTER_AREA)
        name = f"{prefix}_{s}.jpg"
        Image.fromarray(sheet).save(folder / name, quality=82)
        files.append(name)
    return Sheets(files, tw, th, SHEET_COLUMNS, per)


class CamModel:
    """What :func:`kglfr.viz.gradcam.gradcam` needs of a model: the network, its input size, its preprocessing."""

    def __init__(self, model: torch.nn.Module, input_size: tuple[int, int], device: str | torch.device = "cpu"):
        self.model, self.input_size, self.device = model, (int(input_size[0]), int(input_size[1])), device

    def preprocess(self, images) -> torch.Tensor:
        from kglfr.eval.extract import preprocess

        return preprocess(images, self.input_size, self.device)


def gradcam_strips(cam_model: CamModel, pairs: list[tuple], folder: Path, names: list[str]) -> list[str]:
    """One picture per (images, modalities) set of ``pairs``: each image followed by its Grad-CAM overlay (target:
    the set's mean feature), all sets in one backward pass; returns the file names."""
    from PIL import Image

    from kglfr.viz.gradcam import gradcam, overlay

    images = [im for ims, _ in pairs for im in ims]
    groups = [k for k, (ims, _) in enumerate(pairs) for _ in ims]
    cams, arrays = gradcam(cam_model, images, [m for _, mods in pairs for m in mods], groups)
    gap = np.full((arrays.shape[1], 4, 3), 255, np.uint8)
    out, start = [], 0
    for (ims, _), name in zip(pairs, names):
        tiles = []
        for im, cam in zip(arrays[start : start + len(ims)], cams[start : start + len(ims)]):
            tiles += [im, overlay(im, cam), gap]
        start += len(ims)
        strip = np.concatenate(tiles[:-1], axis=1)
        scale = max(1, round(128 / strip.shape[0]))  # small stores: scale up so the map is visible
        Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST).save(
            folder / name
        )
        out.append(name)
    return out


def worst_rows(store, ranking, order: list[int], fs, folder: Path, prefix: str, cam_model: CamModel | None) -> list:
    """For each query ``order[k]`` of ``ranking``: its top-K row (green/red borders,
    :func:`kglfr.viz.retrieval.retrieval_grid`) and, with a model, the Grad-CAM of the query and its top-1 gallery
    image. Returns the page's entries."""
    from kglfr.viz.retrieval import retrieval_grid

    index = {rel: k for k, rel in enumerate(store.relpaths)}
    entries, pairs = [], []
    for k, i in enumerate(order):
        qi, top = int(ranking.q[i]), ranking.g[ranking.top[i]]
        q_img = store.read_batch([index[str(fs.paths[qi])]])[0]
        g_imgs = list(store.read_batch([index[str(fs.paths[j])] for j in top]))
        correct = np.asarray([[fs.pids[j] == fs.pids[qi] for j in top]], dtype=object)
        row = retrieval_grid([q_img], [g_imgs], folder / f"{prefix}_{k}.jpg", correct=correct,
                             scores=ranking.sim[i : i + 1], query_labels=[f"AP {100 * ranking.ap[i]:.1f}"])  # fmt: skip
        entries.append({"path": str(fs.paths[qi]), "pid": int(fs.pids[qi]), "cam": int(fs.cams[qi]),
                        "ap": 100.0 * float(ranking.ap[i]), "first_rank": int(ranking.first_rank[i]),
                        "row": row.name, "gradcam": None, "top1_correct": bool(correct[0, 0])})  # fmt: skip
        if fs.modalities is not None:
            pairs.append(([q_img, g_imgs[0]], [int(fs.modalities[qi]), int(fs.modalities[top[0]])]))
    if cam_model is not None and pairs and len(pairs) == len(entries):
        names = gradcam_strips(cam_model, pairs, folder, [f"{prefix}_{k}_cam.png" for k in range(len(pairs))])
        for e, name in zip(entries, names):
            e["gradcam"] = name
    return entries


def keypoint_overlays(store, out: Path, n: int = 8) -> Path | None:
    """A few test images with their cached keypoints, or None when the store has no keypoint cache."""
    from kglfr.errors import KglfrError
    from kglfr.viz.keypoints import keypoint_sheet

    try:
        return keypoint_sheet(store, out, n=n, split="test", ncols=n)
    except (KglfrError, FileNotFoundError, OSError) as e:
        log.info("report: no keypoint overlays (%s)", e)
        return None
