import numpy as np
import pytest
import torch

from kglfr.keypoints.backends.base import COCO17
from kglfr.keypoints.heatmaps import (
    dequantise,
    peaks,
    quantise,
    render_gaussians,
    resize_maps,
)
from kglfr.keypoints.skeleton import (
    FLIP_COCO17,
    FLIP_KEYPOINTS,
    FLIP_PARTS,
    KEYPOINTS,
    PART_WEIGHTS,
    PARTS,
    SKELETON,
    coco_to_13_heatmaps,
    coco_to_13_keypoints,
    flip_heatmaps,
    flip_keypoints,
    part_centres,
    swap_left_right,
)

K = {n: i for i, n in enumerate(KEYPOINTS)}
P = {n: i for i, n in enumerate(PARTS)}


def _random_keypoints(rng, b=5, n=17):
    kp = rng.uniform(0, 100, (b, n, 3)).astype(np.float32)
    kp[..., 2] = rng.uniform(0, 1, (b, n))
    return kp


def test_orders_and_flip_pairs():
    assert len(KEYPOINTS) == 13 and KEYPOINTS[0] == "head" and KEYPOINTS[1:] == COCO17[5:]
    assert len(PARTS) == 11
    for names, order in ((KEYPOINTS, FLIP_KEYPOINTS), (PARTS, FLIP_PARTS), (COCO17, FLIP_COCO17)):
        assert sorted(order) == list(range(len(names)))
        assert all(order[order[i]] == i for i in range(len(names)))  # an involution
        for i, j in enumerate(order):
            assert names[i].replace("left", "X").replace("right", "left").replace("X", "right") == names[j]
    assert FLIP_PARTS[P["left_thigh"]] == P["right_thigh"] and FLIP_PARTS[P["chest"]] == P["chest"]
    assert all(0 <= a < 13 and 0 <= b < 13 for a, b in SKELETON)


def test_head_heatmap_is_max_or_sum_of_face_maps():
    rng = np.random.default_rng(0)
    hm = rng.uniform(0, 0.4, (2, 17, 8, 4)).astype(np.float32)
    out = coco_to_13_heatmaps(hm)
    assert out.shape == (2, 13, 8, 4)
    np.testing.assert_array_equal(out[:, 0], hm[:, :5].max(1))
    np.testing.assert_array_equal(out[:, 1:], hm[:, 5:])
    np.testing.assert_allclose(coco_to_13_heatmaps(hm, "sum")[:, 0], np.minimum(hm[:, :5].sum(1), 1), rtol=1e-6)
    t = coco_to_13_heatmaps(torch.from_numpy(hm))
    np.testing.assert_array_equal(t.numpy(), out)
    with pytest.raises(ValueError):
        coco_to_13_heatmaps(hm, "mean")
    with pytest.raises(ValueError):
        coco_to_13_heatmaps(hm[:, :13])


def test_head_keypoint_is_most_confident_face_point_or_weighted_mean():
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, :5] = [[10, 10, 0.2], [20, 12, 0.9], [30, 14, 0.5], [40, 16, 0.0], [50, 18, 0.4]]
    kp[0, 5:, :2] = np.arange(24).reshape(12, 2)
    kp[0, 5:, 2] = 1
    best = coco_to_13_keypoints(kp)
    np.testing.assert_allclose(best[0, 0], [20, 12, 0.9], rtol=1e-6)
    np.testing.assert_array_equal(best[0, 1:], kp[0, 5:])
    mean = coco_to_13_keypoints(kp, "mean")
    w = np.array([0.2, 0.9, 0.5, 0.0, 0.4])
    np.testing.assert_allclose(mean[0, 0, :2], (w[:, None] * kp[0, :5, :2]).sum(0) / w.sum(), rtol=1e-5)
    assert mean[0, 0, 2] == pytest.approx(0.9)
    for mode in ("best", "mean"):
        t = coco_to_13_keypoints(torch.from_numpy(kp), mode)
        np.testing.assert_allclose(t.numpy(), coco_to_13_keypoints(kp, mode), rtol=1e-6)
    kp[0, :5, 2] = 0  # no face at all: confidence 0 (mean of positions for "mean")
    assert coco_to_13_keypoints(kp)[0, 0, 2] == 0 and coco_to_13_keypoints(kp, "mean")[0, 0, 2] == 0


def test_part_centres_follow_the_spec():
    rng = np.random.default_rng(1)
    kp = _random_keypoints(rng, n=13)
    kp[..., 2] = 1
    c, valid = part_centres(kp)
    assert c.shape == (5, 11, 2) and valid.all()
    xy = kp[..., :2]
    shoulders = (xy[:, K["left_shoulder"]] + xy[:, K["right_shoulder"]]) / 2
    hips = (xy[:, K["left_hip"]] + xy[:, K["right_hip"]]) / 2
    np.testing.assert_allclose(c[:, P["head"]], xy[:, K["head"]], rtol=1e-6)
    np.testing.assert_allclose(c[:, P["chest"]], 0.75 * shoulders + 0.25 * hips, rtol=1e-5)
    np.testing.assert_allclose(c[:, P["abdomen"]], 0.25 * shoulders + 0.75 * hips, rtol=1e-5)
    segments = {"upper_arm": ("shoulder", "elbow"), "forearm": ("elbow", "wrist"),
                "thigh": ("hip", "knee"), "shin": ("knee", "ankle")}  # fmt: skip
    for seg, (a, b) in segments.items():
        for side in ("left", "right"):
            want = (xy[:, K[f"{side}_{a}"]] + xy[:, K[f"{side}_{b}"]]) / 2
            np.testing.assert_allclose(c[:, P[f"{side}_{seg}"]], want, rtol=1e-5)
    ct, vt = part_centres(torch.from_numpy(kp))
    np.testing.assert_allclose(ct.numpy(), c, rtol=1e-5)
    assert vt.dtype == torch.bool and vt.all()


def test_part_validity_needs_every_keypoint_above_threshold():
    kp = np.ones((13, 3), np.float32)
    kp[K["left_elbow"], 2] = 0.29
    _, valid = part_centres(kp)
    invalid = {PARTS[i] for i in np.flatnonzero(~valid)}
    assert invalid == {"left_upper_arm", "left_forearm"}
    _, valid = part_centres(kp, threshold=0.2)
    assert valid.all()
    kp[K["right_hip"], 2] = 0.0
    invalid = {PARTS[i] for i in np.flatnonzero(~part_centres(kp)[1])}
    assert invalid == {"left_upper_arm", "left_forearm", "chest", "abdomen", "right_thigh"}
    kp[:, 2] = 0
    assert not part_centres(kp)[1].any()
    assert np.all(PART_WEIGHTS.sum(1) == 1)


def test_flips_commute_with_parts_and_heatmaps():
    rng = np.random.default_rng(2)
    kp = _random_keypoints(rng, n=13)
    W, H = 144.0, 288.0
    f = flip_keypoints(kp, W)
    np.testing.assert_allclose(flip_keypoints(f, W), kp, atol=1e-4)
    assert f[0, K["left_knee"], 0] == pytest.approx(W - kp[0, K["right_knee"], 0])
    c, v = part_centres(kp)
    fc, fv = flip_keypoints(c, W), swap_left_right(v, -1)  # 11 part centres: FLIP_PARTS
    c2, v2 = part_centres(f)
    np.testing.assert_allclose(fc, c2, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(fv, v2)
    # the flipped heatmaps are the heatmaps rendered from the flipped keypoints
    maps = render_gaussians(kp[..., :2], kp[..., 2] > 0.5, (H, W), (80, 40))
    np.testing.assert_allclose(flip_heatmaps(maps), render_gaussians(f[..., :2], f[..., 2] > 0.5, (H, W), (80, 40)),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(flip_heatmaps(torch.from_numpy(maps)).numpy(), flip_heatmaps(maps))
    # torch (what the training transform runs) gives the numpy result; 11, 13 and 17 entries are told apart
    np.testing.assert_array_equal(flip_keypoints(torch.from_numpy(kp), W).numpy(), f)
    np.testing.assert_array_equal(swap_left_right(torch.from_numpy(v), -1).numpy(), fv)
    coco = _random_keypoints(rng, n=17)
    assert flip_keypoints(coco, W)[0, COCO17.index("left_eye"), 1] == coco[0, COCO17.index("right_eye"), 1]
    with pytest.raises(ValueError, match="no left/right pairs known for 12 entries"):
        swap_left_right(np.zeros((2, 12)), -1)


def test_resize_quantise_and_peaks():
    maps = render_gaussians(np.array([[72.0, 144.0]]), np.array([True]), (288, 144), (80, 40))
    area = resize_maps(maps, (32, 16), "area")
    assert area.sum() * (80 * 40) / (32 * 16) == pytest.approx(maps.sum(), rel=1e-4)  # area averaging keeps mass
    small = resize_maps(maps, (32, 16))  # bilinear: F.interpolate without anti-aliasing
    assert small.shape == (1, 32, 16)
    ref = torch.nn.functional.interpolate(torch.from_numpy(maps)[None], size=(32, 16), mode="bilinear")
    np.testing.assert_allclose(small, ref[0].numpy(), atol=1e-6)
    assert small.max() > area.max()
    x, y, _ = peaks(small, (288, 144))[0]
    assert abs(x - 72) <= 4.5 and abs(y - 144) <= 4.5
    q, s = quantise(small)
    assert q.dtype == np.uint8 and q.max() == 255 and s[0] == pytest.approx(small.max())
    assert np.abs(dequantise(q, s) - small).max() <= s[0] / 510 + 1e-7
    q0, s0 = quantise(np.zeros((2, 4, 4)))
    assert not q0.any() and not s0.any()
    up = resize_maps(small, (64, 32))  # growing is bilinear: constant maps stay constant
    assert up.shape == (1, 64, 32)
    np.testing.assert_allclose(resize_maps(np.full((3, 4), 0.5), (9, 7)), 0.5, rtol=1e-6)
