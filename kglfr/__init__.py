"""kglfr: KGLFR-Net for visible-infrared person re-identification.

``kglfr.load(checkpoint, device="cpu")`` gives a :class:`kglfr.api.ReIDModel` (imported on first use,
so ``import kglfr`` stays light).
"""

__version__ = "0.1.0"


def load(checkpoint, device="cpu", amp="auto"):
    """The trained model of a ``kglfr train`` checkpoint, ready to ``embed`` images; ``amp``: auto, off,
    bf16, fp16 or int8 (see kglfr.api.load)."""
    from kglfr.api import load as _load

    return _load(checkpoint, device, amp)


def __getattr__(name):
    if name == "ReIDModel":
        from kglfr.api import ReIDModel

        return ReIDModel
    raise AttributeError(f"module 'kglfr' has no attribute {name!r}")
