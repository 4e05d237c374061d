import numpy as np
import pytest
from layouts import synthetic_store
from PIL import Image

from kglfr.cli import main
from kglfr.data.records import Modality
from kglfr.viz import figure_to_array
from kglfr.viz.keypoints import draw_keypoint_grid, pick_images


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from kglfr.data.store import Store

    path, _ = synthetic_store(tmp_path_factory.mktemp("viz"))
    return Store.open(path)


def test_pick_images_takes_half_of_each_modality(store):
    idx = pick_images(store, 8, seed=1)
    mods = store.modalities[idx]
    assert len(idx) == 8 and (mods == int(Modality.VISIBLE)).sum() == 4 and (mods == int(Modality.INFRARED)).sum() == 4
    assert np.array_equal(idx, pick_images(store, 8, seed=1))
    assert set(store.splits()[pick_images(store, 6, split="test")]) == {"test"}


def test_grid_draws_points_on_the_images():
    images = np.zeros((2, 64, 32, 3), np.uint8)
    coords = np.zeros((2, 13, 3), np.float32)
    coords[..., 0], coords[..., 1], coords[..., 2] = 16, np.linspace(5, 60, 13), 1
    parts = np.full((2, 11, 2), 16.0, np.float32)
    valid = np.ones((2, 11), bool)
    maps = np.zeros((2, 13, 16, 8), np.float32)
    maps[:, 0, 8, 4] = 1
    plain = figure_to_array(draw_keypoint_grid(images, coords, parts, valid, ncols=2))
    coords[..., 2] = 0
    valid[:] = False
    empty = figure_to_array(draw_keypoint_grid(images, coords, parts, valid, maps, ncols=2))
    assert plain.shape == empty.shape and plain.dtype == np.uint8
    assert (np.abs(plain.astype(int) - empty).sum(-1) > 0).sum() > 100  # the points changed many pixels


def test_viz_keypoints_command_writes_a_png(store, tmp_path, capsys):
    out = tmp_path / "sub" / "kp.png"
    assert main(["viz", "keypoints", "--store", str(store.path), "--n", "6", "--cols", "3", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as im:
        w, h = im.size
    assert w > 300 and h > 300
    aug = tmp_path / "aug.png"
    argv = ["viz", "keypoints", "--store", str(store.path), "--n", "4", "--augment", "--no-heatmaps", "--out", str(aug)]
    assert main(argv) == 0 and aug.stat().st_size > 1000


def test_viz_keypoints_without_cache_says_what_to_run(store, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(store.path, bare, ignore=shutil.ignore_patterns("keypoints"))
    code = main(["viz", "keypoints", "--store", str(bare), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code != 0 and "run 'kglfr keypoints --store" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_viz_keypoints_bad_out_gives_one_line(store, tmp_path, capsys):
    def error(out) -> str:
        code = main(["viz", "keypoints", "--store", str(store.path), "--n", "2", "--out", str(out)])
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1, err
        return err

    assert "unknown picture format '.xyz'; use .png, .jpg, .pdf, .svg" in error(tmp_path / "x.xyz")
    assert "unknown picture format '(no suffix)'" in error(tmp_path / "x")
    (tmp_path / "file").write_text("")
    assert f"{tmp_path / 'file'} is a file, not a folder" in error(tmp_path / "file" / "sub" / "kp.png")
    (tmp_path / "dir.png").mkdir()
    assert "is a folder; give a file name" in error(tmp_path / "dir.png")
    assert not (tmp_path / "x.xyz").exists()
    out = tmp_path / "kp.PDF"  # the suffix in any case
    assert main(["viz", "keypoints", "--store", str(store.path), "--n", "2", "--no-heatmaps", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"%PDF"


def test_viz_keypoints_draws_the_cache_it_is_told(store, tmp_path, capsys):
    """``kglfr viz keypoints --keypoints NAME`` picks one cache of several, as data.keypoints=NAME does."""
    from kglfr.cli import main

    assert main(["viz", "keypoints", "--store", str(store.path), "--keypoints", "oracle", "--n", "2",
                 "--out", str(tmp_path / "kp.png")]) == 0  # fmt: skip
    assert (tmp_path / "kp.png").stat().st_size > 0
    capsys.readouterr()
    rc = main(
        ["viz", "keypoints", "--store", str(store.path), "--keypoints", "hrnet", "--out", str(tmp_path / "x.png")]
    )
    err = capsys.readouterr().err
    assert rc != 0 and "hrnet" in err and "\n" not in err.strip() and not (tmp_path / "x.png").exists()
