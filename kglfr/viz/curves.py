"""Loss curves of a run: the per-epoch means of ``RUN/metrics.jsonl``, and the evaluations on the way."""

from __future__ import annotations

import json
from pathlib import Path

from kglfr.errors import KglfrError
from kglfr.viz import new_figure, save_figure

LOSS_KEYS = (("loss", "total"), ("id", "identity (CE)"), ("triplet", "global triplet"), ("local", "KMLFR local"))


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise KglfrError(f"no metrics file {path}; is it a run folder of 'kglfr train'?")
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    return out


def loss_curves(run: str | Path, out: str | Path) -> Path:
    """Draw the per-epoch losses and training accuracy (and Rank-1 where evaluated) of ``run``."""
    records = read_metrics(run)
    epochs = [r for r in records if r.get("type") == "epoch"]
    if not epochs:
        raise KglfrError(f"{run} has no finished epoch to draw")
    evals = [r for r in records if r.get("type") == "eval"]
    fig = new_figure(11, 3.6, dpi=110)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = [r["epoch"] for r in epochs]
    for key, label in LOSS_KEYS:
        if key in epochs[0]:
            ax1.plot(x, [r.get(key, float("nan")) for r in epochs], label=label, marker="." if len(x) < 40 else None)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (epoch mean)")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(x, [100 * r.get("acc", float("nan")) for r in epochs], label="train ID accuracy", color="grey")
    for proto in sorted({r["protocol"] for r in evals}):
        pts = [r for r in evals if r["protocol"] == proto]
        ax2.plot([r["epoch"] for r in pts], [r["bn_rank1"] for r in pts], marker="o", label=f"{proto} Rank-1 (BN)")
        ax2.axhline(pts[-1]["chance_rank1"], ls=":", color="red", lw=1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("%")
    ax2.set_ylim(0, 100)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    if evals:
        ax2.text(0.01, 0.02, "dotted: chance Rank-1", transform=ax2.transAxes, fontsize=7, color="red")
    fig.suptitle(f"{Path(run).name}: training curves", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
