"""What every dataset reader shares: the dataset container, layout checks and split-file parsing."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kglfr.data.records import SPLITS, TEST, TRAIN, ImageRecord, Modality
from kglfr.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class VIDataset:
    """A visible-infrared dataset as read from its official layout.

    ``records`` are sorted by ``relpath`` and carry the split of ``trial``. Datasets whose split
    changes with the trial (RegDB) also give ``trial_splits``: for every trial, the split of each
    record in the same order, so one prepared store serves every trial.
    """

    name: str
    root: Path
    records: list[ImageRecord]
    trial: int = 1
    trial_splits: dict[int, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.records = sorted(self.records, key=lambda r: r.relpath)

    @property
    def trials(self) -> list[int]:
        return sorted(self.trial_splits) if self.trial_splits else [self.trial]

    def split(self, name: str) -> list[ImageRecord]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [r for r in self.records if r.split == name]

    def with_trial(self, trial: int) -> VIDataset:
        """The same images with the split of another trial."""
        if not self.trial_splits:
            if trial != self.trial:
                raise DatasetError(f"{self.name} has a single split; trial {trial} does not exist")
            return self
        if trial not in self.trial_splits:
            raise DatasetError(f"{self.name} has no trial {trial}; trials are {self.trials}")
        splits = self.trial_splits[trial]
        records = [replace(r, split=s) for r, s in zip(self.records, splits, strict=True)]
        return VIDataset(self.name, self.root, records, trial, self.trial_splits)

    def summary(self) -> str:
        lines = [f"{self.name} at {self.root} (trial {self.trial})"]
        for split in SPLITS:
            recs = self.split(split)
            for mod in Modality:
                sub = [r for r in recs if r.modality == mod]
                lines.append(f"  {split:5s} {mod.short:3s}: {len({r.pid for r in sub}):5d} ids {len(sub):7d} images")
        return "\n".join(lines)


def require_layout(root: Path, layout: str, required: Sequence[str]) -> Path:
    """Check that ``root`` exists and holds every relative path in ``required``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset root {root} does not exist; pass the folder of the {layout} download")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    missing = [p for p in required if not (root / p).exists()]
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise DatasetError(
            f"{root} does not match the {layout} layout: missing {shown} (expected {', '.join(required)})"
        )
    return root


def require_files(root: Path, relpaths: Iterable[str], dataset: str) -> None:
    """Check that every image a split file names exists under ``root``."""
    missing = [p for p in relpaths if not (root / p).is_file()]
    if missing:
        raise DatasetError(
            f"{dataset}: {len(missing)} images named in the split files are missing, e.g. {root / missing[0]}"
        )


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files (``IMAGE_SUFFIXES``) inside ``folder``, or under it with ``recursive``; sorted, hidden
    files and folders skipped. The one image listing of kglfr (datasets, ``extract``, ``search``)."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def image_folder(folder: str | Path) -> list[Path]:
    """:func:`list_images` of a folder given by a user (recursive), with one clear error when it is a
    file, does not exist or holds no images."""
    folder = Path(folder).expanduser()
    if folder.is_file():
        raise DatasetError(f"{folder} is a file, not a folder of images; give the folder that holds them")
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist")
    files = list_images(folder, recursive=True)
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


_CAMERA = re.compile(r"^(?:cam|c)?(\d+)_", re.IGNORECASE)  # "0001.jpg" is a frame number, not camera 1


def parse_camera(name: str) -> int | None:
    """The camera number a custom-layout file name starts with (``3_x``, ``c3_x``, ``cam3_x``), else None."""
    m = _CAMERA.match(Path(name).stem)
    return int(m.group(1)) if m else None


def parse_layout(relpath: str | Path) -> tuple[int, int]:
    """(pid, camera) of an image at ``<pid>/<camera>_<anything>.jpg`` (the custom layout): pid -1 when its
    folder is not a number, camera 0 when its name does not start with one (see :func:`parse_camera`)."""
    parts = Path(relpath).parts
    pid = int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else -1
    cam = parse_camera(parts[-1]) if parts else None
    return pid, 0 if cam is None else cam


def read_split_text(path: Path) -> str:
    """The text of a split file: UTF-8 (a byte-order mark dropped); ``DatasetError`` naming the line of a
    byte that is not UTF-8."""
    from kglfr.io import NotUtf8, decode_utf8

    try:
        return decode_utf8(path.read_bytes())
    except NotUtf8 as e:
        raise DatasetError(f"{path}:{e.line}: byte 0x{e.byte:02x} is not UTF-8 text; split files hold "
                           "ids or 'path label' lines in UTF-8: fix or re-save the file") from None  # fmt: skip


def read_id_list(path: Path) -> list[int]:
    """Read SYSU-style identity lists: comma-separated integers, possibly over several lines."""
    text = read_split_text(path).strip()
    if not text:
        raise DatasetError(f"{path}: split file is empty")
    ids = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for token in line.replace(" ", "").split(","):
            if not token:
                continue
            try:
                ids.append(int(token))
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: {token!r} is not an identity number") from None
    return ids


def read_list_file(path: Path) -> list[tuple[str, int]]:
    """Read ``relative/path label`` lines (RegDB and LLCM split files)."""
    if not path.exists():
        raise DatasetError(f"split file {path} is missing")
    entries = []
    for lineno, line in enumerate(read_split_text(path).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected 'relative/path label', got {line!r}")
        try:
            label = int(parts[1])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: label {parts[1]!r} is not an integer") from None
        entries.append((parts[0].replace("\\", "/"), label))
    if not entries:
        raise DatasetError(f"{path}: split file is empty")
    return entries


def check_identities(records: Iterable[ImageRecord], dataset: str) -> list[int]:
    """Check modality coverage of identities.

    A training identity seen in one modality only cannot form a cross-modality batch: it is reported
    and its id returned, so the sampler leaves it out. A test identity with one modality only would
    have no cross-modality match and is an error.
    """
    seen: dict[tuple[str, int], set[Modality]] = {}
    for r in records:
        seen.setdefault((r.split, r.pid), set()).add(r.modality)
    skipped = sorted(pid for (split, pid), mods in seen.items() if split == TRAIN and len(mods) < 2)
    if skipped:
        log.warning(
            "%s: %d training identities have images in one modality only and are skipped: %s",
            dataset,
            len(skipped),
            ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else ""),
        )
    bad = sorted(pid for (split, pid), mods in seen.items() if split == TEST and len(mods) < 2)
    if bad:
        raise DatasetError(
            f"{dataset}: test identit{'y' if len(bad) == 1 else 'ies'} {', '.join(map(str, bad[:10]))} "
            "ha{} images in one modality only, so there is nothing to match across modalities".format(
                "s" if len(bad) == 1 else "ve"
            )
        )
    return skipped
