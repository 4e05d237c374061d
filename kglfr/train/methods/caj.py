"""CAJ, channel augmented joint learning (Ye et al., ICCV 2021; ``ICCV21_CAJ`` in Cross-Modal-Re-ID-baseline).

Each of the K visible images of an identity enters twice, plain and channel-exchanged (one of R, G, B
copied into all three), beside its K infrared images; labels repeat per view. Every view gets pad, crop,
flip and channel random erasing (``augment.channel_erasing_prob``); the infrared view also channel
adaptive grey (``augment.grey_prob``). Loss: ID + the ADP triplet (``loss.triplet=adp``, alpha 1, gamma 1,
squared difference clamped at 88). ``loss.adp_normalize`` puts the ADP term on L2-normalised features,
the way the demo preset trains CAJ from random initialisation (see docs/training.md).
"""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig

from kglfr.data.records import Modality
from kglfr.data.views import View, adaptive_grey, channel_exchange, channel_random_erasing
from kglfr.train.methods import register_method
from kglfr.train.methods.agw import AGW


def _then(first, second):
    def both(images, generator):
        return second(first(images, generator), generator)

    return both


def caj_views(cfg: DictConfig) -> tuple[View, ...]:
    """CAJ's three views: visible, visible channel-exchanged, infrared (each with channel random erasing)."""
    A = cfg.augment
    erase = partial(channel_random_erasing, prob=A.channel_erasing_prob, area=(A.area_min, A.area_max),
                    ratio_min=A.ratio_min)  # fmt: skip
    grey = partial(adaptive_grey, prob=A.grey_prob)
    return (
        View("visible", Modality.VISIBLE, erase),
        View("visible_exchanged", Modality.VISIBLE, _then(erase, channel_exchange)),
        View("infrared", Modality.INFRARED, _then(erase, grey)),
    )


@register_method("caj")
class CAJ(AGW):
    defaults = {
        "loss": {"triplet": "adp", "global_weight": 1.0, "kmlfr": False},
        "augment": {"erasing": "none", "channel_erasing_prob": 0.5, "grey_prob": 0.5},
    }

    def views(self, cfg: DictConfig) -> tuple[View, ...]:
        return caj_views(cfg)
