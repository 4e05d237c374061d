"""ImageNet weights for the backbones: ``model.pretrained`` = ``imagenet``, ``none`` or a file.

``imagenet`` takes torchvision's official file from the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
or downloads it there (atomically, with a progress bar) from ``download.pytorch.org/models/``, or from
``$KGLFR_WEIGHTS_URL`` when set (a mirror, or a local server in the tests). The file name carries the
first 8 hex digits of its sha256, which are checked. Loading is strict: every key of the backbone but
``fc`` must be in the file with its shape. What was used is returned as a :class:`WeightsInfo` for the
run's records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kglfr.download import ChecksumError, DownloadError, download, sha256_prefix
from kglfr.errors import KglfrError
from kglfr.io import TorchLoadError, file_sha256, not_a_file, torch_load_safe

log = logging.getLogger(__name__)

BASE_URL = "https://download.pytorch.org/models/"
URL_ENV = "KGLFR_WEIGHTS_URL"

# Official torchvision files: the one downloaded first, then older names also accepted from the cache.
IMAGENET_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
}


class WeightsError(KglfrError):
    """ImageNet weights that cannot be found, downloaded, read or loaded."""


@dataclass(frozen=True)
class WeightsInfo:
    """The initial weights of a backbone: ``source`` is "imagenet", "file" or "none"."""

    source: str
    file: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.file, "sha256": self.sha256}

    def describe(self) -> str:
        """``none`` or ``FILE (sha256 HEX)``: the line for a report."""
        return "none (random initialisation)" if self.file is None else f"{self.file} (sha256 {self.sha256})"


NONE = WeightsInfo("none")


def hub_dir() -> Path:
    """Where torch keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _expected_prefix(name: str) -> str:
    # torchvision's convention: <arch>-<first 8 hex digits of the sha256>.pth
    return sha256_prefix(name) or name.rsplit("-", 1)[-1].split(".", 1)[0]


def _fetch_advice(url: str, dest: Path) -> str:
    return (f"download {url} and put it at {dest} (or set model.pretrained to a weights file, "
            "or to none for random initialisation)")  # fmt: skip


def _download(url: str, dest: Path, progress: bool) -> None:
    """``url`` -> ``dest`` (atomic, resumed on a dropped connection), checking the sha256 prefix."""
    try:
        download(url, dest, sha256=_expected_prefix(dest.name), progress=progress)
    except ChecksumError as e:
        raise WeightsError(
            f"{url} has sha256 {e.received[:8]}..., not the {e.expected}... its name promises "
            f"(a damaged or wrong file); {_fetch_advice(url, dest)}"
        ) from None
    except DownloadError as e:
        raise WeightsError(f"cannot download ImageNet weights ({e.reason}); {_fetch_advice(url, dest)}") from None


def imagenet_file(arch: str, *, base_url: str | None = None, progress: bool = True) -> Path:
    """The official ImageNet file of ``arch``: from the hub cache, else downloaded into it.

    Raises:
        WeightsError: offline, server error or a sha256 mismatch (the message names the URL and the path).
    """
    if arch not in IMAGENET_FILES:
        raise WeightsError(f"no ImageNet weights known for arch {arch!r}; known: {', '.join(IMAGENET_FILES)}")
    folder = hub_dir()
    for name in IMAGENET_FILES[arch]:
        if (folder / name).is_file():
            return folder / name
    name = IMAGENET_FILES[arch][0]
    base = base_url or os.environ.get(URL_ENV) or BASE_URL
    url = base.rstrip("/") + "/" + name
    log.info("downloading ImageNet weights for %s: %s -> %s", arch, url, folder / name)
    _download(url, folder / name, progress)
    return folder / name


def _key_list(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ..." if len(keys) > limit else shown


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch_load_safe(path)
    except TorchLoadError as e:
        raise WeightsError(f"cannot read weights file {path}: {e.reason}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_imagenet(model: nn.Module, path: str | Path, arch: str) -> Path:
    """Load a torchvision-layout weights file into ``model`` (all but ``fc``), strictly by key and shape.

    A state dict or ``{"state_dict": ...}``; ``module.`` prefixes are stripped.

    Raises:
        WeightsError: the file is missing or unreadable, or its keys or shapes do not match the model.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(not_a_file(path, "weights file").replace("does not exist", "not found"))
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    # Files saved before torch 0.4.1 (e.g. resnet50-19c8e357.pth) lack the BN batch counters.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]  # fmt: skip
    parts = [f"{len(keys)} {what} ({_key_list(keys, n)})" for what, keys, n in (
        ("missing keys", missing, 4), ("unexpected keys", unexpected, 4),
        ("shape mismatches, file vs model", wrong, 2)) if keys]  # fmt: skip
    if parts:
        raise WeightsError(f"weights file {path} does not fit {arch}: " + "; ".join(parts))
    for k, v in own.items():
        if k not in state:  # num_batches_tracked of an old file
            state[k] = torch.zeros_like(v)
    model.load_state_dict(state, strict=False)
    return path


def load_pretrained(
    model: nn.Module, pretrained: str | Path | None, arch: str, *, base_url: str | None = None, progress: bool = True
) -> WeightsInfo:
    """Initialise ``model`` as ``pretrained`` says: "imagenet", "none"/None (left as is) or a weights file."""
    if pretrained is None or pretrained == "none":
        return NONE
    source = "imagenet" if pretrained == "imagenet" else "file"
    path = imagenet_file(arch, base_url=base_url, progress=progress) if source == "imagenet" else Path(pretrained)
    if not path.is_file():
        raise WeightsError(not_a_file(path, "weights file").replace("does not exist", "not found"))
    digest = file_sha256(path)
    if source == "imagenet" and not digest.startswith(_expected_prefix(path.name)):
        url = (base_url or os.environ.get(URL_ENV) or BASE_URL).rstrip("/") + "/" + path.name
        raise WeightsError(f"{path} has sha256 {digest[:8]}..., not the {_expected_prefix(path.name)}... its name "
                           f"promises (damaged); {_fetch_advice(url, path)}")  # fmt: skip
    load_imagenet(model, path, arch)
    log.info("%s starts from %s weights %s (sha256 %s)", arch, source, path, digest[:12])
    return WeightsInfo(source, str(path), digest)
