"""Pose backends. Importing this package registers every backend whose module is present."""

from __future__ import annotations

import importlib

from kglfr.keypoints.backends.base import (
    COCO17,
    BatchInfo,
    PoseBackend,
    PoseOutput,
    backend_names,
    build_backend,
    register_backend,
)

for _name in ("oracle", "hrnet", "blazepose"):
    try:
        importlib.import_module(f"kglfr.keypoints.backends.{_name}")
    except ModuleNotFoundError as e:  # a backend not written yet; missing optional runtimes are
        if e.name != f"kglfr.keypoints.backends.{_name}":  # reported when the backend is built
            raise

__all__ = ["COCO17", "BatchInfo", "PoseBackend", "PoseOutput", "backend_names", "build_backend", "register_backend"]
