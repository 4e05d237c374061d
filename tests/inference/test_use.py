"""Using a trained model: kglfr.load / embed, extract, export (ONNX), search, Grad-CAM, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from layouts import TINY_TRAIN, synthetic_store

from kglfr.cli import main
from kglfr.train import config as C
from kglfr.train.trainer import train

VISIBLE_CAMS, INFRARED_CAMS = (1, 2, 4, 5), (3, 6)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(checkpoint, store, synthetic dataset root): a resnet18 trained for one step at 64x32."""
    root = tmp_path_factory.mktemp("use")
    store, synth = synthetic_store(root)
    cfg = C.load_config("sysu/baseline", [f"data.store={store}", *TINY_TRAIN, "model.non_local=false",
                                          "train.epochs=1", "train.iters_per_epoch=1"])  # fmt: skip
    out = root / "run"
    train(cfg, out, progress=False)
    return out / "checkpoint.pt", store, synth


@pytest.fixture(scope="module")
def folders(run, tmp_path_factory):
    """Custom-layout folders of the synthetic test identities: vis/<pid>/<cam>_<n>.jpg and ir/..."""
    _, _, synth = run
    root = tmp_path_factory.mktemp("folders")
    test_ids = {int(x) for x in (synth / "exp" / "test_id.txt").read_text().replace(",", " ").split()}
    for name, cams in (("vis", VISIBLE_CAMS), ("ir", INFRARED_CAMS)):
        for cam in cams:
            for f in sorted((synth / f"cam{cam}").glob("*/*.jpg")):
                if int(f.parent.name) in test_ids:
                    dst = root / name / f.parent.name / f"{cam}_{f.name}"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(f, dst)
    return root / "vis", root / "ir"


def model_of(run):
    import kglfr

    return kglfr.load(run[0])


def error_line(capsys, argv, command):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar
    assert rc == 2, err
    assert err.startswith(f"kglfr {command}: error: ") and "\n" not in err, err
    return err


# 1. the Python API


def test_import_kglfr_stays_light():
    code = "import sys, kglfr; assert callable(kglfr.load); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_embed_arrays_paths_and_tensors_agree(run, folders):
    m = model_of(run)
    assert m.input_size == (64, 32) and m.feature_dim == 512 and not m.model.training
    files = sorted(folders[1].rglob("*.jpg"))[:3]
    from kglfr.api import read_image

    arrays = [read_image(f) for f in files]
    a = m.embed(files, "infrared")
    b = m.embed(arrays, 1)
    c = m.embed(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), "ir")
    assert a.shape == (3, 512) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-5)
    # a bigger image is resized to the input size; the modality picks the stem
    big = np.repeat(np.repeat(arrays[0], 2, 0), 2, 1)
    assert m.embed([big], "infrared").shape == (1, 512)
    assert not np.allclose(m.embed(arrays, "visible"), b)
    assert m.embed(arrays, "infrared", which="pool", flip=True).shape == (3, 512)


# 2. kglfr extract


def test_extract_store_gives_the_rank1_of_evaluate_checkpoint(run, tmp_path, capsys):
    ckpt, store, _ = run
    feats = tmp_path / "f.npz"
    # float32 as evaluate's auto: on a CPU with native bf16, extract's auto is bf16
    assert main(["extract", "--checkpoint", str(ckpt), "--store", str(store), "--amp", "off", "--out", str(feats)]) == 0
    assert main(["evaluate", "--features", str(feats), "--protocol", "sysu-all", "--trials", "2",
                 "--out", str(tmp_path / "a.json")]) == 0  # fmt: skip
    assert main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--protocol", "sysu-all",
                 "--trials", "2", "--out", str(tmp_path / "b.json")]) == 0  # fmt: skip
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt.parent),
                "--store",
                str(store),
                "--protocol",
                "sysu-all",
                "--trials",
                "2",
                "--out",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )  # fmt: skip  (a run folder)
    a, b, c = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json", "c.json"))
    assert c["mean"] == b["mean"]
    assert a["mean"]["rank1"] == pytest.approx(b["mean"]["rank1"])
    assert a["mean"]["mAP"] == pytest.approx(b["mean"]["mAP"], abs=1e-6)


def test_extract_images_folder_reads_the_layout(run, folders, tmp_path):
    from kglfr.eval.features import load_features

    out = tmp_path / "ir.npz"
    assert main(["extract", "--checkpoint", str(run[0]), "--images", str(folders[1]), "--modality", "infrared",
                 "--out", str(out)]) == 0  # fmt: skip
    fs = load_features(out)
    files = sorted(folders[1].rglob("*.jpg"))
    assert len(fs) == len(files) and set(fs.cams.tolist()) <= set(INFRARED_CAMS)
    assert fs.pids[0] == int(files[0].parent.name) and (fs.modalities == 1).all()
    from kglfr.api import parse_layout

    assert parse_layout("7/c3_0001.jpg") == (7, 3) and parse_layout("x/photo.jpg") == (-1, 0)
    assert parse_layout("0012/cam6_x.png") == (12, 6)


# 3. kglfr export


def test_onnx_export_matches_pytorch(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = model_of(run)
    assert main(["export", "--checkpoint", str(run[0]), "--out", str(tmp_path / "model.onnx")]) == 0
    x = torch.randn(3, 3, *m.input_size)  # another batch size than the export's
    for name, modality in (("visible", 0), ("infrared", 1)):
        sess = ort.InferenceSession(str(tmp_path / f"model_{name}.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = m.model.extract(x, modality, which="bn").numpy()
        assert got.shape == (3, 512)
        assert np.abs(got - want).max() <= 1e-4


# 4. kglfr search


def test_search_ranks_caches_and_draws_the_grid(run, folders, tmp_path, capsys):
    vis, ir = folders
    grid = tmp_path / "grid.png"
    argv = ["search", "--checkpoint", str(run[0]), "--query", str(ir), "--query-modality", "infrared",
            "--gallery", str(vis), "--top", "5", "--out", str(grid), "--rows", "4"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "features extracted" in out and "exact search" in out and ("match" in out or "wrong" in out)
    assert grid.is_file() and grid.stat().st_size > 1000
    caches = list(vis.glob(".kglfr-features-*.npz"))
    assert len(caches) == 1
    assert main(argv) == 0
    assert "cached features reused" in capsys.readouterr().out
    # an image changed: extracted again; the ranking of the first query is the exact one
    f = sorted(vis.rglob("*.jpg"))[0]
    f.write_bytes(f.read_bytes())
    import os

    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert main(argv[:-4]) == 0
    assert "features extracted" in capsys.readouterr().out


def test_search_warns_of_a_same_modality_gallery(run, folders, capsys):
    vis, ir = folders
    q = sorted(ir.rglob("*.jpg"))[0]
    assert main(["search", "--checkpoint", str(run[0]), "--query", str(q), "--query-modality", "infrared",
                 "--gallery", str(ir), "--gallery-modality", "infrared", "--top", "3", "--no-cache"]) == 0  # fmt: skip
    cap = capsys.readouterr()
    assert "warning" in cap.err and "query's own modality" in cap.err
    assert "  1  " in cap.out and not list(ir.glob(".kglfr-*"))


def test_search_with_a_features_gallery(run, folders, tmp_path, capsys):
    vis, ir = folders
    feats = tmp_path / "vis.npz"
    assert main(["extract", "--checkpoint", str(run[0]), "--images", str(vis), "--modality", "visible",
                 "--out", str(feats)]) == 0  # fmt: skip
    assert main(["search", "--checkpoint", str(run[0]), "--query", str(ir), "--query-modality", "infrared",
                 "--gallery", str(feats), "--gallery-root", str(vis), "--top", "3",
                 "--out", str(tmp_path / "g.png")]) == 0  # fmt: skip
    assert (tmp_path / "g.png").is_file()


def test_faiss_gives_the_exact_top_k():
    pytest.importorskip("faiss")
    from kglfr.inference.search import top_k

    rng = np.random.default_rng(0)
    g = rng.standard_normal((3000, 64)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[:20] + 0.1 * rng.standard_normal((20, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    se, ie, me = top_k(q, g, 10, method="exact")
    sf, iflat, mf = top_k(q, g, 10, method="faiss-flat")
    assert (me, mf) == ("exact", "faiss-flat")
    np.testing.assert_array_equal(ie, iflat)
    np.testing.assert_allclose(se, sf, atol=1e-5)
    _, i_auto, m_auto = top_k(q, g, 10, faiss_threshold=1000, ivf_threshold=10**9)
    assert m_auto == "faiss-flat" and (i_auto == ie).all()
    _, ivf, _ = top_k(q, g, 10, method="faiss-ivf")
    assert (ivf[:, 0] == ie[:, 0]).mean() >= 0.9


# 5. Grad-CAM


def test_gradcam_of_an_identity_and_of_images(run, folders, tmp_path):
    from kglfr.data.store import Store
    from kglfr.viz.gradcam import gradcam

    ckpt, store, _ = run
    pid = int(Store.open(store).pids[0])
    out = tmp_path / "cam.png"
    assert main(["viz", "gradcam", "--checkpoint", str(ckpt), "--store", str(store), "--pid", str(pid),
                 "--n", "2", "--out", str(out)]) == 0  # fmt: skip
    assert out.is_file()
    files = sorted(folders[1].rglob("*.jpg"))[:2]
    assert main(["viz", "gradcam", "--checkpoint", str(ckpt), "--images", *map(str, files), "--modality",
                 "infrared", "--out", str(tmp_path / "ir.png")]) == 0  # fmt: skip
    cams, images = gradcam(model_of(run), files, ["infrared"] * 2)
    assert cams.shape == (2, 64, 32) and images.shape == (2, 64, 32, 3)
    assert cams.min() >= 0 and cams.max() <= 1 and cams.max() > 0.5


# bad input: one clear line each


def test_bad_input(run, folders, tmp_path, capsys):
    ckpt = str(run[0])
    bad = tmp_path / "bad" / "1" / "3_broken.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a jpeg")
    err = error_line(capsys, ["extract", "--checkpoint", ckpt, "--images", str(tmp_path / "bad"), "--modality",
                              "infrared", "--out", str(tmp_path / "x.npz")], "extract")  # fmt: skip
    assert "cannot read image" in err and "3_broken.jpg" in err
    (tmp_path / "empty").mkdir()
    err = error_line(capsys, ["search", "--checkpoint", ckpt, "--query", str(tmp_path / "empty"),
                              "--query-modality", "infrared", "--gallery", str(folders[0])], "search")  # fmt: skip
    assert "no images" in err
    err = error_line(capsys, ["extract", "--checkpoint", ckpt, "--images", str(folders[1]),
                              "--out", str(tmp_path / "x.npz")], "extract")  # fmt: skip
    assert "--modality" in err
    fake = tmp_path / "fake.pt"
    torch.save({"weights": torch.zeros(2)}, fake)
    err = error_line(capsys, ["export", "--checkpoint", str(fake), "--out", str(tmp_path / "m.onnx")], "export")
    assert "not a kglfr checkpoint" in err
    err = error_line(capsys, ["viz", "gradcam", "--checkpoint", ckpt, "--images", str(bad), "--out",
                              str(tmp_path / "c.png")], "viz")  # fmt: skip
    assert "--modality" in err
    from kglfr.api import parse_modality
    from kglfr.errors import KglfrError

    with pytest.raises(KglfrError, match="no modality"):
        parse_modality(None)
    with pytest.raises(KglfrError, match="unknown modality"):
        model_of(run).embed([np.zeros((64, 32, 3), np.uint8)], "uv")


# 6. failure analysis


def test_evaluate_worst_draws_the_lowest_ap_queries(run, tmp_path):
    ckpt, store, _ = run
    out = tmp_path / "worst"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--protocol", "sysu-all",
                 "--trials", "2", "--worst", "3", "--out", str(out)]) == 0  # fmt: skip
    assert (out / "sysu-all.json").is_file() and (out / "worst_sysu-all.png").is_file()
    rows = json.loads((out / "worst_sysu-all.json").read_text())["queries"]
    assert len(rows) == 3 and [r["ap"] for r in rows] == sorted(r["ap"] for r in rows)
    assert all(len(r["top"]) == 10 for r in rows)


# the runtime policy on the using commands


def test_amp_flag_on_the_using_commands(run, folders, tmp_path, capsys):
    ckpt, store, _ = run
    out = {}
    for amp in ("off", "bf16", "int8"):
        assert main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--protocol", "sysu-all",
                     "--trials", "2", "--amp", amp, "--out", str(tmp_path / f"{amp}.json")]) == 0  # fmt: skip
        out[amp] = json.loads((tmp_path / f"{amp}.json").read_text())
        assert main(["extract", "--checkpoint", str(ckpt), "--store", str(store), "--amp", amp,
                     "--out", str(tmp_path / f"{amp}.npz")]) == 0  # fmt: skip
    assert (out["off"]["amp"], out["bf16"]["amp"], out["int8"]["amp"]) == ("off", "bfloat16", "int8")
    printed = capsys.readouterr().out
    assert "amp bfloat16" in printed and "amp int8" in printed
    f32, f16, i8 = (np.load(tmp_path / f"{amp}.npz")["feats"] for amp in ("off", "bf16", "int8"))
    assert (f32 * f16).sum(1).min() >= 0.999 and not np.array_equal(f32, f16)
    assert (f32 * i8).sum(1).min() >= 0.99 and not np.array_equal(f32, i8)
    import kglfr

    assert kglfr.load(ckpt, amp="int8").policy.amp_name == "int8"  # the top-level load passes amp on
    files = sorted(folders[1].rglob("*.jpg"))[:2]
    assert main(["viz", "gradcam", "--checkpoint", str(ckpt), "--images", *map(str, files), "--modality",
                 "infrared", "--amp", "bf16", "--out", str(tmp_path / "ir.png")]) == 0  # fmt: skip
    for command, argv in (("evaluate", ["--store", str(store)]), ("extract", ["--store", str(store), "--out",
                          str(tmp_path / "x.npz")]), ("search", ["--query", str(files[0]), "--query-modality",
                          "infrared", "--gallery", str(folders[0])])):  # fmt: skip
        err = error_line(capsys, [command, "--checkpoint", str(ckpt), *argv, "--amp", "fp16"], command)
        assert "--amp fp16 is not supported on the CPU; it supports --amp off, --amp bf16 or --amp int8" in err
    assert not (tmp_path / "x.npz").exists()


def test_auto_on_a_native_bf16_cpu_extracts_in_bf16_and_evaluates_in_float32(run, tmp_path, capsys, monkeypatch):
    import kglfr.runtime as R

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16\n")
    monkeypatch.setattr(R, "CPUINFO", str(cpuinfo))
    ckpt, store, _ = run
    assert main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--protocol", "sysu-all",
                 "--trials", "2", "--out", str(tmp_path / "auto.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "auto.json").read_text())["amp"] == "off"
    assert main(["extract", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(tmp_path / "a.npz")]) == 0
    with np.load(tmp_path / "a.npz") as npz:
        assert str(npz["amp"]) == "bfloat16"
    printed = capsys.readouterr().out
    assert "(amp off: auto: evaluation runs float32 on every device" in printed
    assert "amp bfloat16, channels_last (auto: the CPU computes bfloat16 natively (amx_bf16, avx512_bf16))" in printed
