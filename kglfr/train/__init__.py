"""Training: losses (``kglfr.train.losses``) and erasing augmentations (``kglfr.train.erasing``)."""

from kglfr.train.erasing import (
    apply_boxes,
    boxes_from_centres,
    keypoint_erasing,
    random_centres,
    random_erasing,
    sample_box_sizes,
)
from kglfr.train.losses import (
    batch_hard_triplet,
    cross_entropy,
    draw_keypoint,
    keypoint_mask,
    masked_local_features,
    pairwise_distance,
    weighted_regularized_triplet,
)

__all__ = [
    "apply_boxes", "batch_hard_triplet", "boxes_from_centres", "cross_entropy", "draw_keypoint",
    "keypoint_erasing", "keypoint_mask", "masked_local_features", "pairwise_distance", "random_centres",
    "random_erasing", "sample_box_sizes", "weighted_regularized_triplet",
]  # fmt: skip
