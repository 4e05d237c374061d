"""A user's own data: ``<root>/{visible,infrared}/<pid>/<camera>_<anything>.{jpg,png,bmp}``.

Identities are split into train and test by a seeded shuffle. ``<camera>`` is an integer (``3``), or
``c`` or ``cam`` followed by one (``c3``, ``cam3``); a name that starts with no camera is camera 0, as
:func:`~kglfr.data.datasets.base.parse_layout` reads it for ``extract`` and ``search``. Cameras must differ
between the two modalities.
"""

from __future__ import annotations

import random
from pathlib import Path

from kglfr.data.datasets import register
from kglfr.data.datasets.base import VIDataset, list_images, parse_layout, require_layout
from kglfr.data.records import TEST, TRAIN, ImageRecord, Modality
from kglfr.errors import DatasetError

FOLDERS = {Modality.VISIBLE: "visible", Modality.INFRARED: "infrared"}


@register("custom")
def load_custom(root: Path, test_fraction: float = 0.5, split_seed: int = 0) -> VIDataset:
    root = require_layout(root, "custom", list(FOLDERS.values()))
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test fraction must be between 0 and 1, got {test_fraction}")
    found: list[tuple[str, int, int, Modality]] = []
    for mod, folder in FOLDERS.items():
        for pid_dir in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
            if not pid_dir.name.isdigit():
                raise DatasetError(f"{pid_dir}: identity folders must be numbers (e.g. {folder}/0001)")
            for image in list_images(pid_dir):
                rel = f"{folder}/{pid_dir.name}/{image.name}"
                pid, cam = parse_layout(rel)
                found.append((rel, pid, cam, mod))
    if not found:
        raise DatasetError(f"{root}: no images under visible/<pid>/ or infrared/<pid>/")
    cams = {mod: {c for _, _, c, m in found if m == mod} for mod in Modality}
    if cams[Modality.VISIBLE] & cams[Modality.INFRARED]:
        shared = sorted(cams[Modality.VISIBLE] & cams[Modality.INFRARED])
        hint = " (a file name that starts with no camera, e.g. 0001.jpg, is camera 0)" if 0 in shared else ""
        raise DatasetError(
            f"{root}: cameras {shared} appear in both visible and infrared{hint}; give each modality its own: "
            "start file names with the camera, e.g. 3_0001.jpg, c3_0001.jpg, cam3_0001.jpg"
        )
    pids = sorted({pid for _, pid, _, _ in found})
    random.Random(split_seed).shuffle(pids)
    n_test = max(1, round(len(pids) * test_fraction))
    test_ids = set(pids[:n_test])
    records = [ImageRecord(rel, pid, cam, mod, TEST if pid in test_ids else TRAIN) for rel, pid, cam, mod in found]
    return VIDataset("custom", root, records)
