"""KGLFR on top of CAJ (not published; the "beyond the paper" row): CAJ's three views, channel exchange and
adaptive grey, with KGLFR's keypoint erasing (KEGFR) in place of channel random erasing, CAJ's ID + ADP
triplet and KGLFR's keypoint-masked local triplet (weight 0.5)."""

from __future__ import annotations

from omegaconf import DictConfig

from kglfr.data.views import View
from kglfr.train.methods import register_method
from kglfr.train.methods.base import Method
from kglfr.train.methods.caj import caj_views
from kglfr.train.methods.kglfr import KGLFR


@register_method("kglfr_caj")
class KGLFRCAJ(KGLFR):
    defaults = {
        "loss": {"triplet": "adp", "global_weight": 1.0, "kmlfr": True},
        "augment": {"erasing": "keypoint", "channel_erasing_prob": 0.0, "grey_prob": 0.5},
    }

    def views(self, cfg: DictConfig) -> tuple[View, ...]:
        return caj_views(cfg)

    # a method of its own, not a Table 2 row of KGLFR: named and looked up as itself
    label = Method.label
    published = Method.published
