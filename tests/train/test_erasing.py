"""Geometry and randomness of Random Erasing and keypoint erasing (KEGFR, eq. 1)."""

from __future__ import annotations

import math

import pytest
import torch

from kglfr.train.erasing import (
    apply_boxes,
    boxes_from_centres,
    keypoint_erasing,
    random_centres,
    random_erasing,
    sample_box_sizes,
)

H, W = 288, 144


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _erased(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """B x H x W bool: pixels changed in any channel."""
    return (before != after).any(1)


def _box_mask(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    out = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        out[i, y0:y1, x0:x1] = True
    return out


def test_box_sizes_area_and_aspect_distribution():
    n = 20000
    big_h, big_w = 1000, 1000  # large enough that no box is capped and rounding barely matters
    s = sample_box_sizes(n, big_h, big_w, _gen()).double()
    assert s.shape == (n, 2)
    frac = s[:, 0] * s[:, 1] / (big_h * big_w)
    assert frac.min() >= 0.02 * 0.99 and frac.max() <= 0.4 * 1.01
    assert abs(float(frac.mean()) - 0.21) < 0.01  # uniform in [0.02, 0.4]
    aspect = s[:, 0] / s[:, 1]
    assert aspect.min() >= 0.3 * 0.98 and aspect.max() <= (1 / 0.3) * 1.02
    assert abs(float(aspect.log().median())) < 0.05  # log-uniform, symmetric around 1
    assert abs(float((aspect < 1).double().mean()) - 0.5) < 0.02


def test_box_sizes_capped_at_image():
    s = sample_box_sizes(5000, H, W, _gen(1))
    assert s.dtype == torch.long
    assert (s[:, 0] >= 1).all() and (s[:, 0] <= H).all() and (s[:, 1] >= 1).all() and (s[:, 1] <= W).all()
    assert (s[:, 1] == W).any()  # wide boxes on a 2:1 image do get capped
    uncapped = s[:, 1] < W
    frac = (s[uncapped, 0] * s[uncapped, 1]).double() / (H * W)
    assert frac.min() >= 0.02 * 0.95 and frac.max() <= 0.4 * 1.05


def test_boxes_centred_when_not_clipped():
    centres = torch.tensor([[72.0, 144.0], [72.5, 144.5], [70.3, 100.9], [50.0, 60.0]])
    sizes = torch.tensor([[40, 20], [41, 21], [33, 18], [10, 11]])
    b = boxes_from_centres(centres, sizes, H, W)
    assert b.dtype == torch.long and b.shape == (4, 4)
    assert torch.equal(b[:, 1] - b[:, 0], sizes[:, 0]) and torch.equal(b[:, 3] - b[:, 2], sizes[:, 1])
    cy, cx = (b[:, 0] + b[:, 1]) / 2, (b[:, 2] + b[:, 3]) / 2
    assert ((cy - centres[:, 1]).abs() <= 1).all() and ((cx - centres[:, 0]).abs() <= 1).all()
    assert b[0].tolist() == [124, 164, 62, 82]
    # Statistically: random centres and sizes away from the borders.
    g = _gen(2)
    c = torch.rand(1000, 2, generator=g) * torch.tensor([40.0, 100.0]) + torch.tensor([52.0, 94.0])
    s = torch.randint(1, 40, (1000, 2), generator=g)
    b = boxes_from_centres(c, s, H, W)
    assert ((b[:, 0] + b[:, 1]) / 2 - c[:, 1]).abs().max() <= 0.5
    assert ((b[:, 2] + b[:, 3]) / 2 - c[:, 0]).abs().max() <= 0.5


def test_boxes_clipped_at_borders():
    g = _gen(3)
    c = random_centres(2000, H, W, g)
    assert (c[:, 0] >= 0).all() and (c[:, 0] < W).all() and (c[:, 1] >= 0).all() and (c[:, 1] < H).all()
    s = sample_box_sizes(2000, H, W, g)
    b = boxes_from_centres(c, s, H, W)
    assert (b[:, 0] >= 0).all() and (b[:, 1] <= H).all() and (b[:, 2] >= 0).all() and (b[:, 3] <= W).all()
    assert (b[:, 0] < b[:, 1]).all() and (b[:, 2] < b[:, 3]).all()
    # The centre's own pixel stays inside the clipped box.
    px, py = c[:, 0].floor(), c[:, 1].floor()
    assert ((b[:, 0] <= py) & (py < b[:, 1]) & (b[:, 2] <= px) & (px < b[:, 3])).all()
    corner = boxes_from_centres(torch.tensor([[0.0, 0.0], [143.9, 287.9]]), torch.tensor([[50, 30], [50, 30]]), H, W)
    assert corner.tolist() == [[0, 25, 0, 15], [263, 288, 129, 144]]


def test_apply_boxes_fill_and_rest_unchanged():
    g = _gen(4)
    img = torch.randn(3, 3, 20, 10, generator=g)
    boxes = torch.tensor([[2, 7, 1, 4], [0, 20, 0, 10], [5, 6, 5, 6]])
    apply = torch.tensor([True, False, True])
    out = apply_boxes(img, boxes, apply, fill=0.0)
    assert out is not img and not torch.equal(out, img)
    region = _box_mask(boxes, 20, 10) & apply.view(-1, 1, 1)
    region4 = region.unsqueeze(1).expand_as(img)
    assert (out[region4] == 0).all()
    assert torch.equal(out[~region4], img[~region4])
    fill = torch.tensor([1.5, -2.0, 3.0])
    out = apply_boxes(img, boxes, apply, fill=fill)
    for ch in range(3):
        assert (out[:, ch][region] == fill[ch]).all()
        assert torch.equal(out[:, ch][~region], img[:, ch][~region])
    copy = img.clone()
    res = apply_boxes(copy, boxes, apply, fill=7.0, inplace=True)
    assert res.data_ptr() == copy.data_ptr() and (copy[region4] == 7.0).all()


def test_random_erasing_inside_probability_and_fill():
    g = _gen(5)
    img = torch.randn(64, 3, H, W, generator=g)
    out, info = random_erasing(img, _gen(6), prob=1.0)
    b = info["boxes"]
    assert info["applied"].all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] <= H).all() and (b[:, 2] >= 0).all() and (b[:, 3] <= W).all()
    sizes = torch.stack([b[:, 1] - b[:, 0], b[:, 3] - b[:, 2]], 1)
    assert torch.equal(sizes, sample_box_sizes(64, H, W, _gen(6)))  # full size: never clipped
    region = _box_mask(b, H, W)
    assert torch.equal(_erased(img, out), region)
    assert (out.permute(1, 0, 2, 3)[:, region] == 0).all()
    out0, info0 = random_erasing(img, _gen(6), prob=0.0)
    assert not info0["applied"].any() and torch.equal(out0, img)
    # Top-left positions cover the valid range (many draws on a small image).
    _, info = random_erasing(torch.zeros(4000, 1, 20, 10), _gen(7), prob=0.5)
    assert info["boxes"][:, 0].min() == 0 and info["boxes"][:, 1].max() == 20
    frac = float(info["applied"].double().mean())
    assert abs(frac - 0.5) < 0.05


def _kp_batch(p: int = 8, k: int = 8, seed: int = 0, channels: int = 3):
    g = _gen(seed)
    pids = torch.arange(p).repeat_interleave(k) * 3 + 100  # non-contiguous labels
    pids = pids[torch.randperm(p * k, generator=g)]
    parts = torch.rand(p * k, 11, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
    valid = torch.ones(p * k, 11, dtype=torch.bool)
    images = torch.randn(p * k, channels, H, W, generator=g)
    return images, pids, parts, valid


def test_keypoint_erasing_identity_consistency_and_centres():
    images, pids, parts, valid = _kp_batch()
    out, info = keypoint_erasing(images, pids, parts, valid, _gen(1), prob=1.0)
    assert set(info) == {"part", "boxes", "applied", "fallback"}
    assert info["part"].shape == (64,) and info["boxes"].shape == (64, 4)
    for pid in pids.unique():
        assert info["part"][pids == pid].unique().numel() == 1
    assert not info["fallback"].any() and info["applied"].all()
    b = info["boxes"]
    centre = parts[torch.arange(64), info["part"]]
    px, py = centre[:, 0].floor(), centre[:, 1].floor()
    assert ((b[:, 0] <= py) & (py < b[:, 1]) & (b[:, 2] <= px) & (px < b[:, 3])).all()
    unclipped = (b[:, 0] > 0) & (b[:, 1] < H) & (b[:, 2] > 0) & (b[:, 3] < W)
    assert unclipped.any()
    cy, cx = (b[:, 0] + b[:, 1]) / 2, (b[:, 2] + b[:, 3]) / 2
    assert ((cy - centre[:, 1])[unclipped].abs() <= 1).all() and ((cx - centre[:, 0])[unclipped].abs() <= 1).all()
    assert torch.equal(_erased(images, out), _box_mask(b, H, W))


def test_keypoint_erasing_parts_uniform_over_valid():
    images, pids, parts, valid = _kp_batch(p=8, k=2)
    images = images[:, :, :32, :16]
    parts = parts * torch.tensor([16 / W, 32 / H])
    valid[:, 4:] = False  # only parts 0..3 valid anywhere
    valid[pids == pids[0], :] = False  # identity of sample 0: none valid -> uniform over all 11
    g = _gen(2)
    counts = torch.zeros(11)
    first = torch.zeros(11)
    for _ in range(200):
        _, info = keypoint_erasing(images, pids, parts, valid, g, prob=0.5)
        others = pids != pids[0]
        counts += torch.bincount(info["part"][others], minlength=11)
        first[info["part"][0]] += 1
        assert info["fallback"][~others].all()
    assert (counts[4:] == 0).all() and (counts[:4] > 0).all()
    shares = counts[:4] / counts.sum()
    assert (shares - 0.25).abs().max() < 0.05
    assert (first > 0).sum() >= 9  # uniform over all 11 for the identity with no valid part


def test_keypoint_erasing_invalid_parts_fall_back():
    images, pids, parts, valid = _kp_batch(p=2, k=4, channels=1)
    valid[:, :] = False
    valid[0, :] = True  # identity of sample 0 shows every part through sample 0 only
    parts[1:] = -5.0  # an invalid point (outside the image) for every other sample
    parts[2, :, :] = torch.tensor([10.0, float("nan")])
    out, info = keypoint_erasing(images, pids, parts, valid, _gen(3), prob=1.0)
    assert not info["fallback"][0] and info["fallback"][1:].all()
    b = info["boxes"]
    assert (b[:, 0] < b[:, 1]).all() and (b[:, 2] < b[:, 3]).all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] <= H).all() and (b[:, 2] >= 0).all() and (b[:, 3] <= W).all()
    assert torch.isfinite(out).all()
    # A valid-flagged centre outside the image falls back too.
    valid[:] = True
    parts[:, :, 0] = W + 3.0
    _, info = keypoint_erasing(images, pids, parts, valid, _gen(3), prob=1.0)
    assert info["fallback"].all()


def test_keypoint_erasing_fallback_centre_not_at_invalid_point():
    images, pids, parts, valid = _kp_batch(p=4, k=4, channels=1)
    parts[:] = torch.tensor([3.0, 5.0])  # the same (invalid) point everywhere
    valid[:] = False
    # Box sizes are at least sqrt(0.02 * H * W) ~ 29 px, so a box centred there would contain (3, 5).
    n_contain = 0
    for seed in range(10):
        _, info = keypoint_erasing(images, pids, parts, valid, _gen(seed), prob=1.0)
        assert info["fallback"].all()
        b = info["boxes"]
        n_contain += int(((b[:, 0] <= 5) & (b[:, 1] > 5) & (b[:, 2] <= 3) & (b[:, 3] > 3)).sum())
    assert n_contain < 0.5 * 10 * 16


def test_keypoint_erasing_probability_and_determinism():
    images, pids, parts, valid = _kp_batch(p=4, k=4)
    out0, info0 = keypoint_erasing(images, pids, parts, valid, _gen(4), prob=0.0)
    assert torch.equal(out0, images) and not info0["applied"].any()
    out1, info1 = keypoint_erasing(images, pids, parts, valid, _gen(4), prob=1.0)
    assert info1["applied"].all() and _erased(images, out1).flatten(1).any(1).all()
    a, ia = keypoint_erasing(images, pids, parts, valid, _gen(9), prob=0.5)
    b, ib = keypoint_erasing(images, pids, parts, valid, _gen(9), prob=0.5)
    assert torch.equal(a, b) and all(torch.equal(ia[k], ib[k]) for k in ia)
    c, ic = keypoint_erasing(images, pids, parts, valid, _gen(10), prob=0.5)
    assert not torch.equal(ia["boxes"], ic["boxes"])
    ra, rb = random_erasing(images, _gen(9)), random_erasing(images, _gen(9))
    assert torch.equal(ra[0], rb[0]) and torch.equal(ra[1]["boxes"], rb[1]["boxes"])
    fill = torch.tensor([0.5, -0.5, 1.0])
    out, info = keypoint_erasing(images, pids, parts, valid, _gen(4), prob=1.0, fill=fill)
    region = _box_mask(info["boxes"], H, W)
    assert (out[:, 1][region] == -0.5).all() and torch.equal(out[:, 1][~region], images[:, 1][~region])
    assert math.isclose(float(info["applied"].double().mean()), 1.0)


def test_a_batch_of_64_at_training_size():
    """Shapes and dtype at the training batch (speed is measured in benchmarks/bench_train.py)."""
    images, pids, parts, valid = _kp_batch()
    out, info = keypoint_erasing(images, pids, parts, valid, _gen(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert all(v.shape[0] == images.shape[0] for v in info.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator():
    images, pids, parts, valid = _kp_batch(p=4, k=4)
    cpu, icpu = keypoint_erasing(images, pids, parts, valid, _gen(5), prob=0.5)
    gpu, igpu = keypoint_erasing(images.cuda(), pids.cuda(), parts.cuda(), valid.cuda(), _gen(5), prob=0.5)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    assert all(torch.equal(igpu[k].cpu(), icpu[k]) for k in icpu)
    r_cpu, _ = random_erasing(images, _gen(5))
    r_gpu, _ = random_erasing(images.cuda(), _gen(5))
    assert torch.equal(r_gpu.cpu(), r_cpu)
