import numpy as np
import pytest
import torch
from layouts import occluded_store

from kglfr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    JointParams,
    TestTransform,
    TrainTransform,
    denormalise,
    normalise,
    store_batch_to_tensor,
)
from kglfr.keypoints.backends import build_backend
from kglfr.keypoints.build import build_cache
from kglfr.keypoints.heatmaps import peaks, render_gaussians
from kglfr.keypoints.skeleton import FLIP_KEYPOINTS, PARTS

P = {n: i for i, n in enumerate(PARTS)}


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    store = occluded_store(tmp_path_factory.mktemp("tf"))
    result = build_cache(store, build_backend("oracle", root=store.root), progress=False)
    return store, result.cache


def _reference_crop_flip(images: np.ndarray, params: JointParams, pad: int) -> np.ndarray:
    b, c, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty_like(images)
    for i, ((dy, dx), flip) in enumerate(zip(params.offset.tolist(), params.flip.tolist())):
        crop = padded[i, :, dy : dy + h, dx : dx + w]
        out[i] = crop[..., ::-1] if flip else crop
    return out


def test_pad_crop_flip_matches_a_reference():
    t = TrainTransform(size=(40, 20), pad=10)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 40, 20), generator=g, dtype=torch.uint8)
    params = t.sample(16, g)
    params.offset[0] = torch.tensor([0, 0])
    params.offset[1] = torch.tensor([20, 20])
    params.flip[:2] = torch.tensor([True, False])
    out = t.crop_flip_images(images, params)
    np.testing.assert_array_equal(out.numpy(), _reference_crop_flip(images.numpy(), params, 10))
    assert out.dtype == torch.uint8 and out.is_contiguous()
    nhwc = images.permute(0, 2, 3, 1).contiguous().numpy()  # the store's layout enters as a view
    np.testing.assert_array_equal(t.crop_flip_images(store_batch_to_tensor(nhwc), params).numpy(), out.numpy())


def test_random_draws_are_reproducible_and_in_range():
    t = TrainTransform()
    a = t.sample(256, torch.Generator().manual_seed(5))
    b = t.sample(256, torch.Generator().manual_seed(5))
    assert torch.equal(a.offset, b.offset) and torch.equal(a.flip, b.flip)
    assert a.offset.min() == 0 and a.offset.max() == 20
    assert 0.35 < a.flip.float().mean() < 0.65
    images = torch.randint(0, 256, (4, 3, 288, 144), dtype=torch.uint8)
    r1 = t(images, generator=torch.Generator().manual_seed(1))
    r2 = t(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(r1["images"], r2["images"]) and r1["heatmaps"] is None
    assert r1["images"].shape == (4, 3, 288, 144) and r1["images"].dtype == torch.float32


def _params(b: int, seed: int) -> JointParams:
    g = torch.Generator().manual_seed(seed)
    offset = torch.randint(0, 21, (b, 2), generator=g)
    flip = torch.arange(b) % 2 == 1  # every other sample flipped
    return JointParams(offset, flip)


def test_transformed_heatmaps_equal_heatmaps_of_transformed_keypoints(cached):
    store, cache = cached
    idx = np.arange(len(store))
    rows = cache.read_batch(idx)
    images = store_batch_to_tensor(store.read_batch(idx))
    params = _params(len(idx), 3)
    res = TrainTransform(size=store.size)(images, torch.from_numpy(rows["heatmaps"]),
                                          keypoints=torch.from_numpy(rows["coords"]), params=params)  # fmt: skip
    maps = res["heatmaps"].numpy()
    kp = res["keypoints"].numpy()
    assert maps.shape == rows["heatmaps"].shape
    H, W = store.size
    cell = W / cache.heatmap_size[1]
    visible = kp[..., 2] > 0
    inside = visible & (kp[..., 0] > 0) & (kp[..., 0] < W) & (kp[..., 1] > 0) & (kp[..., 1] < H)
    inside[:, 0] = False  # the head map is the max of five face maps: its peak is any of them
    for i in range(len(idx)):
        pk = peaks(maps[i], (H, W))
        for k in np.flatnonzero(inside[i]):
            assert abs(pk[k, 0] - kp[i, k, 0]) <= cell + 1e-3 and abs(pk[k, 1] - kp[i, k, 1]) <= cell + 1e-3, (i, k)
        assert not maps[i, ~visible[i]].any()  # occluded stays empty

    # the KMLFR view: at the 18 x 9 feature-map size, the transformed cached maps equal what the oracle
    # renders at full resolution (80 x 40) from the transformed keypoints, resized bilinearly
    mask = TrainTransform(size=store.size, heatmap_size=(18, 9))(images, torch.from_numpy(rows["heatmaps"]),
                                                                 params=params)["heatmaps"]  # fmt: skip
    truth = torch.from_numpy(render_gaussians(kp[..., :2], visible, (H, W), (80, 40)))
    truth = torch.nn.functional.interpolate(truth, size=(18, 9), mode="bilinear", align_corners=False).numpy()
    away = inside & (np.abs(kp[..., 0] - W / 2) < W / 2 - 16) & (np.abs(kp[..., 1] - H / 2) < H / 2 - 16)
    err = np.abs(mask.numpy() - truth)[away].reshape(int(away.sum()), -1).max(1)
    assert away.sum() > 100 and np.median(err) < 0.05 and err.max() < 0.15
    # the channel swap matters: without it, flipped samples put left maps on right keypoints
    flipped = params.flip.numpy()
    lr = [1, 3, 5, 7, 9, 11]
    m = mask.numpy()[flipped]
    err_swapped = np.abs(m[:, lr] - truth[flipped][:, lr]).mean()
    err_unswapped = np.abs(m[:, list(FLIP_KEYPOINTS)][:, lr] - truth[flipped][:, lr]).mean()
    assert err_unswapped > 3 * err_swapped


def test_image_dot_lands_on_the_transformed_part_centre():
    b, H, W = 32, 288, 144
    g = torch.Generator().manual_seed(7)
    images = torch.zeros(b, 3, H, W, dtype=torch.uint8)
    parts = torch.rand(b, 11, 2, generator=g) * torch.tensor([W - 40.0, H - 40.0]) + 20
    parts = parts.floor() + 0.5  # pixel centres
    p = P["left_forearm"]
    for i in range(b):
        x, y = parts[i, p].long().tolist()
        images[i, :, y, x] = 255
    valid = torch.ones(b, 11, dtype=torch.bool)
    valid[:, P["right_forearm"]] = False
    t = TrainTransform()
    res = t(images, parts=parts, part_valid=valid, params=_params(b, 11))
    pixels = denormalise(res["images"]).numpy()
    flip = res["params"].flip.numpy()
    for i in range(b):
        where = p if not flip[i] else P["right_forearm"]  # a flip relabels left as right
        ys, xs = np.nonzero(pixels[i, 0] > 128)
        x, y = res["parts"][i, where].tolist()
        if 0 <= x < W and 0 <= y < H:
            assert len(xs) == 1 and (xs[0] + 0.5, ys[0] + 0.5) == pytest.approx((x, y)), i
        assert bool(res["part_valid"][i, where]) and not bool(res["part_valid"][i, FLIP_PARTS_OF(where)])


def FLIP_PARTS_OF(i: int) -> int:  # noqa: N802
    from kglfr.keypoints.skeleton import FLIP_PARTS

    return FLIP_PARTS[i]


def test_resize_moves_points_with_the_image():
    b = 8
    small = torch.zeros(b, 3, 144, 72, dtype=torch.uint8)
    pts = torch.tensor([[30.0, 50.0]]).repeat(b, 11, 1)
    small[:, :, 49:51, 29:31] = 255  # a 2 x 2 dot centred on (30, 50)
    t = TrainTransform(size=(288, 144))
    res = t(small, parts=pts, params=_params(b, 2))
    pixels = denormalise(res["images"]).numpy()[:, 0].astype(float)
    for i in range(b):
        ys, xs = np.nonzero(pixels[i] > 20)
        wgt = pixels[i][ys, xs]
        cx, cy = (wgt * (xs + 0.5)).sum() / wgt.sum(), (wgt * (ys + 0.5)).sum() / wgt.sum()
        assert (cx, cy) == pytest.approx(tuple(res["parts"][i, 0].tolist()), abs=0.6)


def test_heatmaps_can_come_out_at_the_feature_map_size(cached):
    store, cache = cached
    rows = cache.read_batch([0, 1])
    images = store_batch_to_tensor(store.read_batch([0, 1]))
    still = JointParams(torch.tensor([[10, 10], [10, 10]]), torch.tensor([False, False]))  # offset 10 = no shift
    maps = torch.from_numpy(rows["heatmaps"])
    for mode in ("bilinear", "bicubic"):
        t = TrainTransform(size=store.size, heatmap_size=(18, 9), heatmap_mode=mode)
        res = t(images, maps, params=still)
        assert res["heatmaps"].shape == (2, 13, 18, 9)
        direct = torch.nn.functional.interpolate(maps, size=(18, 9), mode=mode, align_corners=False).clamp(0, 1)
        # inside, the same; on the outer ring of cells grid_sample reads zeros beyond the image where
        # interpolate replicates the edge, which matters when a heatmap touches the border
        torch.testing.assert_close(res["heatmaps"][..., 1:-1, 1:-1], direct[..., 1:-1, 1:-1], atol=1e-3, rtol=0)
        torch.testing.assert_close(res["heatmaps"], direct, atol=1e-2, rtol=0)


def test_test_transform_resizes_and_normalises():
    images = torch.zeros(2, 3, 144, 72, dtype=torch.uint8)
    images[1] = 255
    parts = torch.tensor([[[10.0, 20.0]] * 11] * 2)
    maps = torch.rand(2, 13, 32, 16)
    res = TestTransform()(images, maps, parts)
    assert res["images"].shape == (2, 3, 288, 144)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(res["images"][0, :, 5, 5], -mean / std)
    torch.testing.assert_close(res["images"][1, :, 5, 5], (1 - mean) / std)
    assert res["heatmaps"] is maps
    torch.testing.assert_close(res["parts"], parts * 2)
    same = TestTransform()(torch.zeros(1, 3, 288, 144, dtype=torch.uint8))
    assert same["images"].shape == (1, 3, 288, 144)


def test_normalise_round_trip_and_float_input():
    x = torch.randint(0, 256, (2, 3, 8, 4), dtype=torch.uint8)
    assert torch.equal(denormalise(normalise(x)), x)
    f = x.float() / 255
    torch.testing.assert_close(normalise(f), normalise(x))
    assert torch.equal(f, x.float() / 255)  # the caller's tensor is left alone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_result():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 288, 144), generator=g, dtype=torch.uint8)
    maps, parts = torch.rand(8, 13, 32, 16, generator=g), torch.rand(8, 11, 2, generator=g) * 100
    valid = torch.rand(8, 11, generator=g) > 0.5
    t = TrainTransform(heatmap_size=(18, 9))
    params = t.sample(8, torch.Generator().manual_seed(1))
    cpu = t(images, maps, parts, valid, params=params)
    gpu = t(images.cuda(), maps.cuda(), parts.cuda(), valid.cuda(), params=params)
    for key in ("images", "heatmaps", "parts", "part_valid"):
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], atol=1e-4, rtol=1e-4)
