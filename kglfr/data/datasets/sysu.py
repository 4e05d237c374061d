"""SYSU-MM01, read from the official download layout.

``cam1``..``cam6/<pid:04d>/<nnnn>.jpg`` and ``exp/{train,val,test}_id.txt``. Cameras 1, 2, 4, 5 are
visible, 3 and 6 infrared. Training identities are train + val (395), as every published method uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kglfr.data.conventions import SYSU_CAMERAS, SYSU_INFRARED
from kglfr.data.datasets import register
from kglfr.data.datasets.base import VIDataset, list_images, read_id_list, require_layout
from kglfr.data.records import TEST, TRAIN, ImageRecord, Modality
from kglfr.errors import DatasetError

log = logging.getLogger(__name__)

SPLIT_FILES = ("exp/train_id.txt", "exp/val_id.txt", "exp/test_id.txt")


@register("sysu")
def load_sysu(root: Path) -> VIDataset:
    required = [f"cam{c}" for c in SYSU_CAMERAS] + list(SPLIT_FILES)
    root = require_layout(root, "SYSU-MM01", required)
    lists = {name: set(read_id_list(root / name)) for name in SPLIT_FILES}
    test_ids = lists[SPLIT_FILES[2]]
    for name in SPLIT_FILES[:2]:
        both = sorted(lists[name] & test_ids)
        if both:
            raise DatasetError(
                f"{root / name} and {root / SPLIT_FILES[2]} both list identit{'y' if len(both) == 1 else 'ies'} "
                f"{_some(both)}; an identity is either for training or for testing: fix the split files"
            )
    train_ids = lists[SPLIT_FILES[0]] | lists[SPLIT_FILES[1]]
    on_disk = {
        int(d.name) for cam in SYSU_CAMERAS for d in (root / f"cam{cam}").iterdir() if d.is_dir() and d.name.isdigit()
    }
    unlisted = sorted(on_disk - train_ids - test_ids)
    if unlisted:
        log.warning(
            "SYSU-MM01 at %s: %d identity folders are in no split file (%s) and are left out: %s",
            root, len(unlisted), ", ".join(SPLIT_FILES), _some(unlisted),
        )  # fmt: skip
    records = []
    for cam in SYSU_CAMERAS:
        modality = Modality.INFRARED if cam in SYSU_INFRARED else Modality.VISIBLE
        for pid in sorted(train_ids | test_ids):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            if not folder.is_dir():
                continue
            split = TEST if pid in test_ids else TRAIN
            for image in list_images(folder):
                relpath = f"cam{cam}/{pid:04d}/{image.name}"
                records.append(ImageRecord(relpath, pid, cam, modality, split))
    empty = sorted((train_ids | test_ids) - {r.pid for r in records})
    if empty:
        log.warning("SYSU-MM01 at %s: %d identities listed in the split files have no images (%s): they are left "
                    "out", root, len(empty), _some(empty))  # fmt: skip
    return VIDataset("sysu", root, records)


def _some(ids: list[int], limit: int = 10) -> str:
    return ", ".join(map(str, ids[:limit])) + (" ..." if len(ids) > limit else "")
