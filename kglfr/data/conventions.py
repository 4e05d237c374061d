"""Facts of the public VI-ReID datasets and their published test protocols, written once.

SYSU-MM01 has six cameras: 1, 2 (indoor) and 4, 5 (outdoor) are visible, 3 (indoor) and 6
(outdoor) infrared; its indoor-search gallery comes from cameras 1 and 2. RegDB has one visible
(1) and one thermal (2) camera and is released with ten trial splits. LLCM uses cameras 1-9 in the
visible and 1, 2, 4-9 in the near-infrared modality. The drawn protocols (SYSU-MM01, LLCM) average
over ten gallery draws, and SYSU-MM01's multi-shot setting draws ten images per camera.
"""

from __future__ import annotations

SYSU_CAMERAS = (1, 2, 3, 4, 5, 6)
SYSU_VISIBLE = (1, 2, 4, 5)
SYSU_INFRARED = (3, 6)
SYSU_INDOOR = (1, 2)  # the visible indoor cameras: the indoor-search gallery

REGDB_VISIBLE = (1,)
REGDB_THERMAL = (2,)
REGDB_TRIALS = 10  # trial splits of the official release, numbered 1..REGDB_TRIALS

LLCM_VISIBLE = (1, 2, 3, 4, 5, 6, 7, 8, 9)
LLCM_INFRARED = (1, 2, 4, 5, 6, 7, 8, 9)

GALLERY_DRAWS = 10  # the published protocols' number of gallery draws (trials) on one test set
MULTI_SHOT = 10  # images per (identity, camera) in SYSU-MM01's multi-shot gallery
