"""The one record type every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path


class Modality(IntEnum):
    VISIBLE = 0
    INFRARED = 1

    @property
    def short(self) -> str:
        return "vis" if self is Modality.VISIBLE else "ir"


TRAIN = "train"
TEST = "test"
SPLITS = (TRAIN, TEST)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a VI-ReID dataset.

    ``relpath`` is the path relative to the dataset root with forward slashes (e.g.
    ``cam3/0001/0005.jpg``); protocols order galleries by it. ``pid`` is the dataset's own identity
    number, never relabelled. ``camera`` is the dataset's camera number (RegDB: 1 visible, 2 thermal).
    """

    relpath: str
    pid: int
    camera: int
    modality: Modality
    split: str

    def path(self, root: str | Path) -> Path:
        return Path(root) / self.relpath
