"""One way to build a model from its ``arch`` name: the backbone registry (:data:`kglfr.model.resnet.BUILDERS`)."""

from __future__ import annotations

from typing import Any

from kglfr.errors import KglfrError
from kglfr.model.agw import AGWNet
from kglfr.model.resnet import BUILDERS


def model_names() -> list[str]:
    """The valid ``arch`` names, in registry order."""
    return list(BUILDERS)


def build_model(arch: str, num_classes: int, **kwargs: Any) -> AGWNet:
    """An AGW network on the backbone ``arch`` (``kwargs``: :class:`AGWNet`'s, e.g. ``pretrained="imagenet"``).

    Raises:
        KglfrError: ``arch`` is not a registered backbone (the message lists the valid names).
    """
    if arch not in BUILDERS:
        raise KglfrError(f"unknown model arch {arch!r}; valid: {', '.join(model_names())}")
    return AGWNet(num_classes, arch=arch, **kwargs)
