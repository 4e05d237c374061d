"""SYSU-MM01, read from the official download layout.

``cam1``..``cam6/<pid:04d>/<nnnn>.jpg`` and ``exp/{train,val,test}_id.txt``. Cameras 1, 2, 4, 5 are
visible, 3 and 6 infrared. Training identities are train + val (395), as every published method uses.
"""

from __future__ import annotations

from pathlib import Path

from kglfr.data.datasets import register
from kglfr.data.datasets.base import VIDataset, list_images, read_id_list, require_layout
from kglfr.data.records import TEST, TRAIN, ImageRecord, Modality

VISIBLE_CAMERAS = (1, 2, 4, 5)
INFRARED_CAMERAS = (3, 6)
SPLIT_FILES = ("exp/train_id.txt", "exp/val_id.txt", "exp/test_id.txt")


@register("sysu")
def load_sysu(root: Path) -> VIDataset:
    required = [f"cam{c}" for c in range(1, 7)] + list(SPLIT_FILES)
    root = require_layout(root, "SYSU-MM01", required)
    train_ids = set(read_id_list(root / SPLIT_FILES[0])) | set(read_id_list(root / SPLIT_FILES[1]))
    test_ids = set(read_id_list(root / SPLIT_FILES[2]))
    records = []
    for cam in range(1, 7):
        modality = Modality.INFRARED if cam in INFRARED_CAMERAS else Modality.VISIBLE
        for pid in sorted(train_ids | test_ids):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            if not folder.is_dir():
                continue
            split = TEST if pid in test_ids else TRAIN
            for image in list_images(folder):
                relpath = f"cam{cam}/{pid:04d}/{image.name}"
                records.append(ImageRecord(relpath, pid, cam, modality, split))
    return VIDataset("sysu", root, records)
