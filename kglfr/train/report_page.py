"""The report page of a run (``RUN/report.html``, :mod:`kglfr.report`): what the run section says about the
config, the machine and the weights, the published figures beside the results, and the one call the trainer
and ``kglfr evaluate --report`` make."""

from __future__ import annotations

import logging
import platform
import subprocess
from pathlib import Path

import torch

from kglfr.train import config as C
from kglfr.train.methods import get_method

log = logging.getLogger(__name__)

IGNORED_KEYS = ("data.store", "train.seed")  # where a run differs from every preset without being another method


def closest_preset(cfg) -> tuple[str, list[str]]:
    """The built-in preset the config differs least from, and the ``key=value`` overrides that make the config."""
    run = C.to_dict(cfg)
    best: tuple[str, list[str]] | None = None
    for name in C.presets():
        try:
            keys = [k for k in C.diff(C.to_dict(C.load_config(name)), run) if k not in IGNORED_KEYS]
        except C.ConfigError:
            continue
        if best is None or len(keys) < len(best[1]):
            best = (name, keys)
    if best is None:
        return "none", []
    return best[0], [f"{k}={_lookup(run, k)}" for k in best[1]]


def _lookup(d: dict, key: str):
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def method_name(cfg) -> str:
    """What the report calls the config's method (the method's ``label``: a Table 2 row for ``kglfr``)."""
    return get_method(cfg.method.name).label(cfg)


def published_figures(cfg, protocol: str) -> dict | None:
    """The published figures (percent) of the config's method under ``protocol``, or None (the method's
    ``published``: :mod:`kglfr.eval.published`, or the paper's Table 2 for an ablation row)."""
    return get_method(cfg.method.name).published(cfg, protocol)


def machine() -> str:
    """CPU model and cores (and the GPU when there is one), Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    parts = [f"{cpu}, {os.cpu_count()} cores"]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return "; ".join(parts + [f"Python {platform.python_version()}", f"torch {torch.__version__}"])


def commit() -> str:
    """The git commit of the kglfr source (with "+ changes" when its tree is dirty), or "not a git checkout"."""
    src = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5)  # fmt: skip
        if head.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def training_seconds(folder: Path | None) -> float | None:
    """The run's training wall time: the sum of its epochs' seconds in ``metrics.jsonl`` (None without one)."""
    from kglfr.errors import KglfrError
    from kglfr.viz.curves import read_metrics

    if folder is None:
        return None
    try:
        epochs = [r for r in read_metrics(folder) if r.get("type") == "epoch"]
    except KglfrError:
        return None
    return sum(float(r.get("seconds", 0.0)) for r in epochs) if epochs else None


def run_info(cfg, store, weights, amp: str, device, stages: dict, checkpoint: str | None = None) -> list[tuple]:
    """The run section of the page: (label, value) rows."""
    from kglfr.report.data import format_seconds
    from kglfr.train.report import describe_weights

    rows = []
    if cfg is not None:
        preset, overrides = closest_preset(cfg)
        rows += [("preset", f"{preset} (the closest built-in preset)"), ("overrides", " ".join(overrides) or "none"),
                 ("method", method_name(cfg)),
                 ("model", f"{cfg.model.arch}, input {cfg.data.height} x {cfg.data.width}, {cfg.train.epochs} epochs"),
                 ("seed", str(cfg.train.seed))]  # fmt: skip
    rows += [("dataset", f"{store.dataset} (store {store.path})"), ("machine", machine()), ("device", str(device)),
             ("precision", f"autocast {amp}"), ("commit", commit()),
             ("initial weights", describe_weights(weights))]  # fmt: skip
    if checkpoint:
        rows.append(("weights evaluated", str(checkpoint)))
    rows.append(("wall time", "; ".join(f"{k} {format_seconds(v)}" for k, v in stages.items())))
    return rows


def write_run_page(out_dir: Path, cfg, store, evaluation, *, model=None, size=None, device="cpu", weights="unknown",
                   amp: str = "off", stages: dict | None = None, checkpoint: str | None = None,
                   run_folder: Path | None = None, title: str | None = None, feature: str = "bn") -> Path:  # fmt: skip
    """``out_dir/report.html`` (and ``report_files/``) of ``evaluation`` (with its features) on ``store``."""
    from kglfr.report import PageInputs, write_page

    stages = {"training": training_seconds(run_folder), **(stages or {})}
    inputs = PageInputs(
        title=title or f"{Path(run_folder or out_dir).name}: {method_name(cfg) if cfg is not None else 'model'} "
        f"on {store.dataset}",
        store=store, evaluation=evaluation, info=run_info(cfg, store, weights, amp, device, stages, checkpoint),
        published=(lambda p: published_figures(cfg, p)) if cfg is not None else (lambda p: None),
        model=model, input_size=size, device=str(device), run_folder=run_folder, feature=feature,
    )  # fmt: skip
    return write_page(out_dir, inputs)


def trainer_page(trainer, folder: Path, evaluation, eval_seconds: float | None = None) -> Path | None:
    """The page of a run at the end of training or after an evaluation on the way; a failure to draw it is
    logged, never raised (it must not lose the run)."""
    if evaluation is None or not evaluation.features or not trainer.rt.main or not trainer.cfg.eval.report_page:
        return None
    try:
        return write_run_page(folder, trainer.cfg, trainer.store, evaluation, model=trainer.model, size=trainer.size,
                              device=trainer.rt.device, weights=trainer.weights, amp=trainer.rt.amp_name,
                              stages={"evaluation": eval_seconds}, checkpoint=str(folder / "checkpoint.pt"),
                              run_folder=folder)  # fmt: skip
    except Exception as e:  # a picture that cannot be drawn must not fail a finished training
        log.warning("report page of %s not written: %s: %s", folder, type(e).__name__, e)
        return None
