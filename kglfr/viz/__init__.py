"""Pictures for looking at data and results: keypoints on images (``kglfr viz keypoints``), retrieval
grids and Grad-CAM. Drawing uses matplotlib's Agg canvas directly (no pyplot, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kglfr.errors import KglfrError


def new_figure(width_in: float, height_in: float, dpi: int = 100):
    """A matplotlib Figure on an Agg canvas, independent of pyplot's global state and backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render ``fig`` to an H x W x 3 uint8 RGB array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` (format from the suffix, e.g. .png, .pdf), creating the folder."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def figure_formats() -> tuple[str, ...]:
    """File suffixes (without the dot) that :func:`save_figure` can write: png, pdf, svg, jpg ..."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return tuple(sorted(FigureCanvasAgg.get_supported_filetypes()))


def check_figure_format(out: str | Path, option: str = "out") -> Path:
    """Check, before any work, that ``out`` is a picture path :func:`save_figure` can write: a known suffix
    (.png, .jpg, .pdf, .svg ...), not a folder, and no existing file where its folder should be."""
    out = Path(out).expanduser()
    formats = figure_formats()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        shown = ", ".join(f".{f}" for f in ("png", "jpg", "pdf", "svg") if f in formats)
        raise KglfrError(f"{option} {out}: unknown picture format {out.suffix or '(no suffix)'!r}; use {shown} "
                         f"(or any of {', '.join(formats)})")  # fmt: skip
    if out.is_dir():
        raise KglfrError(f"{option} {out} is a folder; give a file name such as {out / ('picture.' + suffix)}")
    parent = next((q for q in out.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise KglfrError(f"{option} {out}: {parent} is a file, not a folder")
    return out
