"""Decoding of 8-bit and high bit-depth images (kglfr.data.images) and its use by ``prepare``."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from layouts import make_custom
from PIL import Image

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.images import decode_image
from kglfr.data.store import Store, prepare_store
from kglfr.errors import KglfrError


def _thermal(seed: int, lo: int = 20000, hi: int = 30000, hw=(40, 20)) -> np.ndarray:
    """A 16-bit greyscale frame whose values (lo..hi) all lie above 255, as thermal cameras write them."""
    values = np.random.default_rng(seed).integers(lo, hi + 1, size=hw).astype(np.uint16)
    values.flat[0], values.flat[1] = lo, hi  # the extremes are present
    return values


def test_16bit_png_from_pil_is_scaled_min_max_not_clipped_white(tmp_path):
    values = _thermal(0)
    Image.fromarray(values).save(tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as im:
        assert im.mode.startswith("I")  # PIL reads it as 16/32-bit integers
    image = decode_image(tmp_path / "t.png")
    assert image.shape == (40, 20, 3) and image.dtype == np.uint8
    expected = np.rint((values.astype(np.float64) - 20000) / 10000 * 255).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 0], expected)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert image.min() == 0 and image.max() == 255 and len(np.unique(image)) > 100


def test_16bit_png_from_cv2_with_a_fixed_range(tmp_path):
    values = _thermal(1)
    assert cv2.imwrite(str(tmp_path / "t.png"), values)
    image = decode_image(tmp_path / "t.png", value_range=(10000, 40000))
    expected = np.rint((values.astype(np.float64) - 10000) / 30000 * 255).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 2], expected)
    clipped = decode_image(tmp_path / "t.png", value_range=(25000, 26000))
    assert clipped.min() == 0 and clipped.max() == 255  # values outside the range are clipped


def test_float_tiff_and_constant_image(tmp_path):
    values = np.linspace(-1.5, 2.5, 800, dtype=np.float32).reshape(40, 20)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tiff")
    image = decode_image(tmp_path / "f.tiff")
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    Image.fromarray(np.full((8, 4), 30000, np.uint16)).save(tmp_path / "c.png")
    assert (decode_image(tmp_path / "c.png") == 0).all()


def test_8bit_images_are_read_as_pil_converts_them(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 15, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (30, 15), dtype=np.uint8)).save(tmp_path / "grey.png")
    for name in ("rgb.png", "grey.png"):
        with Image.open(tmp_path / name) as im:
            want = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(decode_image(tmp_path / name), want)
        np.testing.assert_array_equal(decode_image(tmp_path / name, value_range=(0, 1)), want)  # 8-bit: unscaled


def _thermal_custom(root):
    make_custom(root, ids=range(1, 5))
    for i, path in enumerate(sorted((root / "infrared").rglob("*.jpg"))):
        path.unlink()
        Image.fromarray(_thermal(i)).save(path.with_suffix(".png"))
    return root


def test_prepare_reads_16bit_infrared_images(tmp_path):
    dataset = load_dataset("custom", _thermal_custom(tmp_path / "data"))
    store, _ = prepare_store(dataset, tmp_path / "store", height=40, width=20, progress=False)
    ir = [i for i in range(len(store)) if store.relpaths[i].startswith("infrared/")]
    pixels = store.read_batch(ir)
    assert ir and pixels.min() == 0 and pixels.max() == 255 and (pixels < 255).mean() > 0.9
    assert store.value_range is None


def test_cli_prepare_bit_depth_range_rebuilds_and_is_recorded(tmp_path, capsys):
    root = _thermal_custom(tmp_path / "data")
    args = ["prepare", "--dataset", "custom", "--root", str(root), "--out", str(tmp_path / "s"),
            "--height", "40", "--width", "20"]  # fmt: skip
    assert main(args) == 0
    minmax = Store.open(tmp_path / "s").images.copy()
    assert main([*args, "--bit-depth-range", "0", "65535"]) == 0  # another range: the pixels change
    store = Store.open(tmp_path / "s")
    assert store.value_range == (0.0, 65535.0)
    ir = [i for i, r in enumerate(store.relpaths) if r.startswith("infrared/")]
    assert not np.array_equal(store.images[ir], minmax[ir])
    assert store.images[ir].min() == 78 and store.images[ir].max() == 117  # 20000..30000 of 65535
    capsys.readouterr()
    assert main([*args, "--bit-depth-range", "5", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bit-depth-range must be two finite numbers with lo < hi" in err[0]


def test_value_range_is_checked():
    from kglfr.data.images import check_value_range

    with pytest.raises(KglfrError, match="value_range must be two numbers"):
        check_value_range(("a", 1))
    assert check_value_range([1, 2]) == (1.0, 2.0)


def test_a_store_decoded_before_16bit_scaling_is_rebuilt_once(tmp_path, caplog):
    dataset = load_dataset("custom", _thermal_custom(tmp_path / "data"))
    store, _ = prepare_store(dataset, tmp_path / "store", height=40, width=20, progress=False)
    manifest_path = store.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    old = manifest["fingerprint"].split(":decoder")[0]  # the fingerprint an older kglfr wrote
    manifest_path.write_text(json.dumps({**manifest, "fingerprint": old}))
    (store.path / "images.u8").write_bytes(b"\xff" * (store.path / "images.u8").stat().st_size)  # all white
    rebuilt, _ = prepare_store(dataset, tmp_path / "store", height=40, width=20, progress=False)
    assert rebuilt.images.min() == 0 and rebuilt.manifest["fingerprint"] != old
    with caplog.at_level(logging.INFO, logger="kglfr.data.store"):
        prepare_store(dataset, tmp_path / "store", height=40, width=20, progress=False)
    assert "is up to date" in caplog.text
