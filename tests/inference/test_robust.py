"""Issue 15 in extract, search, export and viz gradcam: outputs checked before the work, a validated gallery
cache, warnings on degenerate queries and blank grids, an atomic export; the shared layout parser."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from kglfr.api import ReIDModel
from kglfr.cli import main
from kglfr.inference.search import cache_path, gallery_features, search
from kglfr.model import AGWNet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = AGWNet(4, arch="resnet18", non_local=False).eval()
    return ReIDModel(net, {"input_size": [64, 32]})


def write_folder(root, n: int = 6, size=(40, 20)):
    rng = np.random.default_rng(0)
    for i in range(n):
        f = root / f"{i // 2 + 1:04d}" / f"c{3 + i % 2}_{i:04d}.jpg"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(f)
    return root


def one_line_error(capsys, argv, command):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"kglfr {command}: error: "), err
    return err[0]


@pytest.mark.parametrize("problem", ["short", "nan", "narrow"])
def test_a_bad_gallery_cache_is_rebuilt(model, tmp_path, caplog, problem):
    gallery = write_folder(tmp_path / "g")
    first = gallery_features(model, gallery, "visible")
    assert not first[-1]
    path = cache_path(gallery, model.sha256)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if problem == "short":  # 2 of 6 features, the key still right
        arrays = {k: (v if k == "key" else v[:2]) for k, v in arrays.items()}
    elif problem == "nan":
        arrays["feats"] = arrays["feats"].copy()
        arrays["feats"][1] = np.nan
    else:
        arrays["feats"] = arrays["feats"][:, :7]
    np.savez(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="kglfr.inference.search"):
        feats, *_, reused = gallery_features(model, gallery, "visible")
    assert not reused and "rebuilding" in caplog.text
    assert np.array_equal(feats, first[0]) and np.isfinite(feats).all()
    assert gallery_features(model, gallery, "visible")[-1]  # the rebuilt cache is used


def test_search_as_a_function_and_degenerate_queries_are_warned(model, tmp_path):
    gallery = write_folder(tmp_path / "g")
    queries = tmp_path / "q"
    (queries / "0001").mkdir(parents=True)
    Image.new("RGB", (1, 1)).save(queries / "0001" / "3_tiny.jpg")
    Image.new("RGB", (10000, 10)).save(queries / "0001" / "3_strip.jpg")
    Image.new("RGB", (30, 60)).save(queries / "0001" / "3_fine.jpg")
    res = search(model, queries, "infrared", gallery, top=3)
    again = model.search(queries, "infrared", gallery, top=3)  # the API's spelling of the same search
    assert np.array_equal(again.index, res.index) and "reused" in again.gallery_source
    assert res.index.shape == (3, 3) and res.method == "exact" and res.gallery_root == gallery
    degenerate = [w for w in res.warnings if "pixels" in w]
    assert len(degenerate) == 2 and "1 x 1" in " ".join(degenerate) and "10000 x 10" in " ".join(degenerate)
    assert list(res.query_pids) == [1, 1, 1] and res.correct.shape == (3, 3)
    grid = res.draw(tmp_path / "grid.png", rows=2)
    assert grid.stat().st_size > 1000


def test_outputs_are_checked_before_the_work(tmp_path, capsys):
    missing = str(tmp_path / "no-such-checkpoint.pt")  # never reached: the output is refused first
    argv = ["search", "--checkpoint", missing, "--query", str(tmp_path), "--query-modality", "infrared",
            "--gallery", str(tmp_path), "--out", str(tmp_path / "x.xyz")]  # fmt: skip
    err = one_line_error(capsys, argv, "search")
    assert "--out" in err and "unknown picture format '.xyz'" in err and ".png" in err
    err = one_line_error(capsys, ["viz", "gradcam", "--checkpoint", missing, "--images", "a.jpg", "--modality",
                                  "visible", "--out", str(tmp_path / "x.xyz")], "viz")  # fmt: skip
    assert "unknown picture format '.xyz'" in err
    err = one_line_error(capsys, ["export", "--checkpoint", missing, "--out", str(tmp_path / "m.onnx"),
                                  "--opset", "5"], "export")  # fmt: skip
    assert "--opset 5" in err and "7 to" in err
    image = tmp_path / "one.jpg"
    Image.new("RGB", (20, 40)).save(image)
    err = one_line_error(capsys, ["extract", "--checkpoint", missing, "--images", str(image), "--modality", "visible",
                                  "--out", str(tmp_path / "f.npz")], "extract")  # fmt: skip
    assert "is a file, not a folder" in err


def test_export_is_atomic_on_a_full_disk(model, tmp_path):
    """A file-size limit makes the write fail as a full disk does: one line naming the file, and the
    valid .onnx already there is kept, with no temporary file left."""
    pytest.importorskip("onnx")
    ckpt = tmp_path / "ckpt.pt"
    from kglfr.train.checkpoint import save_checkpoint

    net = model.model
    save_checkpoint(ckpt, {"model": net.state_dict(), "model_config": net.config(), "input_size": [64, 32],
                           "config": {}, "num_classes": 4})  # fmt: skip
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--modality", "visible"]) == 0
    before = out.read_bytes()
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
        "from kglfr.cli import main; "
        f"sys.exit(main(['export', '--checkpoint', {str(ckpt)!r}, '--out', {str(out)!r}, '--modality', 'infrared']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    err = [line for line in proc.stderr.strip().splitlines() if " INFO " not in line]  # load_model's log line
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("kglfr export: error: "), proc.stderr
    assert str(out) in err[0] and "disk space" in err[0]
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "m.onnx"]


def test_one_custom_layout_parser(tmp_path):
    from kglfr.api import parse_layout
    from kglfr.data.datasets import load_dataset

    for name, cam in (("3_0001.jpg", 3), ("c3_0001.jpg", 3), ("cam3_0001.jpg", 3), ("CAM6_x.png", 6)):
        assert parse_layout(f"0007/{name}") == (7, cam)
    assert parse_layout("x/photo.jpg") == (-1, 0)
    root = tmp_path / "custom"
    for mod, cams in (("visible", (1, 2)), ("infrared", (3, 4))):
        for pid in (1, 2, 3, 4):
            for cam in cams:
                f = root / mod / f"{pid:04d}" / f"cam{cam}_0001.jpg"
                f.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20, 40)).save(f)
    ds = load_dataset("custom", root)  # cam3_x.jpg was refused by the dataset reader, accepted by extract
    assert sorted({r.camera for r in ds.records}) == [1, 2, 3, 4]
