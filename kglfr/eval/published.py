"""The figures each method's paper publishes, per protocol: looked up to stand beside measured results.

Keys are a method's name (``agw``, ``caj``, ``kglfr``: the last part of its preset name) and a protocol of
:mod:`kglfr.eval.protocols`. Figures are in percent; ``minp`` is None where the paper gives no mINP.
"""

from __future__ import annotations

AGW_SOURCE = "Ye et al., Deep Learning for Person Re-identification: A Survey and Outlook, TPAMI 2021 (AGW)"
CAJ_SOURCE = "Ye et al., Channel Augmented Joint Learning for Visible-Infrared Recognition, ICCV 2021 (CAJ)"
KGLFR_SOURCE = "KGLFR-Net paper, Table 1"

# (method, protocol) -> (Rank-1, mAP, mINP or None, source)
_FIGURES: dict[tuple[str, str], tuple[float, float, float | None, str]] = {
    ("agw", "sysu-all"): (47.50, 47.65, 35.30, AGW_SOURCE),
    ("agw", "regdb-v2i"): (70.05, 66.37, 50.19, AGW_SOURCE),
    ("caj", "sysu-all"): (69.88, 66.89, 53.61, CAJ_SOURCE),
    ("caj", "regdb-v2i"): (85.03, 79.14, 65.33, CAJ_SOURCE),
    ("kglfr", "sysu-all"): (70.44, 67.59, None, KGLFR_SOURCE),
    ("kglfr", "sysu-indoor"): (79.39, 82.78, None, KGLFR_SOURCE),
    # Table 1's RegDB columns: visible-to-infrared, then infrared-to-visible
    ("kglfr", "regdb-v2i"): (91.94, 88.13, None, KGLFR_SOURCE),
    ("kglfr", "regdb-i2v"): (90.83, 86.77, None, KGLFR_SOURCE),
}


def published(method: str, protocol: str) -> dict | None:
    """``{"rank1", "map", "minp", "source"}`` that ``method``'s paper reports under ``protocol`` (``minp`` None
    where it gives none), or None when it publishes nothing there. ``method`` may be a preset name
    (``sysu/caj``): its last part is the method."""
    found = _FIGURES.get((method.rsplit("/", 1)[-1], protocol))
    if found is None:
        return None
    rank1, map_, minp, source = found
    return {"rank1": rank1, "map": map_, "minp": minp, "source": source}
