"""``synthesize``: write a whole synthetic dataset (images, split files, keypoint sidecar, README)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kglfr import __version__
from kglfr.data.synth.body import STREAM_IMAGE, rng_for, sample_identity
from kglfr.data.synth.layouts import GENERATED, LAYOUTS, Plan, PlannedImage, plan_regdb, plan_sysu, readme
from kglfr.data.synth.render import render
from kglfr.data.synth.sidecar import SIDECAR_NAME, write_keypoints_sidecar
from kglfr.errors import KglfrError

README_NAME = "README.txt"
MIN_IDS = 4
# Per layout: identities, images per camera, image height and width. Real SYSU-MM01 images vary
# around 128x64 to 300x150; RegDB's are 128x64.
DEFAULTS = {
    "sysu": {"ids": 40, "images_per_camera": 4, "height": 288, "width": 144},
    "regdb": {"ids": 40, "images_per_camera": 4, "height": 128, "width": 64},
}
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 92]


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    layout: str
    ids: int
    images: int
    seconds: float
    seed: int
    train_ids: tuple[int, ...]
    test_ids: tuple[int, ...]  # RegDB: trial 1

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"wrote {self.images} images of {self.ids} identities ({self.layout} layout, seed {self.seed}) "
            f"to {self.root} in {self.seconds:.1f} s ({rate:.0f} images/s)"
        )


def _check(layout, ids, images_per_camera, height, width, occlusion, camera_dropout, size_jitter, seed, test_ids):
    """Raise ``KglfrError`` naming the first bad parameter."""
    if layout not in LAYOUTS:
        raise KglfrError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if ids < MIN_IDS:
        raise KglfrError(f"ids must be at least {MIN_IDS} (half of them train, half test), got {ids}")
    if layout == "sysu" and ids > 9999:
        raise KglfrError(f"ids must be at most 9999 for the SYSU layout (4-digit folders), got {ids}")
    if not 2 <= test_ids <= ids - 2:
        raise KglfrError(f"test_ids must be in [2, ids - 2] = [2, {ids - 2}], got {test_ids}")
    if images_per_camera < 1:
        raise KglfrError(f"images_per_camera must be at least 1, got {images_per_camera}")
    if height < 32 or width < 16:
        raise KglfrError(f"height and width must be at least 32 and 16, got {height}x{width}")
    if not 0.0 <= occlusion <= 1.0:
        raise KglfrError(f"occlusion must be a probability in [0, 1], got {occlusion}")
    if not 0.0 <= camera_dropout < 1.0:
        raise KglfrError(f"camera_dropout must be in [0, 1), got {camera_dropout}")
    if not 0.0 <= size_jitter < 0.5:
        raise KglfrError(f"size_jitter must be in [0, 0.5), got {size_jitter}")
    if seed < 0:
        raise KglfrError(f"seed must be a non-negative integer, got {seed}")


def is_synth_output(folder: Path) -> bool:
    """Whether ``folder`` holds what ``synthesize`` wrote (its README names ``kglfr synth``)."""
    readme_path = folder / README_NAME
    return readme_path.is_file() and "kglfr synth" in readme_path.read_text(errors="replace")


def _prepare_out(out: Path, force: bool) -> None:
    """Create ``out``, or with ``force`` empty an earlier synthetic dataset in it; never touch other files."""
    if out.exists() and not out.is_dir():
        raise KglfrError(f"out {out} is a file, not a folder")
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not any(out.iterdir()):
        return
    if not is_synth_output(out):
        raise KglfrError(f"out {out} is not empty and was not written by 'kglfr synth'; choose an empty or new folder")
    if not force:
        raise KglfrError(
            f"out {out} holds an earlier synthetic dataset; pass force=True to replace it, or choose a new folder"
        )
    for name in (*GENERATED, SIDECAR_NAME, README_NAME):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _draw_identity(root: Path, seed: int, ident, images: list[PlannedImage], opts: dict) -> dict[str, np.ndarray]:
    keypoints = {}
    for im in images:
        rng = rng_for(seed, STREAM_IMAGE, im.pid, im.camera, im.index)
        shrink = 1.0 - opts["size_jitter"] * rng.random()
        h, w = max(32, round(opts["height"] * shrink)), max(16, round(opts["width"] * shrink))
        rgb, kp = render(ident, im.style, im.pose, rng, h, w, opts["occlusion"])
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        ext = Path(im.relpath).suffix
        ok, data = cv2.imencode(ext, bgr, _JPEG if ext == ".jpg" else [])
        if not ok:  # pragma: no cover - OpenCV always encodes these
            raise KglfrError(f"could not encode {im.relpath}")
        path = root / im.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())
        keypoints[im.relpath] = kp
    return keypoints


def synthesize(
    out: str | Path,
    layout: str = "sysu",
    ids: int | None = None,
    seed: int = 0,
    images_per_camera: int | None = None,
    height: int | None = None,
    width: int | None = None,
    *,
    occlusion: float = 0.15,
    camera_dropout: float = 0.1,
    size_jitter: float = 0.0,
    test_ids: int | None = None,
    force: bool = False,
    progress: bool = False,
    per_camera_counts: Mapping[tuple[bool, int], int] | None = None,
) -> SynthSummary:
    """Write a synthetic dataset in the ``layout`` ("sysu" or "regdb") folder structure to ``out``.

    ``ids``, ``images_per_camera``, ``height`` and ``width`` default per layout (``DEFAULTS``).
    ``occlusion`` is the share of images with a rectangle covering part of the body,
    ``camera_dropout`` (SYSU) the chance that a camera never saw an identity, ``size_jitter`` shrinks
    each image by a random factor in [1 - size_jitter, 1] (0: every image is height x width).
    ``test_ids`` is how many identities are held out for testing (default half; the real SYSU-MM01
    holds out 96 of 491, so more training identities is closer to it). ``per_camera_counts`` (SYSU)
    maps (is a test identity, camera) to its images per camera, in place of ``images_per_camera``
    (``benchmarks/full_scale.py`` gives SYSU-MM01's real counts). ``force`` replaces an earlier
    synthetic dataset in ``out``; a folder holding anything else is never written to. The bytes
    written depend only on the options and ``seed`` (each image has its own generator, keyed by seed,
    identity, camera and index), so an image's bytes do not depend on how many identities are drawn.
    Raises ``KglfrError`` naming the bad parameter.
    """
    ids, images_per_camera, height, width, test_ids = _with_defaults(
        layout, ids, images_per_camera, height, width, test_ids
    )
    _check(layout, ids, images_per_camera, height, width, occlusion, camera_dropout, size_jitter, seed, test_ids)
    t0 = time.perf_counter()
    root = Path(out).expanduser()
    _prepare_out(root, force)

    identities = [sample_identity(seed, pid) for pid in range(1, ids + 1)]
    plan = _plan(layout, seed, identities, images_per_camera, camera_dropout, test_ids, per_camera_counts)
    # The options as 'kglfr synth' flags, in this order, for the README's command line.
    options = {"ids": ids, "seed": seed, "images-per-camera": images_per_camera, "height": height, "width": width}
    options |= {"occlusion": occlusion, "size-jitter": size_jitter, "test-ids": test_ids}
    if layout == "sysu":
        options["camera-dropout"] = camera_dropout
    (root / README_NAME).write_text(readme(layout, options, len(plan.images), __version__))

    opts = {"height": height, "width": width, "occlusion": occlusion, "size_jitter": size_jitter}
    keypoints = _draw_all(root, seed, identities, plan, opts, progress)
    _write_text_files(root, plan.text_files)
    write_keypoints_sidecar(root, keypoints)
    seconds = time.perf_counter() - t0
    return SynthSummary(root, layout, ids, len(plan.images), seconds, seed, tuple(plan.train_ids), tuple(plan.test_ids))


def _with_defaults(layout, ids, images_per_camera, height, width, test_ids) -> tuple[int, int, int, int, int]:
    """The options left None replaced by the layout's ``DEFAULTS`` (``test_ids``: half the identities)."""
    d = DEFAULTS.get(layout, DEFAULTS["sysu"])
    ids = d["ids"] if ids is None else int(ids)
    images_per_camera = d["images_per_camera"] if images_per_camera is None else int(images_per_camera)
    height = d["height"] if height is None else int(height)
    width = d["width"] if width is None else int(width)
    test_ids = ids // 2 if test_ids is None else int(test_ids)
    return ids, images_per_camera, height, width, test_ids


def _plan(
    layout: str, seed: int, identities: list, images_per_camera: int, camera_dropout: float, test_ids: int, counts=None
) -> Plan:
    if layout == "sysu":
        return plan_sysu(seed, identities, images_per_camera, camera_dropout, test_ids, counts)
    return plan_regdb(seed, identities, images_per_camera, test_ids)


def _draw_all(root: Path, seed: int, identities: list, plan: Plan, opts: dict, progress: bool) -> dict[str, np.ndarray]:
    """Draw and write every planned image, identity by identity; returns each image's keypoints."""
    per_id = plan.by_identity()
    keypoints: dict[str, np.ndarray] = {}
    for ident in tqdm(identities, desc="synth", unit="id", file=sys.stderr, disable=not progress):
        keypoints.update(_draw_identity(root, seed, ident, per_id[ident.pid], opts))
    return keypoints


def _write_text_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
