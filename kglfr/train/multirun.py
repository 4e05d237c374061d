"""What the commands that train several runs into one folder share (``kglfr ablation``, ``kglfr compare``):
the identity of the store the runs depend on, the check that a run finished with a config on that store
(so an interrupted command resumes by finished run), a fresh run folder, and mean ± std cells."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kglfr.errors import KglfrError


def store_identity(store: str | Path) -> dict:
    """What a store's runs depend on: its path and the sha256 of its manifest (rewritten by every prepare)."""
    from kglfr.io import file_sha256

    store = Path(store).expanduser().resolve()
    manifest = store / "manifest.json"
    if not manifest.is_file():
        raise KglfrError(f"store {store} is not a prepared store (no manifest.json); run kglfr prepare first")
    return {"store": str(store), "manifest_sha256": file_sha256(manifest)}


def finished_run(run_dir: Path, cfg, data: dict, protocol: str, mark: str) -> dict | None:
    """The summary of a run that finished with this config on the same data and evaluated ``protocol``;
    None when it has to be (re)trained. ``mark``: the file in the run folder, written when the run
    finished, that holds ``data`` (what identifies the data, e.g. :func:`store_identity`; other keys of
    the file are the command's own)."""
    import yaml

    from kglfr.train import config as C

    try:
        found = json.loads((Path(run_dir) / mark).read_text())
        if not isinstance(found, dict) or any(found.get(k) != v for k, v in data.items()):
            return None
        saved = C.config_from_dict(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()), str(run_dir))
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError, yaml.YAMLError, C.ConfigError):
        return None
    if C.diff(C.to_dict(saved), C.to_dict(cfg)) or summary.get("epoch") != int(cfg.train.epochs):
        return None
    return summary if protocol in summary.get("protocols", {}) else None


def fresh_folder(folder: Path) -> None:
    """Remove what an unfinished run left in ``folder``, so that it trains from the start."""
    if Path(folder).exists():
        shutil.rmtree(folder)


def mean_std(values: Sequence[float]) -> str:
    """``62.00 ± 1.41`` (sample standard deviation) over several values, ``62.00`` for one."""
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{values[0]:.2f}"
