"""SYSU-MM01's official gallery draw (``exp/rand_perm_cam.mat``) next to the seeded one."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from layouts import evaluate_error, write_rand_perm_cam

from kglfr.cli import main
from kglfr.eval.features import check_features
from kglfr.eval.protocols import PROTOCOLS, ProtocolError, TrialPlan, evaluate_protocol, image_modalities
from kglfr.eval.report import format_table, result_to_dict
from kglfr.eval.sysu_official import GalleryPermError, load_permutations

pytest.importorskip("scipy")

N_IDS = 6


def sysu_test_set(seed=0):
    """A SYSU-like test set in shuffled file order: ``cam{c}/{pid:04d}/{n:04d}.jpg``, 1-14 images per
    (identity, camera), identities 2..N_IDS (identity 1 is a training identity: not in the features)."""
    rng = np.random.default_rng(seed)
    pids, cams, paths = [], [], []
    for pid in range(2, N_IDS + 1):
        for cam in range(1, 7):
            for n in range(1, int(rng.integers(1, 15)) + 1):
                pids.append(pid)
                cams.append(cam)
                paths.append(f"cam{cam}/{pid:04d}/{n:04d}.jpg")
    order = rng.permutation(len(pids))
    pids, cams, paths = np.array(pids)[order], np.array(cams)[order], np.array(paths)[order]
    feats = rng.standard_normal((N_IDS + 1, 16))[pids] + 0.8 * rng.standard_normal((len(pids), 16))
    return {"feats": feats.astype(np.float32), "pids": pids, "cams": cams, "paths": paths}


def counts_of(arrays, n_ids=N_IDS):
    counts = {}
    for pid, cam in zip(arrays["pids"].tolist(), arrays["cams"].tolist()):
        counts[(cam, pid)] = counts.get((cam, pid), 0) + 1
    counts.update({(cam, 1): 5 for cam in range(1, 7)})  # identities outside the test set are in the file too
    return counts


def features(arrays):
    return check_features(arrays["feats"], arrays["pids"], arrays["cams"], arrays["paths"], source="test set")


def expected_gallery(perms, cameras, run, shots):
    """The gallery as the Python ports of the MATLAB code name it: camera by camera, identity ascending,
    the file numbered by the first ``shots`` entries of row ``run``."""
    return [f"cam{cam}/{pid:04d}/{int(i):04d}.jpg" for cam in cameras for pid in range(2, N_IDS + 1)
            if (cam, pid) in perms for i in perms[(cam, pid)][run - 1, :shots]]  # fmt: skip


@pytest.fixture
def official(tmp_path):
    arrays = sysu_test_set()
    mat = tmp_path / "SYSU-MM01" / "exp" / "rand_perm_cam.mat"
    written = write_rand_perm_cam(mat, counts_of(arrays), N_IDS)
    return arrays, mat, written


@pytest.mark.parametrize("name", ["sysu-all", "sysu-indoor"])
@pytest.mark.parametrize("shots", [1, 10])
def test_gallery_is_the_permutations_first_entries(official, name, shots):
    arrays, mat, written = official
    fs, protocol = features(arrays), PROTOCOLS[name]
    modality = image_modalities("sysu", fs.cams, fs.paths)
    plan = TrialPlan.build(protocol, fs.pids, fs.cams, fs.paths, modality, load_permutations(mat))
    for run in range(1, 11):
        q, g = plan.sets(run, shots)
        assert fs.paths[g].tolist() == expected_gallery(written, protocol.gallery.cameras, run, shots)
        assert set(fs.cams[q].tolist()) == {3, 6} and len(q) == int(np.isin(fs.cams, (3, 6)).sum())


def test_result_and_table_say_which_draw(official):
    arrays, mat, _ = official
    fs = features(arrays)
    res = evaluate_protocol(fs, "sysu-all", official=load_permutations(mat))
    d = result_to_dict(res)
    assert d["gallery_draw"] == "official" and d["trial_ids"] == list(range(1, 11))
    assert d["gallery_perm"]["path"] == str(mat) and len(d["gallery_perm"]["sha256"]) == 64
    assert "gallery draw: official" in format_table(res)
    seeded = evaluate_protocol(fs, "sysu-all")
    d = result_to_dict(seeded)
    assert d["gallery_draw"] == "seeded" and d["gallery_perm"] is None and d["trial_ids"] == list(range(10))
    assert "gallery draw: seeded" in format_table(seeded)
    assert res.table().tolist() != seeded.table().tolist()  # a different draw, so other numbers


def test_cli_official_draw(official, tmp_path, capsys):
    arrays, mat, _ = official
    npz = tmp_path / "feats.npz"
    np.savez(npz, **arrays)
    out = tmp_path / "res.json"
    argv = [
        "evaluate",
        "--features",
        str(npz),
        "--protocol",
        "sysu-all",
        "--multi-shot",
        "--trials",
        "3",
        "--gallery-draw",
        "official",
        "--gallery-perm",
        str(mat),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["gallery_draw"] == "official" and res["trial_ids"] == [1, 2, 3] and res["shot"] == "multi-shot (10)"
    assert "gallery draw: official" in capsys.readouterr().out
    assert main(argv[:-6] + ["--out", str(out)]) == 0  # the default: seeded
    assert json.loads(out.read_text())["gallery_draw"] == "seeded"


def _damage(kind, arrays, mat):
    counts = counts_of(arrays)
    if kind == "absent":
        mat.unlink()
    elif kind == "not-mat":
        mat.write_bytes(b"not a MATLAB file")
    elif kind == "v7.3":  # the 128-byte header of an HDF5-based MAT-file (version 0x0200)
        mat.write_bytes(b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + b"\x00\x02IM" + bytes(512))
    elif kind == "no-variable":
        import scipy.io

        scipy.io.savemat(str(mat), {"perm": np.arange(3)})
    elif kind == "not-cells":
        import scipy.io

        scipy.io.savemat(str(mat), {"rand_perm_cam": np.arange(6.0)})
    elif kind == "identity-missing":
        counts.pop((4, 3))
        write_rand_perm_cam(mat, counts, N_IDS)
    elif kind == "out-of-range":
        counts[(2, 5)] += 3
        write_rand_perm_cam(mat, counts, N_IDS)
    elif kind == "fewer-images":
        counts[(1, 2)] -= 1
        if counts[(1, 2)] == 0:
            counts.pop((1, 2))
        write_rand_perm_cam(mat, counts, N_IDS)
    elif kind == "few-runs":
        write_rand_perm_cam(mat, counts, N_IDS, runs=3)


@pytest.mark.parametrize("kind, words", [
    ("absent", ["not found", "exp/rand_perm_cam.mat", "--gallery-perm"]),
    ("not-mat", ["cannot read", "MATLAB"]),
    ("v7.3", ["v7.3", "HDF5"]),
    ("no-variable", ["no variable 'rand_perm_cam'"]),
    ("not-cells", ["cell array of 6 cells"]),
    ("identity-missing", ["identity 3 camera 4", "no permutation"]),
    ("out-of-range", ["identity 5 camera 2", "out of range"]),
    ("fewer-images", ["identity 2 camera 1"]),
    ("few-runs", ["3 run(s), fewer than the 10 trials", "ask for 3 trials or fewer"]),
])  # fmt: skip
def test_cli_errors_are_one_line(official, tmp_path, capsys, kind, words):
    arrays, mat, _ = official
    npz = tmp_path / "feats.npz"
    np.savez(npz, **arrays)
    _damage(kind, arrays, mat)
    err = evaluate_error(capsys, ["evaluate", "--features", str(npz), "--protocol", "sysu-all",
                             "--gallery-draw", "official", "--gallery-perm", str(mat)])  # fmt: skip
    for w in words:
        assert w in err, err


def test_cli_option_errors(official, tmp_path, capsys, monkeypatch):
    arrays, mat, _ = official
    npz = tmp_path / "feats.npz"
    np.savez(npz, **arrays)
    base = ["evaluate", "--features", str(npz), "--protocol", "sysu-all"]
    assert "--gallery-perm FILE" in evaluate_error(capsys, [*base, "--gallery-draw", "official"])
    assert "applies to --gallery-draw official" in evaluate_error(capsys, [*base, "--gallery-perm", str(mat)])
    err = evaluate_error(capsys, ["evaluate", "--features", str(npz), "--protocol", "regdb-v2i", "--gallery-draw",
                                  "official", "--gallery-perm", str(mat)])  # fmt: skip
    assert "SYSU-MM01's" in err
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    official_argv = [*base, "--gallery-draw", "official", "--gallery-perm", str(mat)]
    assert "pip install scipy" in evaluate_error(capsys, official_argv)


def test_official_draw_is_sysu_only(official):
    _, mat, _ = official
    regdb = check_features(np.ones((2, 4)), [1, 1], [1, 2], ["a.bmp", "b.bmp"], source="regdb")
    with pytest.raises(ProtocolError, match="SYSU-MM01's"):
        evaluate_protocol([regdb], "regdb-v2i", official=load_permutations(mat))


def test_store_permutations_default_path_and_config(official, tmp_path):
    from kglfr.eval.model_eval import store_permutations
    from kglfr.train.config import ConfigError, load_config

    _, mat, written = official
    root = mat.parent.parent
    store = SimpleNamespace(dataset="sysu", root=root, path=tmp_path / "store")
    assert sorted(store_permutations(store).perms) == sorted(written)  # <root>/exp/rand_perm_cam.mat
    mat.rename(tmp_path / "elsewhere.mat")
    assert sorted(store_permutations(store, str(tmp_path / "elsewhere.mat")).perms) == sorted(written)
    with pytest.raises(GalleryPermError, match="rand_perm_cam.mat not found"):
        store_permutations(store)
    with pytest.raises(Exception, match="SYSU-MM01's"):
        store_permutations(SimpleNamespace(dataset="regdb", root=root, path=tmp_path / "store"))
    cfg = load_config("sysu/kglfr")
    assert cfg.eval.gallery_draw == "seeded" and cfg.eval.gallery_perm is None
    assert load_config("sysu/kglfr", ["eval.gallery_draw=official"]).eval.gallery_draw == "official"
    with pytest.raises(ConfigError, match="eval.gallery_draw"):
        load_config("sysu/kglfr", ["eval.gallery_draw=matlab"])
