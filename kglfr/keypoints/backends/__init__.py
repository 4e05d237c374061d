"""Pose backends. Importing this package registers every backend; a backend whose optional runtime
(ai-edge-litert for blazepose) is missing says so when it is built, not on import."""

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
    importlib.import_module(f"kglfr.keypoints.backends.{_name}")

__all__ = ["COCO17", "BatchInfo", "PoseBackend", "PoseOutput", "backend_names", "build_backend", "register_backend"]
