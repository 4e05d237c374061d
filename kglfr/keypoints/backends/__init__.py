"""Pose backends. Importing this package imports every module in it, so each registers its backend
(adding a backend is one file with ``@register_backend``); a backend whose optional runtime
(ai-edge-litert for blazepose) is missing says so when it is built, not on import."""

from __future__ import annotations

import importlib
import pkgutil

from kglfr.keypoints.backends.base import (
    COCO17,
    BatchInfo,
    PoseBackend,
    PoseOutput,
    backend_names,
    build_backend,
    register_backend,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["COCO17", "BatchInfo", "PoseBackend", "PoseOutput", "backend_names", "build_backend", "register_backend"]
