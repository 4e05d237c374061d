"""SYSU-MM01's official gallery draw: the dataset authors' fixed permutations ``exp/rand_perm_cam.mat``.

The file (shipped with the dataset and as ``evaluation/data_split/rand_perm_cam.mat`` in
``wuancong/SYSU-MM01``) holds one MATLAB variable ``rand_perm_cam``: a cell array of 6 cells, one per
camera; cell ``k`` is a cell array indexed by identity (1..533), each a ``runs x n`` matrix (10 runs)
whose rows are permutations of ``1..n``, ``n`` the number of images of that identity in ``cam<k>``
(empty when it has none). The authors' ``evaluation/get_testing_set.m`` takes, in run ``r``, the first
``number_shot`` entries of row ``r`` as 1-based indices into the identity's images of that camera
(``feature{id}(i,:)``, the i-th image, i.e. ``cam<k>/<id:04d>/`` sorted by name, whose files are
numbered ``0001..n``); the gallery lists camera by camera, identities ascending within each.

scipy reads the file (an optional dependency, imported only here, only when the file is read).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kglfr.data.conventions import SYSU_CAMERAS
from kglfr.errors import KglfrError

PERM_FILE = Path("exp") / "rand_perm_cam.mat"
VARIABLE = "rand_perm_cam"
NUM_CAMERAS = len(SYSU_CAMERAS)
WHERE = ("it ships with SYSU-MM01 as <SYSU root>/exp/rand_perm_cam.mat "
         "(also github.com/wuancong/SYSU-MM01, evaluation/data_split/rand_perm_cam.mat)")  # fmt: skip


class GalleryPermError(KglfrError):
    """A ``rand_perm_cam.mat`` that is absent, unreadable or does not fit the test images."""


@dataclass(frozen=True)
class GalleryPermutations:
    """The official permutations: ``(camera, identity) -> runs x images`` (1-based image indices)."""

    perms: dict[tuple[int, int], np.ndarray]
    source: str
    sha256: str | None = None


def parse_permutations(content: dict, source: str) -> GalleryPermutations:
    """The permutations of a ``scipy.io.loadmat`` result (pure: no file access)."""
    if VARIABLE not in content:
        names = ", ".join(k for k in content if not k.startswith("__")) or "none"
        raise GalleryPermError(f"{source} has no variable {VARIABLE!r} (variables: {names}); "
                               "is it SYSU-MM01's rand_perm_cam.mat?")  # fmt: skip
    cells = np.asarray(content[VARIABLE])
    if cells.dtype != object or cells.size != NUM_CAMERAS:
        raise GalleryPermError(f"{source}: {VARIABLE} must be a cell array of {NUM_CAMERAS} cells (one per "
                               f"camera), got a {cells.dtype} array of shape {cells.shape}")  # fmt: skip
    perms: dict[tuple[int, int], np.ndarray] = {}
    for cam, per_id in enumerate(cells.reshape(-1, order="F"), start=1):
        per_id = np.asarray(per_id)
        if per_id.dtype != object:
            raise GalleryPermError(f"{source}: {VARIABLE}{{{cam}}} must be a cell array indexed by identity, "
                                   f"got a {per_id.dtype} array")  # fmt: skip
        for pid, m in enumerate(per_id.reshape(-1, order="F"), start=1):
            m = np.asarray(m)
            if m.size == 0:  # this identity has no image in this camera
                continue
            if m.ndim != 2 or not np.issubdtype(m.dtype, np.number) or not np.all(m == np.round(m)):
                raise GalleryPermError(f"{source}: {VARIABLE}{{{cam}}}{{{pid}}} must be a runs x images matrix "
                                       f"of integer indices, got {m.dtype} of shape {m.shape}")  # fmt: skip
            perms[(cam, pid)] = m.astype(np.int64)
    return GalleryPermutations(perms, source)


def load_permutations(path: str | Path) -> GalleryPermutations:
    """Read ``rand_perm_cam.mat`` (MATLAB v5/v7; scipy cannot read v7.3, an HDF5 file)."""
    path = Path(path)
    if not path.is_file():
        raise GalleryPermError(f"official gallery draw: {path} not found; {WHERE}; "
                               "pass its path with --gallery-perm FILE (config: eval.gallery_perm)")  # fmt: skip
    try:
        import scipy.io
    except ImportError:
        raise GalleryPermError("the official gallery draw needs scipy to read rand_perm_cam.mat: "
                               "pip install scipy (or pip install 'kglfr[sysu-official]')") from None  # fmt: skip
    try:
        content = scipy.io.loadmat(str(path))
    except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
        raise GalleryPermError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in "
            "MATLAB with save(..., '-v7') or use the file shipped with SYSU-MM01"
        ) from None
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... for damaged files
        raise GalleryPermError(f"cannot read {path} as a MATLAB .mat file ({type(e).__name__}: {e})") from None
    parsed = parse_permutations(content, str(path))
    return GalleryPermutations(parsed.perms, parsed.source, hashlib.sha256(path.read_bytes()).hexdigest())


@dataclass(frozen=True)
class OfficialPlan:
    """The drawn side's (identity, camera) groups matched to their permutations, in the MATLAB
    gallery order (camera ascending, then identity ascending)."""

    groups: list[tuple[np.ndarray, np.ndarray]]  # (image indices sorted by path, runs x n permutations)
    runs: int  # the fewest runs any matched group has


def plan_official(
    groups: list[np.ndarray], pids: np.ndarray, cams: np.ndarray, perms: GalleryPermutations
) -> OfficialPlan:
    """Match every group (images of one identity and camera, sorted by path) to its permutations;
    refuse groups the file lacks and permutations that do not fit the group's images."""
    matched = []
    for group in sorted(groups, key=lambda g: (int(cams[g[0]]), int(pids[g[0]]))):
        cam, pid, n = int(cams[group[0]]), int(pids[group[0]]), len(group)
        m = perms.perms.get((cam, pid))
        where = f"{perms.source}: identity {pid} camera {cam}"
        if m is None:
            raise GalleryPermError(f"{where} of the test set has no permutation in the file; is it the "
                                   "rand_perm_cam.mat of this dataset?")  # fmt: skip
        bad = m[(m < 1) | (m > n)]
        if len(bad):
            raise GalleryPermError(f"{where}: permutation index {int(bad[0])} is out of range for its {n} "
                                   f"image(s) (1..{n}); the file and the test images are of different "
                                   "SYSU-MM01 copies (stale or foreign)")  # fmt: skip
        if m.shape[1] != n:
            raise GalleryPermError(f"{where}: the file permutes {m.shape[1]} images, the test set has {n}; "
                                   "the file and the test images are of different SYSU-MM01 copies")  # fmt: skip
        matched.append((group, m))
    return OfficialPlan(matched, min((m.shape[0] for _, m in matched), default=0))


def official_draw(plan: OfficialPlan, run: int, shots: int = 1) -> np.ndarray:
    """Run ``run`` (1-based, MATLAB's ``run_time``): per group the images at the first ``shots``
    entries of the permutation's row ``run`` (all of them when a group has fewer)."""
    chosen = [group[m[run - 1, :shots] - 1] for group, m in plan.groups]
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, np.int64)
