"""What a synthetic dataset holds and where: the SYSU-MM01 and RegDB folder layouts and split files.

A plan lists every image to draw (path, identity, camera, index, camera style) and the split files
to write; both are pure functions of the seed and the options, so a dataset can be re-planned
without drawing it.

SYSU-MM01: ``cam1``..``cam6/<pid:04d>/<nnnn>.jpg`` and ``exp/{train,val,test}_id.txt`` (comma-
separated ids on one line). Cameras 1, 2 (indoor) and 4, 5 (outdoor) are visible, 3 (indoor) and 6
(outdoor) infrared. Half the identities are for testing; a quarter of the others are listed in
``val_id.txt``. Every identity has both modalities; a test identity is always seen by cameras 1 and
2 (the indoor protocol's gallery). Other cameras miss an identity with probability ``camera_dropout``,
as in the real dataset.

RegDB: ``Visible/<id>/<sex>_<id>_<view>_v_<n>.bmp`` and ``Thermal/<id>/..._t_<n>.bmp``, the visible
and thermal image n of an identity taken at the same moment (same pose), and
``idx/{train,test}_{visible,thermal}_<t>.txt`` for trials t = 1..10: lines ``<relpath> <label>``, each
trial its own seeded half/half split of the identities, the label the identity's 0-based index within
its split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kglfr.data.conventions import REGDB_TRIALS, SYSU_CAMERAS, SYSU_INDOOR, SYSU_INFRARED, SYSU_VISIBLE
from kglfr.data.synth.body import STREAM_CAMERAS, STREAM_POSE, STREAM_SPLIT, Identity, rng_for
from kglfr.data.synth.figure import Pose, sample_pose
from kglfr.data.synth.render import REGDB_CAMERAS, CameraStyle
from kglfr.data.synth.render import SYSU_CAMERAS as SYSU_STYLES

LAYOUTS = ("sysu", "regdb")
# What a synthetic dataset writes at its root (``synthesize(force=True)`` removes exactly these).
GENERATED = ("cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "exp", "Visible", "Thermal", "idx")


@dataclass(frozen=True)
class PlannedImage:
    relpath: str
    pid: int
    camera: int
    index: int  # 1-based, within (pid, camera)
    style: CameraStyle
    pose: Pose


@dataclass
class Plan:
    layout: str
    images: list[PlannedImage]
    text_files: dict[str, str] = field(default_factory=dict)  # relpath -> content (split files)
    train_ids: list[int] = field(default_factory=list)
    test_ids: list[int] = field(default_factory=list)

    def by_identity(self) -> dict[int, list[PlannedImage]]:
        out: dict[int, list[PlannedImage]] = {}
        for im in self.images:
            out.setdefault(im.pid, []).append(im)
        return out


def _sysu_cameras(seed: int, pid: int, test: bool, dropout: float) -> list[int]:
    rng = rng_for(seed, STREAM_CAMERAS, pid)
    keep = {c: bool(rng.random() >= dropout) for c in SYSU_CAMERAS}
    if test:
        keep.update(dict.fromkeys(SYSU_INDOOR, True))
    if not any(keep[c] for c in SYSU_VISIBLE):
        keep[int(rng.choice(SYSU_VISIBLE))] = True
    if not any(keep[c] for c in SYSU_INFRARED):
        keep[int(rng.choice(SYSU_INFRARED))] = True
    return [c for c in SYSU_CAMERAS if keep[c]]


def plan_sysu(
    seed: int,
    identities: list[Identity],
    per_camera: int,
    camera_dropout: float,
    n_test: int | None = None,
    counts: Mapping[tuple[bool, int], int] | None = None,
) -> Plan:
    """The SYSU-MM01 plan: ``per_camera`` images of each identity per camera that saw it, or, with
    ``counts``, ``counts[(is_test_identity, camera)]`` (the real dataset's per-camera counts differ)."""
    pids = [ident.pid for ident in identities]
    order = [int(p) for p in rng_for(seed, STREAM_SPLIT, 0).permutation(pids)]
    n_test = len(pids) // 2 if n_test is None else n_test
    test, rest = sorted(order[:n_test]), order[n_test:]
    n_val = max(1, round(0.25 * len(rest)))
    val, train = sorted(rest[:n_val]), sorted(rest[n_val:])
    images = []
    test_set = set(test)
    for ident in identities:
        for cam in _sysu_cameras(seed, ident.pid, ident.pid in test_set, camera_dropout):
            for n in range(1, (per_camera if counts is None else counts[ident.pid in test_set, cam]) + 1):
                pose = sample_pose(rng_for(seed, STREAM_POSE, ident.pid, cam, n), ident)
                rel = f"cam{cam}/{ident.pid:04d}/{n:04d}.jpg"
                images.append(PlannedImage(rel, ident.pid, cam, n, SYSU_STYLES[cam], pose))
    files = {
        f"exp/{name}_id.txt": ",".join(map(str, ids)) + "\n"
        for name, ids in (("train", train), ("val", val), ("test", test))
    }
    return Plan("sysu", images, files, sorted(train + val), test)


def plan_regdb(seed: int, identities: list[Identity], per_camera: int, n_test: int | None = None) -> Plan:
    images = []
    paths: dict[tuple[int, int], list[str]] = {}
    for ident in identities:
        for n in range(1, per_camera + 1):
            # The visible and thermal cameras take the same moment: one pose for both.
            pose = sample_pose(rng_for(seed, STREAM_POSE, ident.pid, 0, n), ident)
            for cam, folder, tag in ((1, "Visible", "v"), (2, "Thermal", "t")):
                rel = f"{folder}/{ident.pid}/{ident.sex}_{ident.pid}_{pose.view}_{tag}_{n}.bmp"
                images.append(PlannedImage(rel, ident.pid, cam, n, REGDB_CAMERAS[cam], pose))
                paths.setdefault((ident.pid, cam), []).append(rel)
    pids = [ident.pid for ident in identities]
    files = {}
    n_train = len(pids) // 2 if n_test is None else len(pids) - n_test
    for t in range(1, REGDB_TRIALS + 1):
        order = [int(p) for p in rng_for(seed, STREAM_SPLIT, t).permutation(pids)]
        halves = {"train": sorted(order[:n_train]), "test": sorted(order[n_train:])}
        for split, chosen in halves.items():
            for cam, mod in ((1, "visible"), (2, "thermal")):
                lines = [f"{rel} {label}" for label, pid in enumerate(chosen) for rel in paths[(pid, cam)]]
                files[f"idx/{split}_{mod}_{t}.txt"] = "\n".join(lines) + "\n"
    first = [int(p) for p in rng_for(seed, STREAM_SPLIT, 1).permutation(pids)]
    return Plan("regdb", images, files, sorted(first[:n_train]), sorted(first[n_train:]))


def readme(layout: str, options: dict, n_images: int, version: str) -> str:
    name = {"sysu": "SYSU-MM01", "regdb": "RegDB"}[layout]
    shown = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
    return (
        f"Synthetic visible-infrared person re-identification data in the {name} layout.\n"
        f"Generated by kglfr {version}: kglfr synth --layout {layout} {shown}\n"
        f"{n_images} images. Every person is drawn from a seeded body model; no real person is shown.\n"
        "The same options and seed give the same bytes.\n"
        "Ground-truth COCO-17 keypoints of every image: kglfr_keypoints.json\n"
        "(read it with kglfr.data.synth.read_keypoints_sidecar).\n"
    )
