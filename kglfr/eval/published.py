"""Published figures of the methods kglfr trains, as data: (method, protocol) -> Rank-1 / mAP / mINP (%).

The one place these numbers live: the presets' YAML comments, the docs' methods table and ``kglfr
compare`` read them from here. A figure the paper does not report is None. Protocols are the names of
``kglfr.eval.protocols`` (``sysu-all``, ``sysu-indoor``, ``regdb-v2i``, ``regdb-i2v``, ``llcm-*``).
"""

from __future__ import annotations

__all__ = ["PUBLISHED", "SOURCES", "published"]

SOURCES = {
    "agw": "Ye et al., Deep Learning for Person Re-identification: A Survey and Outlook, TPAMI 2021 (AGW, "
    "cross-modality results; code: mangye16/Cross-Modal-Re-ID-baseline)",
    "caj": "Ye et al., Channel Augmented Joint Learning for Visible-Infrared Recognition, ICCV 2021 (CAJ; "
    "code: mangye16/Cross-Modal-Re-ID-baseline, ICCV21_CAJ)",
    # RegDB in Table 1's column order (visible->infrared first); the paper's text names the directions the
    # other way round
    "kglfr": "KGLFR-Net, Table 1 (Gwon, Chae and Seo)",
}


def _fig(rank1: float, mAP: float, mINP: float | None = None) -> dict:
    return {"rank1": rank1, "mAP": mAP, "mINP": mINP}


PUBLISHED: dict[tuple[str, str], dict] = {
    ("agw", "sysu-all"): _fig(47.50, 47.65, 35.30),
    ("agw", "regdb-v2i"): _fig(70.05, 66.37, 50.19),
    ("caj", "sysu-all"): _fig(69.88, 66.89, 53.61),
    ("caj", "regdb-v2i"): _fig(85.03, 79.14, 65.33),
    ("kglfr", "sysu-all"): _fig(70.44, 67.59),
    ("kglfr", "sysu-indoor"): _fig(79.39, 82.78),
    ("kglfr", "regdb-v2i"): _fig(91.94, 88.13),
    ("kglfr", "regdb-i2v"): _fig(90.83, 86.77),
}


def published(method: str, protocol: str) -> dict | None:
    """``{"rank1", "mAP", "mINP", "source"}`` (percent; mINP None where unreported) of ``method`` under
    ``protocol``, or None when no figure was published (``kglfr_caj`` never was). ``method`` may be a preset
    name (``sysu/caj``): its last part is the method."""
    method = method.rsplit("/", 1)[-1]
    fig = PUBLISHED.get((method, protocol))
    return None if fig is None else {**fig, "source": SOURCES[method]}
