"""Draw images with their cached keypoints: the 13-point skeleton, the 11 part centres, the heatmaps.

``keypoint_sheet(store, ...)`` picks visible and infrared images (half each) from a store with a
keypoint cache and draws them in a grid; with ``augment`` it first runs the training transform on
images, heatmaps and centres together, which shows whether they still agree after crop and flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from kglfr.data.records import Modality
from kglfr.data.store import Store
from kglfr.keypoints.skeleton import KEYPOINTS, PART_SHORT, PARTS, SKELETON, VALID_THRESHOLD
from kglfr.viz import new_figure, save_figure

# One colour per part (tab20-like, distinct on dark and bright images); left parts warm, right cool.
PART_COLOURS = (
    "#ffffff", "#ffd700", "#ff8c00",
    "#ff1493", "#00bfff", "#ff4500", "#1e90ff",
    "#ff69b4", "#00ced1", "#dc143c", "#4169e1",
)  # fmt: skip
LEFT, RIGHT, CENTRE = "#ff5050", "#50a0ff", "#f0f0f0"


def _side_colour(name: str) -> str:
    return LEFT if name.startswith("left_") else RIGHT if name.startswith("right_") else CENTRE


def overlay_heatmap(image: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend the max over ``heatmaps`` (K x h x w in [0, 1], spanning the image) onto ``image`` (H x W x 3)."""
    h, w = image.shape[:2]
    m = np.clip(heatmaps.max(0), 0, 1).astype(np.float32)
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
    a = (alpha * m)[..., None]
    return (image.astype(np.float32) * (1 - a) + colour * a).astype(np.uint8)


def draw_keypoint_grid(
    images: np.ndarray,
    coords: np.ndarray,
    parts: np.ndarray,
    part_valid: np.ndarray,
    heatmaps: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    threshold: float = VALID_THRESHOLD,
    ncols: int = 8,
    title: str | None = None,
):
    """A matplotlib Figure of B images (B x H x W x 3 uint8) with keypoints (B x 13 x 3, pixels +
    confidence), part centres (B x 11 x 2) and validity (B x 11); heatmaps (B x 13 x h x w) overlaid."""
    b, H, W = images.shape[:3]
    ncols = max(1, min(ncols, b))
    nrows = max(1, -(-b // ncols))
    cell_w, cell_h = 1.7, 1.7 * H / W * 0.95 + 0.35
    fig = new_figure(cell_w * ncols, cell_h * nrows + 0.9, dpi=110)
    legend_h = 0.9 / (cell_h * nrows + 0.9)
    grid = fig.add_gridspec(nrows, ncols, left=0.01, right=0.99, top=0.97 if not title else 0.94,
                            bottom=legend_h, wspace=0.04, hspace=0.18)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=9)
    for i in range(b):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        img = images[i]
        if heatmaps is not None:
            img = overlay_heatmap(img, heatmaps[i])
        ax.imshow(img, extent=(0, W, H, 0), interpolation="bilinear")
        ok = coords[i, :, 2] >= threshold
        for a, c in SKELETON:
            if ok[a] and ok[c]:
                ax.plot(coords[i, [a, c], 0], coords[i, [a, c], 1], "-", color="#e0e0e0", lw=1.0, alpha=0.9)
        for k, name in enumerate(KEYPOINTS):
            if ok[k]:
                ax.plot(*coords[i, k, :2], "o", ms=2.6, mfc=_side_colour(name), mec="black", mew=0.4)
        for p in range(len(PARTS)):
            x, y = parts[i, p]
            if part_valid[i, p]:
                ax.plot(x, y, "s", ms=4.2, mfc=PART_COLOURS[p], mec="black", mew=0.5)
                ax.annotate(PART_SHORT[p], (x, y), xytext=(3, -2), textcoords="offset points", fontsize=4.5,
                            color=PART_COLOURS[p], fontweight="bold")  # fmt: skip
        nvalid = int(np.asarray(part_valid[i]).sum())
        label = (titles[i] + "\n" if titles else "") + f"{nvalid}/11 parts"
        ax.set_title(label, fontsize=5, pad=2)
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    # legend: parts and the keypoint colours
    lax = fig.add_axes((0.01, 0.0, 0.98, legend_h * 0.9))
    lax.set_axis_off()
    handles = [lax.plot([], [], "s", ms=5, mfc=PART_COLOURS[p], mec="black", label=f"{PART_SHORT[p]} {PARTS[p]}")[0]
               for p in range(len(PARTS))]  # fmt: skip
    handles += [lax.plot([], [], "o", ms=4, mfc=c, mec="black", label=lab)[0]
                for c, lab in ((LEFT, "left keypoint"), (RIGHT, "right keypoint"), (CENTRE, "head"))]  # fmt: skip
    lax.legend(handles=handles, loc="center", ncol=min(7, len(handles)), fontsize=5.5, frameon=False)
    return fig


def pick_images(store: Store, n: int, seed: int = 0, split: str | None = None) -> np.ndarray:
    """``n`` store indices, half visible and half infrared (fewer if a modality has fewer), in random order
    drawn with ``seed``; ``split`` ("train"/"test") restricts them."""
    rng = np.random.default_rng(seed)
    chosen = []
    for mod, want in ((Modality.VISIBLE, n - n // 2), (Modality.INFRARED, n // 2)):
        pool = store.indices(split, modality=mod) if split else np.flatnonzero(store.modalities == int(mod))
        chosen.append(np.sort(rng.choice(pool, size=min(want, len(pool)), replace=False)))
    return np.concatenate(chosen).astype(np.int64)


def check_out_path(out: str | Path, option: str = "out") -> Path:
    """``out`` as a picture path matplotlib can write (see :func:`kglfr.viz.check_figure_format`)."""
    from kglfr.viz import check_figure_format

    return check_figure_format(out, option)


def keypoint_sheet(
    store: Store | str | Path,
    out: str | Path,
    n: int = 16,
    seed: int = 0,
    heatmaps: bool = True,
    augment: bool = False,
    split: str | None = None,
    ncols: int = 8,
    keypoints: str | None = None,
) -> Path:
    """Draw ``n`` images of ``store`` (half visible, half infrared) with their cached keypoints to ``out``
    (its format from the suffix; checked first, see ``check_out_path``). ``keypoints``: the backend whose
    cache to draw (None: the only one, or the most recently finished, as training takes)."""
    import torch

    from kglfr.data.transforms import TrainTransform, denormalise, store_batch_to_tensor
    from kglfr.keypoints.cache import KeypointCache

    out = check_out_path(out)
    store = store if isinstance(store, Store) else Store.open(store)
    cache = KeypointCache.open(store, backend=keypoints)
    idx = pick_images(store, n, seed, split)
    images = store.read_batch(idx)
    rows = cache.read_batch(idx)
    coords, parts, valid, maps = rows["coords"], rows["parts"], rows["part_valid"], rows["heatmaps"]
    if augment:
        t = TrainTransform(size=store.size)
        g = torch.Generator().manual_seed(seed)
        res = t(store_batch_to_tensor(images), torch.from_numpy(maps), torch.from_numpy(parts),
                torch.from_numpy(valid), torch.from_numpy(coords), generator=g)  # fmt: skip
        images = denormalise(res["images"]).permute(0, 2, 3, 1).numpy()
        maps, parts = res["heatmaps"].numpy(), res["parts"].numpy()
        valid, coords = res["part_valid"].numpy(), res["keypoints"].numpy()
        flips = res["params"].flip.tolist()
    mod_name = {int(m): m.short for m in Modality}
    titles = []
    for row, i in enumerate(idx):
        t = f"{mod_name[int(store.modalities[i])]} {store.relpaths[i]}"
        if augment:
            t += " (flip)" if flips[row] else ""
        titles.append(t)
    title = f"{store.path.name}: keypoints from {cache.backend}" + (" after the training transform" if augment else "")
    fig = draw_keypoint_grid(images, coords, parts, valid, maps if heatmaps else None, titles,
                             cache.threshold, ncols, title)  # fmt: skip
    return save_figure(fig, out)
