"""The synthetic dataset: layouts the readers accept, ground-truth keypoints, determinism, modality gap."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.records import TEST, TRAIN, Modality
from kglfr.data.synth import KEYPOINT_NAMES, SIDECAR_NAME, read_keypoints_sidecar, synthesize
from kglfr.data.synth.body import SHAPE_ATTRIBUTES, Material, sample_identity, shape_attributes
from kglfr.data.synth.figure import Pose, build_figure
from kglfr.data.synth.render import REGDB_CAMERAS, SYSU_CAMERAS, _Painter, draw_figure
from kglfr.errors import DatasetError, KglfrError

SYSU = {"ids": 12, "images_per_camera": 2, "height": 96, "width": 48}
REGDB = {"ids": 8, "images_per_camera": 2, "height": 64, "width": 32}


@pytest.fixture(scope="module")
def sysu(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "sysu"
    summary = synthesize(root, "sysu", seed=3, occlusion=0.3, **SYSU)
    return root, summary


@pytest.fixture(scope="module")
def regdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "regdb"
    summary = synthesize(root, "regdb", seed=4, **REGDB)
    return root, summary


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ layouts
def test_sysu_layout_reads_with_the_reader(sysu):
    root, summary = sysu
    ds = load_dataset("sysu", root)
    assert len(ds.records) == summary.images
    assert {r.pid for r in ds.records} == set(range(1, SYSU["ids"] + 1))
    test_ids = {r.pid for r in ds.split(TEST)}
    assert test_ids == set(summary.test_ids) and len(test_ids) == SYSU["ids"] // 2
    assert {r.pid for r in ds.split(TRAIN)} == set(summary.train_ids)
    val = [int(x) for x in (root / "exp" / "val_id.txt").read_text().strip().split(",")]
    assert val and set(val) <= set(summary.train_ids)
    for pid in range(1, SYSU["ids"] + 1):
        recs = [r for r in ds.records if r.pid == pid]
        assert {r.modality for r in recs} == set(Modality)  # every identity in both modalities
        if pid in test_ids:
            assert {1, 2} <= {r.camera for r in recs}  # the indoor protocol's gallery cameras
    for r in ds.records:
        assert r.relpath == f"cam{r.camera}/{r.pid:04d}/{Path(r.relpath).name}"
        assert r.modality == (Modality.INFRARED if r.camera in (3, 6) else Modality.VISIBLE)
    assert "kglfr synth --layout sysu" in (root / "README.txt").read_text()
    assert "--seed 3" in (root / "README.txt").read_text()


def test_regdb_layout_reads_all_ten_trials(regdb):
    root, summary = regdb
    ds = load_dataset("regdb", root)
    assert ds.trials == list(range(1, 11))
    assert len(ds.records) == summary.images == REGDB["ids"] * REGDB["images_per_camera"] * 2
    splits = set()
    for t in ds.trials:
        trial = ds.with_trial(t)
        train, test = {r.pid for r in trial.split(TRAIN)}, {r.pid for r in trial.split(TEST)}
        assert len(train) == len(test) == REGDB["ids"] // 2 and not train & test
        splits.add(tuple(sorted(test)))
        for split, ids in (("train", sorted(train)), ("test", sorted(test))):
            for mod, folder in (("visible", "Visible"), ("thermal", "Thermal")):
                lines = (root / "idx" / f"{split}_{mod}_{t}.txt").read_text().split("\n")
                for line in filter(None, lines):
                    rel, label = line.split()
                    assert rel.startswith(f"{folder}/")
                    assert ids[int(label)] == int(rel.split("/")[1])  # label = index within the split
    assert len(splits) > 1  # trials differ
    visible = sorted(r.relpath for r in ds.records if r.modality == Modality.VISIBLE)
    assert all(r.endswith(".bmp") and "_v_" in r for r in visible)


def test_sidecar_matches_records_and_keypoints_are_in_bounds(sysu, regdb):
    for name, (root, _summary) in (("sysu", sysu), ("regdb", regdb)):
        ds = load_dataset(name, root)
        kps = read_keypoints_sidecar(root)
        assert set(kps) == {r.relpath for r in ds.records}
        doc = json.loads((root / SIDECAR_NAME).read_text())
        assert doc["format"] == "kglfr-synth-keypoints" and doc["version"] == 1
        assert doc["order"] == list(KEYPOINT_NAMES) and len(KEYPOINT_NAMES) == 17
        shown = []
        for rel, kp in kps.items():
            assert kp.shape == (17, 3) and kp.dtype == np.float32
            h, w = cv2.imread(str(root / rel)).shape[:2]
            vis = kp[:, 2] == 1
            assert ((kp[vis, 0] >= 0) & (kp[vis, 0] < w) & (kp[vis, 1] >= 0) & (kp[vis, 1] < h)).all()
            shown.append(vis.mean())
        assert 0.6 < np.mean(shown) < 0.95  # most keypoints show; occluders and self-occlusion hide some


def test_infrared_images_are_grayscale_and_visible_images_are_not(sysu, regdb):
    for name, (root, _summary) in (("sysu", sysu), ("regdb", regdb)):
        colourful = []
        for r in load_dataset(name, root).records:
            img = cv2.imread(str(r.path(root)), cv2.IMREAD_UNCHANGED)
            assert img.ndim == 3 and img.shape[2] == 3
            if r.modality == Modality.INFRARED:
                assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
            else:
                colourful.append(np.abs(img.astype(int) - img.mean(axis=2, keepdims=True)).mean() > 3)
        assert np.mean(colourful) > 0.9


# -------------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_other_images(tmp_path, sysu):
    root, _summary = sysu
    again = synthesize(tmp_path / "again", "sysu", seed=3, occlusion=0.3, **SYSU)
    assert files(again.root) == files(root)
    other = synthesize(tmp_path / "other", "sysu", seed=5, occlusion=0.3, **SYSU)
    a, b = files(root), files(other.root)
    common = [k for k in a if k.endswith(".jpg") and k in b]
    assert common and sum(a[k] != b[k] for k in common) == len(common)


def test_an_image_does_not_depend_on_how_many_identities_are_drawn(tmp_path):
    small = synthesize(tmp_path / "a", "regdb", ids=4, seed=7, images_per_camera=1, height=48, width=24)
    large = synthesize(tmp_path / "b", "regdb", ids=6, seed=7, images_per_camera=1, height=48, width=24)
    a, b = files(small.root), files(large.root)
    images = [k for k in a if k.endswith(".bmp")]
    assert images and all(a[k] == b[k] for k in images)


# --------------------------------------------------------------------------------------- body model
def test_left_is_the_persons_left():
    ident = sample_identity(0, 1)
    left, right = KEYPOINT_NAMES.index("left_shoulder"), KEYPOINT_NAMES.index("right_shoulder")
    for yaw, left_on_image_right in ((0.0, True), (np.pi, False)):
        pose = Pose("front", yaw, phase=0.0, stride=0.3, arm_swing=0.3, abduction=0.1, roll=0.0)
        kp = build_figure(ident, pose, cx=72, top=10, scale=260).keypoints
        assert (kp[left, 0] > kp[right, 0]) == left_on_image_right
        assert kp[0, 2] == (1.0 if yaw == 0.0 else 0.0)  # the nose shows from the front only
        ankles = kp[15:17, 1]
        assert 10 + 0.9 * 260 < ankles.max() < 10 + 260  # the standing foot on the ground


def test_side_view_is_narrower_than_front_view():
    ident = sample_identity(0, 2)
    widths = []
    for yaw in (0.0, np.pi / 2):
        pose = Pose("side", yaw, phase=0.0, stride=0.0, arm_swing=0.0, abduction=0.1, roll=0.0)
        torso = build_figure(ident, pose, cx=72, top=10, scale=260).torso
        widths.append(np.ptp(torso[:, 0]))
    assert widths[1] < 0.7 * widths[0]


# ------------------------------------------------------------------------------------ modality gap
def _histograms(root: Path, records) -> np.ndarray:
    out = []
    for r in records:
        img = cv2.imread(str(r.path(root)))
        h, w = img.shape[:2]
        img = img[int(0.1 * h) : int(0.95 * h), int(0.25 * w) : int(0.75 * w)]  # the person, mostly
        hist = cv2.calcHist([img], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
        out.append(np.sqrt(hist / hist.sum()))  # Bhattacharyya coefficient = dot product
    return np.array(out)


def _rank1(q, q_pid, g, g_pid) -> float:
    return float((g_pid[(q @ g.T).argmax(axis=1)] == q_pid).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_colour_matches_within_visible_but_not_across_modalities(tmp_path, seed):
    """A colour-histogram matcher finds people across visible cameras, not from infrared to visible."""
    root = synthesize(tmp_path / "gap", "sysu", ids=40, seed=seed, images_per_camera=2, height=128, width=64).root
    recs = load_dataset("sysu", root).split(TEST)
    feats = _histograms(root, recs)
    pid = np.array([r.pid for r in recs])
    cam = np.array([r.camera for r in recs])
    vis = np.array([r.modality == Modality.VISIBLE for r in recs])
    chance = 1.0 / len(set(pid.tolist()))
    assert chance == 1 / 20
    vv = np.mean(
        [
            _rank1(feats[vis & (cam == c)], pid[vis & (cam == c)], feats[vis & (cam != c)], pid[vis & (cam != c)])
            for c in (1, 2, 4, 5)
        ]
    )
    iv = _rank1(feats[~vis], pid[~vis], feats[vis], pid[vis])
    print(f"seed {seed}: V->V rank-1 {vv:.3f} ({vv / chance:.1f}x chance), I->V {iv:.3f} ({iv / chance:.1f}x)")
    assert vv > 5 * chance
    assert iv < 2.5 * chance


# ------------------------------------------------------------------------------ shape across modalities
def test_shape_attributes_differ_between_identities():
    """Sleeves, neckline, top, legwear, shoes, headwear, hair, bag and build: high entropy over identities."""
    attrs = [shape_attributes(sample_identity(0, pid)) for pid in range(1, 51)]
    assert len(set(attrs)) >= 48  # nearly every identity has its own combination
    for k, name in enumerate((*SHAPE_ATTRIBUTES, "build")):
        _values, counts = np.unique([a[k] for a in attrs], return_counts=True)
        p = counts / counts.sum()
        assert -(p * np.log2(p)).sum() > 1.0, name  # every attribute splits the identities
    # Drawn from the identity alone: the same for every image, camera and modality.
    assert all(shape_attributes(sample_identity(0, pid)) == attrs[pid - 1] for pid in (1, 17, 50))
    assert shape_attributes(sample_identity(1, 1)) != attrs[0] or shape_attributes(sample_identity(1, 2)) != attrs[1]


class _MaterialPainter:
    """Paints each material's code (10 x its value), to map which material shows where."""

    def __call__(self, material, x0, y0, h, w):
        return np.full((1, w), 10.0 * int(material), np.float32)


def _draw(ident, pose, painter, H=288, W=144, channels=None):
    figure = build_figure(ident, pose, cx=W / 2, top=12, scale=0.9 * H)
    img = np.full((H, W) if channels is None else (H, W, channels), -1e5, np.float32)
    draw_figure(img, figure, painter)
    return img


@pytest.mark.parametrize("pid", range(1, 9))
def test_the_same_shape_shows_in_both_modalities_and_skin_is_bright_in_infrared(pid):
    ident = sample_identity(0, pid)
    pose = Pose("front", 0.2, phase=1.0, stride=0.3, arm_swing=0.3, abduction=0.1, roll=0.0)
    cx, scale = 72, 0.9 * 288
    vis = _draw(ident, pose, _Painter(ident, SYSU_CAMERAS[1], np.random.default_rng(0), cx, scale), channels=3)
    ir = _draw(ident, pose, _Painter(ident, SYSU_CAMERAS[3], np.random.default_rng(0), cx, scale))
    codes = _draw(ident, pose, _MaterialPainter())
    sil_vis, sil_ir = vis.min(axis=2) > -5e4, ir > -5e4
    assert sil_vis.sum() > 2000 and (sil_vis & sil_ir).sum() / (sil_vis | sil_ir).sum() > 0.995  # one silhouette
    # Interior pixels of each material (edges blend two materials).
    material = np.where(np.abs(codes - 10 * np.round(codes / 10)) < 0.5, np.round(codes / 10), -1)
    interior = cv2.erode((material >= 0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    skin = interior & (material == Material.SKIN)
    assert skin.sum() > 150
    others = [m for m in Material if m not in (Material.SKIN, Material.EYES)]
    means = {m: ir[interior & (material == m)].mean() for m in others if (interior & (material == m)).sum() > 20}
    assert ir[skin].mean() > max(means.values()) + 15  # exposed skin is the brightest surface
    if Material.HAIR in means and ident.hair_length != "buzz":
        assert means[Material.HAIR] < ir[skin].mean() - 100  # hair is dark
    # The bright infrared region is where skin shows (the cross-modal cue of what clothes cover).
    threshold = 0.5 * (ir[skin].mean() + max(means.values()))
    bright = (ir > threshold) & interior
    assert (bright & skin).sum() / (bright | skin).sum() > 0.85
    # Garments: one heat level in infrared whatever their pattern in the visible image.
    upper = interior & (material == Material.UPPER)
    assert ir[upper].std() < 6.0
    if ident.upper.pattern != "plain":
        assert vis[upper].std(axis=0).mean() > 4 * ir[upper].std()


def test_near_infrared_shows_garment_lightness_far_infrared_only_heat():
    """SYSU's near-infrared cameras: light garments tend to show lighter; RegDB's thermal camera: no link."""
    idents = [sample_identity(0, pid) for pid in range(1, 201)]
    plain = [i for i in idents if i.upper.pattern == "plain"]
    lightness = [np.dot(i.upper.color, (0.299, 0.587, 0.114)) for i in plain]
    for style, low, high in ((SYSU_CAMERAS[3], 0.6, 1.0), (SYSU_CAMERAS[6], 0.6, 1.0), (REGDB_CAMERAS[2], -0.3, 0.3)):
        levels = [_Painter(i, style, np.random.default_rng(i.pid), 72, 260).levels[Material.UPPER] for i in plain]
        assert low < np.corrcoef(lightness, levels)[0, 1] < high, style.name


# -------------------------------------------------------------------------------------- bad input
def test_bad_options_raise_errors_naming_the_parameter(tmp_path):
    with pytest.raises(KglfrError, match="^ids must be at least 4"):
        synthesize(tmp_path / "a", ids=3)
    with pytest.raises(KglfrError, match="unknown layout 'llcm'"):
        synthesize(tmp_path / "a", layout="llcm")
    with pytest.raises(KglfrError, match="^images_per_camera must be at least 1"):
        synthesize(tmp_path / "a", images_per_camera=0)
    with pytest.raises(KglfrError, match="^height and width must be at least 32 and 16, got 20x10"):
        synthesize(tmp_path / "a", height=20, width=10)
    assert not (tmp_path / "a").exists()


def test_a_folder_of_other_files_is_refused_without_advising_force(tmp_path):
    # Issue 15: the error advised --force, which then refused the folder too.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(KglfrError, match="was not written by 'kglfr synth'; choose an empty or new folder") as e:
            synthesize(tmp_path / "full", ids=4, images_per_camera=1, height=48, width=24, force=force)
        assert "force" not in str(e.value)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]


def test_an_earlier_output_is_replaced_only_with_force_as_advised(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["synth", "--out", str(out), "--ids", "4", "--images-per-camera", "1", "--height", "48", "--width", "24"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"kglfr synth: error: --out {out} holds an earlier synthetic dataset; pass --force to replace it, "
        "or choose a new folder"
    )
    assert main([*args, "--seed", "1", "--force"]) == 0  # the advice works
    assert "(sysu layout, seed 1)" in capsys.readouterr().out
    assert "--seed 1" in (out / "README.txt").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ids", "3"], "--ids must be at least 4"),
        (["--ids", "10", "--test-ids", "9"], r"--test-ids must be in [2, ids - 2] = [2, 8], got 9"),
        (["--images-per-camera", "0"], "--images-per-camera must be at least 1"),
        (["--height", "20"], "--height and --width must be at least 32 and 16"),
        (["--camera-dropout", "1"], "--camera-dropout must be in [0, 1)"),
        (["--size-jitter", "0.5"], "--size-jitter must be in [0, 0.5)"),
        (["--occlusion", "2"], "--occlusion must be a probability"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
    ],
)
def test_cli_words_parameter_errors_as_flags(tmp_path, capsys, flags, message):
    assert main(["synth", "--out", str(tmp_path / "x"), *flags]) == 2
    assert capsys.readouterr().err.startswith(f"kglfr synth: error: {message}")
    assert not (tmp_path / "x").exists()


def test_test_ids_sets_how_many_identities_are_held_out(tmp_path):
    opts = {"images_per_camera": 1, "height": 48, "width": 24}
    summary = synthesize(tmp_path / "s", "sysu", ids=10, test_ids=3, **opts)
    ds = load_dataset("sysu", tmp_path / "s")
    assert len({r.pid for r in ds.split(TEST)}) == len(summary.test_ids) == 3
    assert len({r.pid for r in ds.split(TRAIN)}) == len(summary.train_ids) == 7
    assert "--test-ids 3" in (tmp_path / "s" / "README.txt").read_text()
    summary = synthesize(tmp_path / "r", "regdb", ids=10, test_ids=3, **opts)
    ds = load_dataset("regdb", tmp_path / "r")
    for t in (1, 10):
        trial = ds.with_trial(t)
        assert len({r.pid for r in trial.split(TEST)}) == 3 and len({r.pid for r in trial.split(TRAIN)}) == 7
    assert len(summary.test_ids) == 3
    for bad in (1, 9):
        with pytest.raises(KglfrError, match=r"^test_ids must be in \[2, ids - 2\] = \[2, 8\], got " + str(bad)):
            synthesize(tmp_path / "bad", ids=10, test_ids=bad, **opts)


def test_force_replaces_an_earlier_output(tmp_path):
    out = tmp_path / "out"
    synthesize(out, "sysu", ids=6, images_per_camera=2, height=48, width=24)
    summary = synthesize(out, "sysu", ids=4, images_per_camera=1, height=48, width=24, force=True)
    assert len(load_dataset("sysu", out).records) == summary.images
    assert len(read_keypoints_sidecar(out)) == summary.images


def test_cli_writes_a_dataset_and_reports_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "synth",
        "--layout",
        "regdb",
        "--out",
        str(out),
        "--ids",
        "4",
        "--images-per-camera",
        "1",
        "--height",
        "48",
        "--width",
        "24",
    ]
    assert main(args) == 0
    assert "wrote 8 images of 4 identities (regdb layout, seed 0)" in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kglfr synth: error: --out") and "--force" in err and "\n" not in err
    assert main(["synth", "--out", str(tmp_path / "x"), "--ids", "2"]) == 2
    assert "--ids must be at least 4" in capsys.readouterr().err


def test_sidecar_reader_rejects_missing_and_malformed_files(tmp_path):
    with pytest.raises(DatasetError, match="no keypoint sidecar"):
        read_keypoints_sidecar(tmp_path)
    path = tmp_path / SIDECAR_NAME
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not readable JSON"):
        read_keypoints_sidecar(tmp_path)
    good = {
        "format": "kglfr-synth-keypoints",
        "version": 1,
        "order": list(KEYPOINT_NAMES),
        "images": {"cam1/0001/0001.jpg": [[1.5, 2.5, 1]] * 17},
    }
    path.write_text(json.dumps(good))
    assert read_keypoints_sidecar(path)["cam1/0001/0001.jpg"].shape == (17, 3)
    for change, message in (
        ({"format": "other"}, "not a keypoint sidecar"),
        ({"version": 2}, "version 2 is not supported"),
        ({"order": list(KEYPOINT_NAMES[::-1])}, "17 COCO keypoints"),
        ({"images": {"a.jpg": [[1, 2, 1]] * 16}}, "must be 17 rows"),
        ({"images": {"a.jpg": [[1, 2, 0.5]] * 17}}, "v = 0 or 1"),
        ({"images": {}}, "must not be empty"),
    ):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(DatasetError, match=message):
            read_keypoints_sidecar(tmp_path)
