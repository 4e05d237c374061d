"""The keypoint and body-part name tables, in one leaf module (no imports from the package).

``COCO17``: the 17 COCO keypoints in the order every pose network outputs them (left before right).
``KEYPOINTS``: the 13 keypoints of KGLFR-Net (head, then shoulders .. ankles). ``PARTS``: the 11 body
parts of keypoint erasing. ``FLIP_*[i]``: the index whose data entry i takes after a horizontal flip
(left <-> right; an involution). ``SKELETON``: the stick-figure lines, as index pairs into ``KEYPOINTS``.

Used by the synthetic data (``kglfr.data.synth``), the pose backends and cache, the transforms and the
drawings, so that there is one definition of each table.
"""

from __future__ import annotations

COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

KEYPOINTS = (
    "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_KEYPOINTS = len(KEYPOINTS)

PARTS = (
    "head", "chest", "abdomen",
    "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm",
    "left_thigh", "right_thigh", "left_shin", "right_shin",
)  # fmt: skip
NUM_PARTS = len(PARTS)

# Short labels for drawing.
KEYPOINT_SHORT = ("H", "lS", "rS", "lE", "rE", "lW", "rW", "lH", "rH", "lK", "rK", "lA", "rA")
PART_SHORT = ("hd", "ch", "ab", "lua", "rua", "lfa", "rfa", "lth", "rth", "lsh", "rsh")

HEAD_COCO = (0, 1, 2, 3, 4)  # nose, eyes, ears
BODY_COCO = tuple(range(5, 17))  # shoulders .. ankles, already left-before-right as in KEYPOINTS
assert tuple(COCO17[i] for i in BODY_COCO) == KEYPOINTS[1:]


def _mirror(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def flip_permutation(names: tuple[str, ...]) -> tuple[int, ...]:
    """``perm[i]`` = index of the mirror of ``names[i]`` (``left_x`` <-> ``right_x``; others map to themselves)."""
    return tuple(names.index(_mirror(n)) for n in names)


def flip_pairs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """The (left, right) index pairs of ``names``."""
    perm = flip_permutation(names)
    return tuple((i, j) for i, j in enumerate(perm) if names[i].startswith("left_"))


FLIP_KEYPOINTS = flip_permutation(KEYPOINTS)
FLIP_PARTS = flip_permutation(PARTS)
FLIP_COCO17 = flip_permutation(COCO17)
COCO_FLIP_PAIRS = flip_pairs(COCO17)  # ((1, 2), (3, 4), ..., (15, 16))

# Lines of the stick figure, as pairs of indices into KEYPOINTS.
SKELETON = (
    (0, 1), (0, 2), (1, 2), (1, 3), (3, 5), (2, 4), (4, 6),
    (1, 7), (2, 8), (7, 8), (7, 9), (9, 11), (8, 10), (10, 12),
)  # fmt: skip

# Keypoint confidence a part's keypoints need for the part to be valid (kglfr.keypoints.skeleton).
VALID_THRESHOLD = 0.3
