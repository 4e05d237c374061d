"""LLCM, read from its official release layout.

``vis/<pid>/<pid>_c<cc>_s<scene>_f<frame>_vis.jpg``, ``nir/...`` likewise, and
``idx/{train,test}_{vis,nir}.txt`` (lines ``relative/path label``). The identity is the folder number
and the camera the ``_c<cc>`` token of the file name.
"""

from __future__ import annotations

import re
from pathlib import Path

from kglfr.data.datasets import register
from kglfr.data.datasets.base import VIDataset, read_list_file, require_files, require_layout
from kglfr.data.records import TEST, TRAIN, ImageRecord, Modality
from kglfr.errors import DatasetError

SPLIT_FILES = {
    (TRAIN, Modality.VISIBLE): "idx/train_vis.txt",
    (TRAIN, Modality.INFRARED): "idx/train_nir.txt",
    (TEST, Modality.VISIBLE): "idx/test_vis.txt",
    (TEST, Modality.INFRARED): "idx/test_nir.txt",
}
_CAMERA = re.compile(r"_c(\d+)")


@register("llcm")
def load_llcm(root: Path) -> VIDataset:
    root = require_layout(root, "LLCM", ["vis", "nir", *SPLIT_FILES.values()])
    records = []
    listed_in: dict[str, str] = {}
    for (split, mod), name in SPLIT_FILES.items():
        path = root / name
        for lineno, (relpath, _label) in enumerate(read_list_file(path), 1):
            if relpath in listed_in:
                raise DatasetError(
                    f"{path}:{lineno}: {relpath} is already listed in {listed_in[relpath]}; "
                    "an image belongs to one split file, once: fix the split files"
                )
            listed_in[relpath] = f"{path}:{lineno}"
            parts = relpath.split("/")
            cam = _CAMERA.search(parts[-1])
            if len(parts) < 2 or not parts[-2].isdigit() or cam is None:
                raise DatasetError(f"{path}:{lineno}: {relpath!r} is not <vis|nir>/<pid>/<pid>_c<camera>_...")
            records.append(ImageRecord(relpath, int(parts[-2]), int(cam.group(1)), mod, split))
    require_files(root, (r.relpath for r in records), "LLCM")
    return VIDataset("llcm", root, records)
