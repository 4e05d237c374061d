"""RegDB, read from the official download layout.

``Visible/<id>/*.bmp``, ``Thermal/<id>/*.bmp`` and ``idx/{train,test}_{visible,thermal}_{t}.txt``
(lines ``relative/path label``), one split per trial t = 1..10. The identity is the folder number, so
it is the same in every trial; camera 1 is visible and 2 thermal.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kglfr.data.conventions import REGDB_TRIALS
from kglfr.data.datasets import register
from kglfr.data.datasets.base import VIDataset, read_list_file, require_files, require_layout
from kglfr.data.records import TEST, TRAIN, ImageRecord, Modality
from kglfr.errors import DatasetError

log = logging.getLogger(__name__)

CAMERA = {Modality.VISIBLE: 1, Modality.INFRARED: 2}
_NAMES = {Modality.VISIBLE: "visible", Modality.INFRARED: "thermal"}


def _trial_files(root: Path, trial: int) -> dict[tuple[str, Modality], Path]:
    return {
        (split, mod): root / "idx" / f"{split}_{_NAMES[mod]}_{trial}.txt" for split in (TRAIN, TEST) for mod in Modality
    }


def _pid_of(relpath: str, label: int, where: Path) -> int:
    parts = relpath.split("/")
    if len(parts) >= 2 and parts[-2].isdigit():
        return int(parts[-2])
    raise DatasetError(f"{where}: {relpath!r} is not in a numbered identity folder (Visible/<id>/...)")


@register("regdb")
def load_regdb(root: Path, trial: int = 1) -> VIDataset:
    root = require_layout(
        root,
        "RegDB",
        ["Visible", "Thermal", "idx"] + [str(p.relative_to(root)) for p in _trial_files(Path(root), trial).values()],
    )
    trials = []
    for t in range(1, REGDB_TRIALS + 1):
        files = _trial_files(root, t).values()
        missing = [p for p in files if not p.exists()]
        if len(missing) == len(files):
            continue
        if missing:
            raise DatasetError(
                f"RegDB trial {t} is incomplete: split file {', '.join(map(str, missing))} is missing "
                f"(each trial needs {', '.join(p.name for p in files)}); restore it or remove the trial's files"
            )
        trials.append(t)
    if trial not in trials:
        raise DatasetError(f"RegDB trial {trial} has no complete split files in {root / 'idx'}; found {trials}")
    if len(trials) < REGDB_TRIALS:
        log.warning(
            "RegDB at %s: only trials %s have split files (the official release has 1..%d)", root, trials, REGDB_TRIALS
        )
    per_trial: dict[int, dict[str, tuple[int, Modality, str]]] = {}
    for t in trials:
        entries: dict[str, tuple[int, Modality, str]] = {}
        listed_in: dict[str, Path] = {}
        for (split, mod), path in _trial_files(root, t).items():
            for relpath, label in read_list_file(path):
                if relpath in listed_in:
                    raise DatasetError(
                        f"{path}: {relpath} is also listed in {listed_in[relpath]}"
                        + (" (twice)" if listed_in[relpath] == path else "")
                        + "; an image belongs to one split file: fix the split files"
                    )
                listed_in[relpath] = path
                entries[relpath] = (_pid_of(relpath, label, path), mod, split)
        per_trial[t] = entries
    paths = sorted(per_trial[trial])
    for t in trials:
        if sorted(per_trial[t]) != paths:
            raise DatasetError(
                f"RegDB trial {t} lists other images than trial {trial}; every trial must split the same images"
            )
    require_files(root, paths, "RegDB")
    records = []
    for relpath in paths:
        pid, mod, split = per_trial[trial][relpath]
        records.append(ImageRecord(relpath, pid, CAMERA[mod], mod, split))
    trial_splits = {t: [per_trial[t][p][2] for p in paths] for t in trials}
    return VIDataset("regdb", root, records, trial, trial_splits)
