"""The run folder: what it holds, whether a training may write into it, its metrics and log files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from kglfr.errors import KglfrError
from kglfr.io import LOCK_FILE
from kglfr.train import config as C

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LOG = "train.log"
# what a run writes; a folder holding anything else is not a run
RUN_FILES = {CHECKPOINT, CONFIG, METRICS, LOG, LOCK_FILE, "tensorboard", "results", "report.md", "summary.json",
             "ablation.json", "report.html", "report_files",
             "data.json"}  # fmt: skip


class TrainingError(KglfrError):
    """Training cannot go on (a non-finite loss, a run folder that holds no run, ...)."""


class Interrupted(KglfrError):
    """Ctrl-C or SIGTERM: the run was saved and can be resumed (exit 130 for Ctrl-C, 143 for SIGTERM)."""

    exit_code = 130

    def __init__(self, message: str, signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        if signal_name == "SIGTERM":
            self.exit_code = 143


def is_run(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / CHECKPOINT).is_file()


def _foreign(folder: Path) -> list[str]:
    """Entries of ``folder`` that a run did not write (its temporary files included as its own)."""
    names = [p.name for p in folder.iterdir()]
    own = [n for n in names if n in RUN_FILES or (n.startswith(".") and n.endswith(".tmp"))]
    if CONFIG in own and LOG not in own:  # a config.yaml with no train.log beside it was not written by a run
        own.remove(CONFIG)
    return sorted(set(names) - set(own))


def check_out_folder(folder: Path, force: bool) -> None:
    """Refuse a folder that holds a run (continue it instead) or files that are not a run's (unless ``force``)."""
    if is_run(folder):
        raise TrainingError(f"{folder} already holds a run; continue it with 'kglfr train --resume {folder}' "
                            "or choose another --out")  # fmt: skip
    if folder.exists() and not folder.is_dir():
        raise TrainingError(f"{folder} is a file, not a folder; choose another --out")
    if folder.is_dir() and not force:
        foreign = _foreign(folder)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise TrainingError(f"{folder} is not empty and holds no run ({shown}); training would overwrite "
                                "files there: choose another --out, or pass --force to write into it "
                                "anyway")  # fmt: skip


def read_run_config(path: Path) -> DictConfig:
    """A run's saved ``config.yaml``, validated; one line for a damaged one (not UTF-8, YAML error with
    its line, not a mapping)."""
    import yaml

    from kglfr.train.config_errors import ConfigError, read_config_text, yaml_error

    try:
        values = yaml.safe_load(read_config_text(path))
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} is damaged (not a mapping of config sections); the run cannot be read")
    return C.config_from_dict(values, str(path))


def check_resume(folder: Path, overrides: list[str], force: bool) -> DictConfig:
    """The config of the run in ``folder``; overrides that would change it are refused unless ``force``."""
    if not folder.is_dir() or not (folder / CONFIG).is_file():
        raise TrainingError(f"--resume {folder}: no run there (no {CONFIG}); start one with "
                            f"'kglfr train --config PRESET --out {folder}'")  # fmt: skip
    if not (folder / CHECKPOINT).is_file():
        raise TrainingError(f"--resume {folder}: the run has no {CHECKPOINT} yet (it stopped before its first "
                            "epoch ended); start it again without --resume")  # fmt: skip
    saved = read_run_config(folder / CONFIG)
    if overrides:
        changed = C.config_from_dict(C.deep_merge(C.to_dict(saved), C.parse_overrides(overrides)), "override")
        keys = C.diff(C.to_dict(saved), C.to_dict(changed))
        if keys and not force:
            raise TrainingError(f"--resume {folder}: the override(s) would change the run ({', '.join(keys)}); "
                                "pass --force to resume with them anyway")  # fmt: skip
        saved = changed
    return saved


class MetricsLog:
    """JSON lines in ``RUN/metrics.jsonl`` (and TensorBoard scalars when installed and asked for)."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = folder / METRICS
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                log.debug("tensorboard not installed; metrics go to %s only", self.path)

    def write(self, record: dict, step: int | None = None) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and step is not None:
            kind = record.get("type", "step")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step", "global_step"):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def file_logging(folder: Path) -> logging.Handler:
    """Send the ``kglfr`` loggers to ``RUN/train.log`` too; remove the handler with :func:`end_file_logging`."""
    handler = logging.FileHandler(folder / LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger("kglfr").addHandler(handler)
    return handler


def end_file_logging(handler: logging.Handler) -> None:
    logging.getLogger("kglfr").removeHandler(handler)
    handler.close()
