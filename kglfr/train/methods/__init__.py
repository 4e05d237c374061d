"""Training methods, found by a registry: AGW, CAJ, KGLFR, KGLFR + CAJ (one module each).

A method is a :class:`~kglfr.train.methods.base.Method` subclass decorated ``@register_method("name")`` in a
module of this package; the package imports every module in it, so there is no list to edit. The trainer
calls the method (``views``, ``needs_keypoints``, ``prepare``, ``losses``) and names none; the config's
``method.name`` picks it and its ``defaults`` sit under the preset's values (``kglfr.train.config``).
"""

from __future__ import annotations

import importlib
import pkgutil

from kglfr.errors import KglfrError
from kglfr.train.methods.base import Losses, Method

__all__ = ["Losses", "Method", "get_method", "method_names", "register_method"]

_REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass as ``method.name=<name>``."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """The registered method ``name`` (a fresh instance)."""
    if name not in _REGISTRY:
        raise KglfrError(f"unknown method {name!r} (method.name); registered methods: {', '.join(method_names())}")
    return _REGISTRY[name]()


for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")
