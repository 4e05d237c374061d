"""Retrieval grids (the paper's Figure 6): each query with its top-K gallery images, a green border on a
correct match and red on a wrong one when identities are known, grey when not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kglfr.viz import new_figure, save_figure

GREEN, RED, GREY, BLUE = "#1a9e3a", "#d62728", "#9a9a9a", "#1f4fb4"


def _load(image) -> np.ndarray:
    if image is None:
        return np.full((64, 32, 3), 200, np.uint8)
    if isinstance(image, (str, Path)):
        from kglfr.eval.extract import read_image

        try:
            return read_image(image)
        except Exception:
            return np.full((64, 32, 3), 200, np.uint8)
    return np.asarray(image)


def retrieval_grid(
    queries: Sequence,
    ranked: Sequence[Sequence],
    out: str | Path,
    correct: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    query_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw one row per query: the query (blue border), then its ranked gallery images.

    ``queries``: images (H x W x 3 uint8 arrays or paths; None draws a grey placeholder); ``ranked[i]``:
    the top-K images of query i; ``correct``: Q x K booleans (True green, False red) or None (grey);
    ``scores``: Q x K similarities written under each image.
    """
    nq = len(queries)
    k = max((len(r) for r in ranked), default=0)
    cell_w, cell_h = 0.9, 1.9
    head = 0.4 if title else 0.1
    height = nq * cell_h + head
    fig = new_figure((k + 1.3) * cell_w, height, dpi=100)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.1 / height)
    row_h = (1 - head / height) / nq
    units = k + 1.3
    for i in range(nq):
        cells = [(queries[i], BLUE, query_labels[i] if query_labels else "query")]
        for j, img in enumerate(ranked[i]):
            if correct is None or correct[i, j] is None:
                color = GREY
            else:
                color = GREEN if bool(correct[i, j]) else RED
            label = f"{j + 1}" + (f"  {scores[i, j]:.2f}" if scores is not None else "")
            cells.append((img, color, label))
        for j, (img, color, label) in enumerate(cells):
            x0 = (j + (0.3 if j else 0) + 0.06) / units
            y0 = 1 - head / height - (i + 1) * row_h + 0.14 * row_h
            ax = fig.add_axes([x0, y0, 0.88 / units, 0.8 * row_h])
            ax.imshow(_load(img), aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3.5)
            ax.set_xlabel(label, fontsize=6, labelpad=2)
    return save_figure(fig, out)
