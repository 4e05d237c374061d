"""The built-in synthetic visible-infrared dataset (``kglfr synth``).

People are drawn from a seeded body model (``body``), posed and projected (``figure``), rendered by
visible and infrared cameras (``render``) and written in the SYSU-MM01 or RegDB folder layout
(``layouts``, ``generate``) that the dataset readers read unchanged, with the ground-truth COCO-17
keypoints of every image in a sidecar file (``sidecar``).
"""

from kglfr.data.synth.figure import KEYPOINT_NAMES
from kglfr.data.synth.generate import DEFAULTS, MIN_IDS, SynthSummary, synthesize
from kglfr.data.synth.sidecar import SIDECAR_NAME, read_keypoints_sidecar, write_keypoints_sidecar

__all__ = [
    "DEFAULTS",
    "KEYPOINT_NAMES",
    "MIN_IDS",
    "SIDECAR_NAME",
    "SynthSummary",
    "read_keypoints_sidecar",
    "synthesize",
    "write_keypoints_sidecar",
]
