"""Stores and images that used to give a traceback, a wrong diagnosis or silently wrong pixels (issue 25):
records checked when a store opens, split files and file names that are not UTF-8, EXIF orientation."""

import json
import os

import numpy as np
import pytest
import torch
from layouts import make_custom, make_sysu
from PIL import Image

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.images import decode_image, image_size
from kglfr.data.store import Store, prepare_store
from kglfr.errors import DatasetError, StoreError
from kglfr.eval.extract import embed_images
from kglfr.model import AGWNet


@pytest.fixture
def store(tmp_path):
    out = tmp_path / "store"
    prepare_store(load_dataset("sysu", make_sysu(tmp_path / "sysu")), out, height=32, width=16, progress=False)
    return out


def _edit(out, column: str, i: int, value) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    table = manifest["trial_splits"] if column == "split" else manifest["records"]
    key = next(iter(table)) if column == "split" else column
    table[key][i] = value
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("modality", 2, r"records.modality\[3\] is 2 \(must be 0 visible or 1 infrared\)"),
        ("camera", -1, r"records.camera\[3\] is -1"),
        ("split", "val", r"trial_splits.\d+\[3\] is 'val' \(must be one of train, test\)"),
        ("source_hw", [0, 20], r"records.source_hw\[3\] is \[0, 20\]"),
    ],
)
def test_a_manifest_record_out_of_range_is_refused_when_the_store_opens(store, capsys, column, value, message):
    _edit(store, column, 3, value)
    with pytest.raises(StoreError, match=message + ".*re-run 'kglfr prepare --force'"):
        Store.open(store)
    assert main(["keypoints", "--store", str(store), "--backend", "oracle", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json is damaged (" in err[0]


def test_a_split_file_with_a_byte_that_is_not_utf8_is_one_line(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    (root / "exp" / "train_id.txt").write_bytes(b"1,2,\n3\xff\n")
    with pytest.raises(DatasetError, match=r"train_id.txt:2: byte 0xff is not UTF-8 text"):
        load_dataset("sysu", root)


def test_an_image_file_name_that_is_not_utf8_is_prepared(tmp_path):
    root = make_custom(tmp_path / "custom")
    src = root / "visible" / "001" / "1_1_a.jpg"
    odd = os.fsencode(src.parent) + b"/1_\xff_odd.jpg"
    os.rename(os.fsencode(src), odd)
    store, bad = prepare_store(load_dataset("custom", root), tmp_path / "store", height=32, width=16, progress=False)
    assert bad == [] and any("\udcff" in r for r in store.relpaths)
    assert Store.open(store.path).check_sources() is None  # the listing fingerprint and the stat both work


def _tagged_and_rotated(tmp_path):
    """A 40 x 20 (H x W) JPEG stored on its side with EXIF Orientation=6, and the same image upright."""
    rng = np.random.default_rng(0)
    upright = np.kron(rng.integers(0, 256, (10, 5, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    sideways = np.rot90(upright, k=1)  # what the camera wrote: orientation 6 turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged, plain = tmp_path / "tagged.png", tmp_path / "plain.png"
    Image.fromarray(np.ascontiguousarray(sideways)).save(tagged, exif=exif)
    Image.fromarray(upright).save(plain)
    return tagged, plain


def test_exif_orientation_is_applied_by_the_one_decoder(tmp_path):
    tagged, plain = _tagged_and_rotated(tmp_path)
    a, b = decode_image(tagged), decode_image(plain)
    assert a.shape == (40, 20, 3) and image_size(tagged) == (20, 40)
    np.testing.assert_array_equal(a, b)
    model = AGWNet(4, arch="resnet18", pretrained=None).eval()
    torch.manual_seed(0)
    feats = embed_images(model, [tagged, plain], "visible", (32, 16))
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-6)


def test_tiny_images_and_ids_without_images_are_warned(tmp_path, caplog):
    root = make_sysu(tmp_path / "sysu")
    (root / "exp" / "test_id.txt").write_text("5,6,77\n")  # 77 has no folder
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "cam1" / "0001" / "0001.jpg")
    with caplog.at_level("WARNING", logger="kglfr"):
        prepare_store(load_dataset("sysu", root), tmp_path / "store", height=32, width=16, progress=False)
    assert "1 identities listed in the split files have no images (77)" in caplog.text
    assert "1 source images are smaller than 8 pixels on a side (e.g. cam1/0001/0001.jpg, 1 x 1)" in caplog.text


def test_prepare_force_leaves_an_open_store_readable_and_unchanged(tmp_path):
    """A running training's memory map of the pixels survives prepare --force (new files renamed in)."""
    dataset = load_dataset("sysu", make_sysu(tmp_path / "sysu"))
    out = tmp_path / "store"
    prepare_store(dataset, out, height=32, width=16, progress=False)
    reader = Store.open(out)
    before = np.array(reader.read_batch(np.arange(len(reader))))
    prepare_store(dataset, out, height=48, width=24, force=True, progress=False)  # another size: another file
    np.testing.assert_array_equal(reader.read_batch(np.arange(len(reader))), before)
    assert Store.open(out).size == (48, 24)
