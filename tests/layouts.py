"""Test helpers: tiny dataset folders in the official layouts (plain image files), a synthetic store, a
SYSU-MM01 permutation file, and the one-line error check of ``kglfr evaluate``."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.store import Store, prepare_store
from kglfr.keypoints.backends.oracle import SIDECAR


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test's DDP rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def make_sysu(root: Path, train=(1, 2, 3), val=(4,), test=(5, 6), per_cam: int = 2) -> Path:
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
        for pid in (*train, *val, *test):
            for n in range(1, per_cam + 1):
                write_image(root / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg", pid * 100 + cam * 10 + n)
    (root / "exp").mkdir(exist_ok=True)
    for name, ids in (("train", train), ("val", val), ("test", test)):
        (root / "exp" / f"{name}_id.txt").write_text(",".join(map(str, ids)) + "\n")
    return root


def make_regdb(root: Path, ids=range(1, 7), per_mod: int = 2, trials: int = 10) -> Path:
    ids = list(ids)
    for pid in ids:
        for n in range(1, per_mod + 1):
            write_image(root / "Visible" / str(pid) / f"male_{pid}_v_{n}.bmp", pid * 10 + n)
            write_image(root / "Thermal" / str(pid) / f"male_{pid}_t_{n}.bmp", pid * 10 + n + 5)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for t in range(1, trials + 1):
        order = np.random.default_rng(t).permutation(ids)
        halves = {"train": sorted(order[: len(ids) // 2]), "test": sorted(order[len(ids) // 2 :])}
        for split, chosen in halves.items():
            for mod, folder, tag in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                lines = [
                    f"{folder}/{pid}/male_{pid}_{tag}_{n}.bmp {label}"
                    for label, pid in enumerate(chosen)
                    for n in range(1, per_mod + 1)
                ]
                (root / "idx" / f"{split}_{mod}_{t}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_llcm(root: Path, train=(1, 2, 3), test=(4, 5)) -> Path:
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for split, ids in (("train", train), ("test", test)):
        for mod, cams in (("vis", (1, 2)), ("nir", (3, 4))):
            lines = []
            for label, pid in enumerate(ids):
                for cam in cams:
                    rel = f"{mod}/{pid:04d}/{pid:04d}_c{cam:02d}_s100_f{cam}0_{mod}.jpg"
                    write_image(root / rel, pid * 10 + cam)
                    lines.append(f"{rel} {label}")
            (root / "idx" / f"{split}_{mod}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_custom(root: Path, ids=range(1, 9)) -> Path:
    for pid in ids:
        write_image(root / "visible" / f"{pid:03d}" / f"1_{pid}_a.jpg", pid)
        write_image(root / "visible" / f"{pid:03d}" / f"c2_{pid}_b.png", pid + 1)
        write_image(root / "infrared" / f"{pid:03d}" / f"7_{pid}_a.jpg", pid + 2)
    return root


# Overrides that make any preset train in seconds on the CPU (resnet18 at 64x32, 3 ids x (2 + 2)); no report
# page (tests/report draws it).
TINY_TRAIN = (
    "model.arch=resnet18", "data.height=64", "data.width=32", "data.pad=2", "data.ids_per_batch=3",
    "data.per_modality=2", "eval.trials=2", "eval.batch_size=32", "train.tensorboard=false", "model.pretrained=none",
    "eval.report_page=false",
)  # fmt: skip


def synthetic_store(root: Path, ids: int = 12, seed: int = 2, images_per_camera: int = 2, keypoints: bool = True):
    """A synthetic SYSU-layout dataset under ``root/synth`` prepared at 64x32 into ``root/store`` (with the
    oracle keypoint cache unless ``keypoints`` is False): (store path, dataset root)."""
    from kglfr.data.synth import synthesize
    from kglfr.keypoints.build import build_cache, build_pose_backend

    synth = synthesize(root / "synth", "sysu", ids=ids, seed=seed, images_per_camera=images_per_camera,
                       height=64, width=32)  # fmt: skip
    store, _ = prepare_store(load_dataset("sysu", synth.root), root / "store", height=64, width=32, progress=False)
    if keypoints:
        build_cache(store, build_pose_backend("oracle", store), progress=False)
    return store.path, Path(synth.root)


def write_rand_perm_cam(
    path: Path, counts: dict[tuple[int, int], int], n_ids: int, runs: int = 10, seed: int = 0
) -> dict[tuple[int, int], np.ndarray]:
    """SYSU-MM01's ``exp/rand_perm_cam.mat`` in the official structure (as the authors' MATLAB code reads it):
    ``rand_perm_cam`` a 6 x 1 cell, one per camera; each a 1 x ``n_ids`` cell indexed by identity holding a
    ``runs x n`` double matrix whose rows are permutations of 1..n (``counts[(cam, pid)]`` images; empty when
    absent). Returns the matrices written, by (camera, identity)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    cells = np.empty((6, 1), dtype=object)
    written = {}
    for cam in range(1, 7):
        per_id = np.empty((1, n_ids), dtype=object)
        for pid in range(1, n_ids + 1):
            n = counts.get((cam, pid), 0)
            m = np.stack([rng.permutation(n) + 1 for _ in range(runs)]).astype(np.float64) if n else np.zeros((0, 0))
            per_id[0, pid - 1] = m
            if n:
                written[(cam, pid)] = m.astype(np.int64)
        cells[cam - 1, 0] = per_id
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"rand_perm_cam": cells})
    return written


def evaluate_error(capsys, argv: list[str]) -> str:
    """Run ``kglfr evaluate`` expecting a one-line error and exit status 2; return the line."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("kglfr evaluate: error: ") and "\n" not in err, err
    return err


# -- a 288x144 store of a synthetic SYSU set whose one infrared image has no person (keypoint tests) ---

SOURCE_HW = (128, 64)
STORE_HW = (288, 144)


def no_person_relpath(relpaths) -> str:
    """The image whose keypoints ``occluded_store`` marks all occluded (a 'no person found' image)."""
    return next(r for r in sorted(relpaths) if r.startswith("cam3/"))


def occluded_store(tmp: Path, ids: int = 6, images_per_camera: int = 1) -> Store:
    """A prepared 288 x 144 store of a ``kglfr synth`` SYSU dataset (sources about 128 x 64, sizes vary),
    with one infrared image's ground truth made all-occluded."""
    from kglfr.data.synth import synthesize

    root = tmp / "synth"
    synthesize(root, layout="sysu", ids=ids, seed=0, images_per_camera=images_per_camera,
               height=SOURCE_HW[0], width=SOURCE_HW[1], size_jitter=0.3)  # fmt: skip
    doc = json.loads((root / SIDECAR).read_text())
    for row in doc["images"][no_person_relpath(doc["images"])]:
        row[2] = 0
    (root / SIDECAR).write_text(json.dumps(doc))
    dataset = load_dataset("sysu", root)
    store, _ = prepare_store(dataset, tmp / "store", height=STORE_HW[0], width=STORE_HW[1], progress=False)
    return store


def eval_net(num_classes: int = 4):
    """A ResNet-18 AGW network in eval mode, seeded, whose BN feature differs from the pooled one (its
    BN-neck running mean moved, as after training)."""
    import torch

    from kglfr.model import AGWNet

    torch.manual_seed(0)
    net = AGWNet(num_classes, arch="resnet18", non_local=False).eval()
    net.bnneck.running_mean.uniform_(0.0, 1.0)
    return net
