"""The hrnet and blazepose pose backends, heatmap decoding and the model-file helpers.

HRNet is tested without the official weights (not downloadable here): architecture figures, strict
loading of state dicts with the official key names, decoding and the flip test. BlazePose tests that
need the model file skip with the reason when it has not been fetched (``kglfr keypoints --fetch-model``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kglfr.errors import KglfrError
from kglfr.keypoints import weights
from kglfr.keypoints.backends import COCO17, BatchInfo, backend_names, build_backend
from kglfr.keypoints.decode import (
    COCO_FLIP_PAIRS,
    argmax_coords,
    decode_heatmaps,
    flip_back,
    heatmap_to_image,
)
from kglfr.keypoints.hrnet_arch import PoseHRNet

# ---------------------------------------------------------------------------------------------------
# HRNet architecture and weights


@pytest.fixture(scope="module")
def w32() -> PoseHRNet:
    torch.manual_seed(0)
    return PoseHRNet("w32").eval()


@pytest.fixture(scope="module")
def w32_file(w32, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hrnet") / "pose_hrnet_w32_256x192.pth"
    torch.save(w32.state_dict(), path)
    return path


def _info(n: int) -> BatchInfo:
    return BatchInfo(relpaths=[f"img{i}.jpg" for i in range(n)], source_hw=np.full((n, 2), 288), root=Path("."))


def test_backends_registered():
    # every module of kglfr.keypoints.backends but base registers one backend, found without a list
    # (tests/data/test_registries.py drops a new module into a copy of the package)
    import pkgutil

    import kglfr.keypoints.backends as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"base"}
    assert backend_names() == sorted(modules) == ["blazepose", "hrnet", "oracle"]
    with pytest.raises(KglfrError, match="unknown pose backend 'nope'; choose one of blazepose, hrnet, oracle"):
        build_backend("nope")


def test_hrnet_w32_matches_official_figures(w32):
    sd = w32.state_dict()
    assert sum(p.numel() for p in w32.parameters()) == 28_536_113
    assert len(sd) == 1754
    # a few official key names
    for key in ("conv1.weight", "layer1.0.downsample.0.weight", "transition1.1.0.0.weight",
                "transition3.3.0.1.running_var", "stage2.0.branches.1.3.bn2.weight",
                "stage3.3.fuse_layers.2.0.1.0.weight", "stage4.2.fuse_layers.0.3.1.num_batches_tracked",
                "final_layer.weight", "final_layer.bias"):  # fmt: skip
        assert key in sd, key
    assert not any(k.startswith("stage4.2.fuse_layers.1") for k in sd)  # last module: one output branch
    assert sd["final_layer.weight"].shape == (17, 32, 1, 1)


def test_hrnet_w48_parameters():
    m = PoseHRNet("w48")
    assert sum(p.numel() for p in m.parameters()) == 63_595_745  # the official 63.6M
    assert len(m.state_dict()) == 1754


def test_hrnet_output_shape(w32):
    with torch.inference_mode():
        assert w32(torch.zeros(1, 3, 320, 160)).shape == (1, 17, 80, 40)
        assert w32(torch.zeros(1, 3, 256, 192)).shape == (1, 17, 64, 48)


def test_hrnet_strict_load_round_trip(w32, w32_file):
    be = build_backend("hrnet", weights=w32_file)
    for a, b in zip(be.model.state_dict().values(), w32.state_dict().values()):
        assert torch.equal(a, b)
    images = np.random.default_rng(0).integers(0, 256, (2, 320, 160, 3), dtype=np.uint8)
    out = be.predict(images, _info(2))
    with torch.inference_mode():
        ref = w32(be.preprocess(images)).numpy()
    np.testing.assert_allclose(out.heatmaps, ref, atol=1e-5)
    assert out.heatmaps.dtype == np.float32 and out.keypoints.shape == (2, 17, 3)
    sha = hashlib.sha256(w32_file.read_bytes()).hexdigest()[:16]
    assert be.identity() == f"hrnet-w32-320x160-flip0-{sha}"
    assert build_backend("hrnet", weights=w32_file, flip=True).identity() != be.identity()


@pytest.mark.parametrize("wrap", ["state_dict", "module", "both"])
def test_hrnet_loads_wrapped_checkpoints(w32, tmp_path, caplog, wrap):
    sd = w32.state_dict()
    if wrap in ("module", "both"):
        sd = {f"module.{k}": v for k, v in sd.items()}
    obj = {"state_dict": sd, "epoch": torch.tensor(210)} if wrap in ("state_dict", "both") else sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    with caplog.at_level(logging.WARNING):
        be = build_backend("hrnet", weights=path)
    assert torch.equal(be.model.final_layer.weight, w32.final_layer.weight)
    assert caplog.records, "key mapping must be reported"


def test_hrnet_loads_legacy_format(w32, tmp_path):
    """The official checkpoints predate torch's zip format."""
    path = tmp_path / "legacy.pth"
    torch.save(w32.state_dict(), path, _use_new_zipfile_serialization=False)
    be = build_backend("hrnet", weights=path)
    assert torch.equal(be.model.conv1.weight, w32.conv1.weight)


def test_hrnet_accepts_checkpoint_without_num_batches_tracked(w32, tmp_path, caplog):
    sd = {k: v for k, v in w32.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(sd) == 1754 - 292
    path = tmp_path / "old.pth"
    torch.save(sd, path)
    with caplog.at_level(logging.WARNING):
        build_backend("hrnet", weights=path)
    assert any("num_batches_tracked" in r.getMessage() for r in caplog.records)


def test_hrnet_wrong_architecture_names_keys(w32, tmp_path):
    sd = {k: v for k, v in w32.state_dict().items() if not k.startswith("stage4.2.")}
    sd["head.fc.weight"] = torch.zeros(3)
    path = tmp_path / "other.pth"
    torch.save(sd, path)
    with pytest.raises(KglfrError) as e:
        build_backend("hrnet", weights=path)
    msg = str(e.value)
    assert str(path) in msg and "1 unexpected" in msg and "head.fc.weight" in msg
    assert "stage4.2.branches.0.0.conv1.weight" in msg
    n_missing = sum(k.startswith("stage4.2.") for k in w32.state_dict())
    assert f"{n_missing} missing" in msg


def test_hrnet_w48_file_is_detected_and_a_wrong_arch_says_so(tmp_path):
    """The width is read from the file (kglfr keypoints has no arch option); an explicit wrong one is refused."""
    path = tmp_path / "w48.pth"
    torch.save(PoseHRNet("w48").state_dict(), path)
    be = build_backend("hrnet", weights=path)
    assert be.arch == "w48" and be.identity().startswith("hrnet-w48-320x160-flip0-")
    with pytest.raises(KglfrError, match=r"holds HRNet-W48 \(leave arch out: it is read from the file\)"):
        build_backend("hrnet", weights=path, arch="w32")
    assert build_backend("hrnet", weights=path, arch="w48").identity() == be.identity()


def test_hrnet_missing_weights(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pth"
    with pytest.raises(KglfrError, match="nope.pth") as e:
        build_backend("hrnet", weights=missing)
    assert "pose_hrnet_w32_256x192.pth" in str(e.value) and "model zoo" in str(e.value)
    monkeypatch.setenv("KGLFR_HOME", str(tmp_path))
    with pytest.raises(KglfrError, match="pose_hrnet_w32_256x192.pth"):
        build_backend("hrnet")


def test_hrnet_default_weights_location(w32_file, tmp_path, monkeypatch):
    (tmp_path / w32_file.name).write_bytes(w32_file.read_bytes())
    monkeypatch.setenv("KGLFR_HOME", str(tmp_path))
    assert build_backend("hrnet").weights_path == tmp_path / w32_file.name


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.target),))


def test_hrnet_never_runs_pickled_code(tmp_path):
    _Evil.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Evil()}, path)
    with pytest.raises(KglfrError, match="cannot read pose weights"):
        build_backend("hrnet", weights=path)
    assert not (tmp_path / "pwned").exists()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(KglfrError, match="cannot read pose weights"):
        build_backend("hrnet", weights=garbage)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(KglfrError, match="does not hold a state dict"):
        build_backend("hrnet", weights=tmp_path / "list.pth")


def test_hrnet_options_run():
    images = np.random.default_rng(3).integers(0, 256, (3, 288, 144, 3), dtype=np.uint8)
    be = build_backend("hrnet", random_init=True, refine="dark", batch_size=2)
    out = be.predict(images, _info(3))
    assert out.heatmaps.shape == (3, 17, 80, 40) and out.keypoints.shape == (3, 17, 3)
    assert (out.keypoints[..., 0] <= 144).all() and (out.keypoints[..., 1] <= 288).all()
    assert "-dark-" in be.identity() and "random0" in be.identity()
    big = build_backend("hrnet", random_init=True, input_size=(384, 288))
    assert big.predict(images[:1], _info(1)).heatmaps.shape == (1, 17, 96, 72)
    if not torch.cuda.is_available():
        with pytest.raises(KglfrError, match="CUDA"):
            build_backend("hrnet", random_init=True, device="cuda")


def test_hrnet_bad_options():
    with pytest.raises(KglfrError, match="arch"):
        build_backend("hrnet", random_init=True, arch="w64")
    with pytest.raises(KglfrError, match="multiples of 32"):
        build_backend("hrnet", random_init=True, input_size=(300, 160))
    with pytest.raises(KglfrError, match="refinement"):
        build_backend("hrnet", random_init=True, refine="magic")


# ---------------------------------------------------------------------------------------------------
# Decoding


def _gaussian(h: int, w: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_decode_sub_pixel_peak():
    hm = _gaussian(80, 40, 12.3, 20.7)[None, None]  # index coordinates (x, y)
    coords, maxvals = decode_heatmaps(hm, "none")
    np.testing.assert_allclose(coords[0, 0], [12, 21])
    coords, _ = decode_heatmaps(hm, "quarter")  # a quarter cell towards the higher neighbour
    np.testing.assert_allclose(coords[0, 0], [12.25, 20.75])
    coords, _ = decode_heatmaps(hm, "dark", dark_kernel=0)  # exact on a Gaussian
    np.testing.assert_allclose(coords[0, 0], [12.3, 20.7], atol=1e-3)
    coords, _ = decode_heatmaps(hm, "dark")  # blurred first: still a Gaussian about the same centre
    np.testing.assert_allclose(coords[0, 0], [12.3, 20.7], atol=0.02)
    assert 0.9 < maxvals[0, 0] <= 1.0


def test_decode_edges_and_empty_maps():
    hm = np.zeros((1, 3, 8, 6), np.float32)
    hm[0, 0, 0, 0] = 1.0  # a corner: no neighbours on one side, no shift
    hm[0, 1] = -1.0  # nothing found: (0, 0), value <= 0
    hm[0, 2, 4, 3], hm[0, 2, 4, 4] = 1.0, 0.5
    coords, maxvals = decode_heatmaps(hm, "quarter")
    np.testing.assert_allclose(coords[0], [[0, 0], [0, 0], [3.25, 4]])
    assert maxvals[0, 1] == -1.0


def test_quarter_offset_as_official_get_final_preds():
    # official HRNet moves a peak only when 1 < px < w - 1 and 1 < py < h - 1
    hm = np.zeros((1, 4, 8, 8), np.float32)
    hm[0, 0, 4, 1], hm[0, 0, 4, 2] = 1.0, 0.5  # x = 1, higher right neighbour: x stays 1.0
    hm[0, 1, 4, 5], hm[0, 1, 4, 6], hm[0, 1, 4, 4] = 1.0, 0.5, 0.2  # x = 5, higher right: 5.25
    hm[0, 2, 1, 4], hm[0, 2, 2, 4], hm[0, 2, 1, 5] = 1.0, 0.5, 0.5  # y = 1: neither axis moves
    hm[0, 3, 5, 2], hm[0, 3, 5, 1], hm[0, 3, 4, 2] = 1.0, 0.5, 0.5  # x = 2: moves left, y up
    coords, _ = decode_heatmaps(hm, "quarter")
    np.testing.assert_allclose(coords[0], [[1.0, 4.0], [5.25, 4.0], [4.0, 1.0], [1.75, 4.75]])


def test_heatmap_to_image_mapping():
    c = np.array([[0.0, 0.0], [39.0, 79.0]], np.float32)
    # same size input and image: index j -> pixel 4 j, continuous 4 j + 0.5
    np.testing.assert_allclose(heatmap_to_image(c, (80, 40), (320, 160), (320, 160)), [[0.5, 0.5], [156.5, 316.5]])
    # a 288 x 144 image resized (half-pixel centres) to 320 x 160: scale by 0.9
    np.testing.assert_allclose(
        heatmap_to_image(c, (80, 40), (320, 160), (288, 144)), [[0.45, 0.45], [140.85, 284.85]], rtol=1e-6
    )


def test_flip_pairs_from_names():
    assert COCO_FLIP_PAIRS == ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
    for a, b in COCO_FLIP_PAIRS:
        assert COCO17[a].replace("left", "right") == COCO17[b]


def _mirror_swap(maps: np.ndarray) -> np.ndarray:
    """Written independently of decode.py: the maps of a mirrored image, from the names."""
    out = maps[..., ::-1].copy()
    for i, name in enumerate(COCO17):
        other = name.replace("left_", "right_") if "left_" in name else name.replace("right_", "left_")
        out[..., i, :, :] = maps[..., COCO17.index(other), :, ::-1]
    return out


def test_flip_back_inverts_mirroring():
    maps = np.random.default_rng(1).random((2, 17, 8, 6)).astype(np.float32)
    np.testing.assert_array_equal(flip_back(_mirror_swap(maps), shift=False), maps)
    shifted = flip_back(_mirror_swap(maps), shift=True)
    np.testing.assert_array_equal(shifted[..., 1:], maps[..., :-1])
    np.testing.assert_array_equal(shifted[..., 0], maps[..., 0])


def test_hrnet_flip_test_is_mirror_symmetric():
    """With the flip test (and no shift), predictions on a mirrored image are the mirrored
    predictions with left and right exchanged, whatever the network: F(I') = S(F(I))."""
    be = build_backend("hrnet", random_init=True, flip=True, flip_shift=False)
    img = np.random.default_rng(2).integers(0, 256, (1, 320, 160, 3), dtype=np.uint8)
    both = be.predict(np.concatenate([img, img[:, :, ::-1]]), _info(2)).heatmaps
    np.testing.assert_allclose(_mirror_swap(both[1]), both[0], atol=1e-4)
    plain = build_backend("hrnet", random_init=True).predict(img, _info(1)).heatmaps
    assert not np.allclose(plain, both[:1], atol=1e-3)  # the flip test did something


class _PeakNet(torch.nn.Module):
    """Stands in for HRNet: one Gaussian per joint at known heatmap index coordinates."""

    def __init__(self, points):
        super().__init__()
        self.maps = torch.from_numpy(np.stack([_gaussian(80, 40, x, y) for x, y in points]))

    def forward(self, x):
        assert x.shape[1:] == (3, 320, 160)
        return self.maps[None].expand(len(x), -1, -1, -1)


def test_hrnet_keypoints_in_store_pixels():
    pts = [(5 + 2 * j, 3 + 4.4 * j) for j in range(17)]
    be = build_backend("hrnet", random_init=True)
    be.model = _PeakNet(pts)
    out = be.predict(np.zeros((3, 288, 144, 3), np.uint8), _info(3))
    assert out.heatmaps.shape == (3, 17, 80, 40)
    expect_idx, _ = decode_heatmaps(out.heatmaps[:1], "quarter")
    # the peak's index coordinates (quarter-shifted) -> input pixels 4 j + 0.5 -> store pixels x 0.9
    np.testing.assert_allclose(out.keypoints[0, :, :2], (expect_idx[0] * 4 + 0.5) * 0.9, atol=1e-4)
    np.testing.assert_allclose(out.keypoints[0, :, :2], (np.array(pts) * 4 + 0.5) * 0.9, atol=0.25 * 4 * 0.9)
    np.testing.assert_allclose(out.keypoints[:, :, 2], 1.0, atol=0.02)


def test_argmax_coords_batched():
    hm = np.zeros((2, 17, 10, 7), np.float32)
    hm[1, 5, 6, 2] = 3.0
    coords, vals = argmax_coords(hm)
    assert coords.shape == (2, 17, 2) and tuple(coords[1, 5]) == (2.0, 6.0) and vals[1, 5] == 3.0


# ---------------------------------------------------------------------------------------------------
# BlazePose model file helpers (no model needed)


def test_blazepose_model_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("KGLFR_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "_installed_mediapipe_model", lambda: None)
    with pytest.raises(KglfrError, match=r"blazepose model not found; run `kglfr keypoints --fetch-model`"):
        weights.blazepose_model_path()
    with pytest.raises(KglfrError, match="missing.tflite"):
        weights.blazepose_model_path(tmp_path / "missing.tflite")
    fake = tmp_path / weights.BLAZEPOSE_FILE
    fake.write_bytes(b"x")
    assert weights.blazepose_model_path() == fake


def test_blazepose_needs_the_pose_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(KglfrError, match=r"pip install 'kglfr\[pose\]'"):
        build_backend("blazepose")


def test_extract_rejects_other_files(tmp_path):
    wheel = tmp_path / "mediapipe-0.10.21-fake.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(weights.BLAZEPOSE_MEMBER, b"not the model")
    with pytest.raises(KglfrError, match="not the expected file"):
        weights.extract_blazepose_model(wheel, tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as z:
        z.writestr("x.txt", b"")
    with pytest.raises(KglfrError, match="not a mediapipe"):
        weights.extract_blazepose_model(tmp_path / "empty.whl", tmp_path / "out")
    assert not (tmp_path / "out" / weights.BLAZEPOSE_FILE).exists()


def test_fetch_reports_pip_failure(tmp_path):
    with pytest.raises(KglfrError, match="pip download mediapipe==0.10.21 failed"):
        weights.fetch_blazepose_model(tmp_path, python="/bin/false")


# ---------------------------------------------------------------------------------------------------
# BlazePose with the model


def _find_model() -> Path | None:
    try:
        return weights.blazepose_model_path()
    except KglfrError:
        return None


MODEL = _find_model()
HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
needs_model = pytest.mark.skipif(
    MODEL is None or not HAVE_LITERT,
    reason="blazepose model or ai-edge-litert missing: "
    "pip install 'kglfr[pose]' and run `kglfr keypoints --fetch-model`",
)


@needs_model
def test_fetch_keeps_an_intact_file(tmp_path):
    (tmp_path / weights.BLAZEPOSE_FILE).write_bytes(MODEL.read_bytes())
    assert weights.fetch_blazepose_model(tmp_path, python="/bin/false") == tmp_path / weights.BLAZEPOSE_FILE


@needs_model
def test_extract_from_a_wheel(tmp_path):
    wheel = tmp_path / "mediapipe-0.10.21-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(weights.BLAZEPOSE_MEMBER, MODEL.read_bytes())
    out = weights.extract_blazepose_model(wheel, tmp_path / "home")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == weights.BLAZEPOSE_SHA256


@needs_model
def test_blazepose_rejects_a_non_model(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(KglfrError, match="bad.tflite"):
        build_backend("blazepose", weights=bad)


@pytest.fixture(scope="module")
def blazepose():
    return build_backend("blazepose", threads=2)


@needs_model
def test_blazepose_output_contract(blazepose):
    images = np.random.default_rng(0).integers(0, 256, (2, 288, 144, 3), dtype=np.uint8)
    out = blazepose.predict(images, _info(2))
    assert out.heatmaps.shape == (2, 17, 80, 40) and out.heatmaps.dtype == np.float32
    assert out.keypoints.shape == (2, 17, 3) and out.keypoints.dtype == np.float32
    kp = out.keypoints
    assert (kp[..., 0] >= 0).all() and (kp[..., 0] <= 144).all() and (kp[..., 1] >= 0).all()
    assert (kp[..., 1] <= 288).all() and (kp[..., 2] >= 0).all() and (kp[..., 2] <= 1).all()
    sha = hashlib.sha256(MODEL.read_bytes()).hexdigest()[:16]
    assert blazepose.identity().startswith("blazepose-full-") and blazepose.identity().endswith(sha)
    model_maps = build_backend("blazepose", heatmaps="model", threads=2)
    assert model_maps.identity() != blazepose.identity()
    maps = model_maps.predict(images[:1], _info(1)).heatmaps
    assert maps.shape == (1, 17, 80, 40) and maps.min() >= 0 and maps.max() <= 1


def _synthetic(tmp_path: Path):
    from kglfr.data import synth
    from kglfr.data.store import decode_image

    root = tmp_path / "synth"
    synth.synthesize(root, layout="sysu", ids=4, images_per_camera=2, seed=0)
    truth = synth.read_keypoints_sidecar(root)
    rels = sorted(truth)
    images = np.stack([decode_image(root / r) for r in rels])
    infrared = np.array([r.split("/")[0] in ("cam3", "cam6") for r in rels])  # SYSU's infrared cameras
    return rels, images, np.stack([truth[r] for r in rels]), infrared


def _errors(kp: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.hypot(kp[..., 0] - gt[..., 0], kp[..., 1] - gt[..., 1])


@needs_model
def test_blazepose_finds_synthetic_people(blazepose, tmp_path):
    """On a handful of synthetic SYSU-like images (46: 32 visible, 14 infrared) BlazePose finds most
    visible keypoints confidently and puts them near the truth. Measured (seed 0, visible / infrared):
    97 % / 96 % of the visible keypoints at confidence >= 0.3; their mean error 6.9 % / 6.6 % of the
    image height, 2.2 % / 3.1 % when a left/right mirrored labelling is forgiven per image (people seen
    from behind: BlazePose often assumes a front view and swaps left and right). The average pose of
    these very images as a baseline: 7.6 % / 7.8 %."""
    rels, images, gt, infrared = _synthetic(tmp_path)
    out = blazepose.predict(images, _info(len(rels)))
    kp, H = out.keypoints, images.shape[1]
    visible, confident = gt[..., 2] > 0, kp[..., 2] >= 0.3
    err = _errors(kp, gt) / H
    swap = np.arange(17)
    for a, b in COCO_FLIP_PAIRS:
        swap[a], swap[b] = b, a
    err_mirrored = _errors(kp[:, swap], gt) / H
    mean_pose = np.nanmean(np.where(visible[..., None], gt[..., :2], np.nan), 0)
    baseline = _errors(mean_pose[None], gt) / H
    for modality in (False, True):
        m = infrared == modality
        ok = visible[m] & confident[m]
        recall = ok.sum() / visible[m].sum()
        mean_err = err[m][ok].mean()
        per_image = [min(e[o].mean(), f[o].mean()) for e, f, o in zip(err[m], err_mirrored[m], ok) if o.any()]
        assert recall > 0.85, (modality, recall)
        assert mean_err < 0.085, (modality, mean_err)
        assert np.mean(per_image) < 0.045, (modality, np.mean(per_image))
        assert np.mean(per_image) < 0.6 * baseline[m][visible[m]].mean(), modality
    # heatmaps peak where the keypoints are
    from kglfr.keypoints.heatmaps import peaks

    pk = peaks(out.heatmaps, images.shape[1:3])
    strong = kp[..., 2] > 0.5
    assert np.abs(pk[..., :2] - kp[..., :2])[strong].max() < 4.0  # within a cell (3.6 px)
    ratio = pk[..., 2][strong] / kp[..., 2][strong]  # peak = confidence, sampled at cell centres: up to
    assert ratio.max() <= 1 + 1e-5 and ratio.min() > 0.93  # half a cell (sigma 2 cells) off in x and y


@needs_model
def test_blazepose_gates_empty_images(blazepose):
    """No person, no keypoints: the face landmarks of an empty grey image have visibilities > 0.9, the
    person score gate brings them down."""
    images = np.stack([np.full((288, 144, 3), 128, np.uint8), np.zeros((288, 144, 3), np.uint8)])
    kp = blazepose.predict(images, _info(2)).keypoints
    assert kp[..., 2].max() < 0.3
    ungated = build_backend("blazepose", person_gate=0.0).predict(images[:1], _info(1)).keypoints
    assert ungated[0, :5, 2].min() > 0.5


@needs_model
def test_blazepose_geometry_round_trip(blazepose):
    """The padded square input and the mapping back agree: a bright dot in the crop lands where the
    mapping says, for a tall crop and a wide one."""
    for H, W in ((288, 144), (100, 300)):
        img = np.zeros((H, W, 3), np.uint8)
        img[H // 3, W // 5] = 255
        x = blazepose.model_input(img)
        k, ox, oy = blazepose._geometry(H, W)
        r, c = np.unravel_index(x[..., 0].argmax(), x.shape[:2])
        assert abs((c + 0.5) - (W // 5 + 0.5 + ox) * k) < 1.0 and abs((r + 0.5) - (H // 3 + 0.5 + oy) * k) < 1.0
