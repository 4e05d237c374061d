"""Keypoints: pose backends, the COCO-17 -> 13 skeleton and part centres, and the store cache."""
