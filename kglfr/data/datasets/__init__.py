"""Dataset registry: ``load_dataset(name, root)``; adding a dataset is one file in this package with
``@register`` (every module of the package is imported, so the file needs no listing anywhere)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from kglfr.data.datasets.base import VIDataset, check_identities
from kglfr.errors import DatasetError

Reader = Callable[..., VIDataset]
_READERS: dict[str, Reader] = {}


def register(name: str) -> Callable[[Reader], Reader]:
    """Register ``reader(root, **options) -> VIDataset`` under ``name``."""

    def wrap(fn: Reader) -> Reader:
        if name in _READERS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _READERS[name] = fn
        return fn

    return wrap


def dataset_names() -> list[str]:
    return sorted(_READERS)


def load_dataset(name: str, root: str | Path, **options) -> VIDataset:
    """Read dataset ``name`` from ``root``; raises ``DatasetError`` with what was expected."""
    if name not in _READERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}")
    dataset = _READERS[name](Path(root).expanduser(), **options)
    check_identities(dataset.records, name)
    return dataset


# Import every module of the package, so that its readers register themselves.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["VIDataset", "dataset_names", "load_dataset", "register"]
