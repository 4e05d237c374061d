"""``kglfr keypoints`` runs the pose network on the ORIGINAL images (source root + relpath) resized to
its input, and expresses the results in the store image's frame; the store is locked meanwhile."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil

import numpy as np
import pytest

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.images import decode_image
from kglfr.data.store import Store, prepare_store, resize
from kglfr.data.synth import synthesize
from kglfr.errors import KglfrError
from kglfr.io import LockedError, folder_lock
from kglfr.keypoints.backends import build_backend
from kglfr.keypoints.build import build_cache
from kglfr.keypoints.cache import KeypointCache
from kglfr.keypoints.skeleton import coco_to_13_keypoints


@pytest.fixture
def small(tmp_path) -> Store:
    """A 64 x 32 store of ~128 x 64 synthetic sources (so store images are smaller than the pose input)."""
    synthesize(tmp_path / "synth", layout="sysu", ids=4, seed=0, images_per_camera=1, height=128, width=64)
    store, _ = prepare_store(load_dataset("sysu", tmp_path / "synth"), tmp_path / "store", height=64, width=32,
                             progress=False)  # fmt: skip
    return store


def test_hrnet_sees_the_original_image_resized_to_its_input(small):
    assert build_backend("hrnet", random_init=True).pose_input_hw((64, 32)) == (320, 160)  # the default
    backend = build_backend("hrnet", random_init=True, batch_size=64, input_size=(128, 64))  # small: quick
    cache = build_cache(small, backend, batch_size=64, progress=False).cache
    assert cache.meta["pose_input"] == [128, 64]
    idx = np.arange(len(small))
    originals = np.stack([resize(decode_image(small.root / r), 128, 64) for r in small.relpaths])
    kp = backend.predict(originals).keypoints.copy()
    kp[..., 0] *= 32 / 64  # input pixels -> store pixels
    kp[..., 1] *= 64 / 128
    np.testing.assert_allclose(cache.read_batch(idx)["coords"], coco_to_13_keypoints(kp, "best"), atol=1e-4)
    assert (cache.coords[..., 0] <= 32).all() and (cache.coords[..., 1] <= 64).all()
    upscaled = backend.predict(small.read_batch(idx)).keypoints  # what the cache held before: store images
    assert not np.allclose(cache.read_batch(idx)["coords"], coco_to_13_keypoints(upscaled, "best"), atol=0.5)


def test_cache_from_store_images_is_refused_as_stale_then_rebuilt(small):
    oracle = build_backend("oracle", root=small.root)
    first = build_cache(small, oracle, progress=False)
    meta_path = first.cache.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["pose_input"]  # what a cache made before this change holds
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(KglfrError, match=r"is stale: it was made from the store's resized images .*"
                       r"re-run 'kglfr keypoints --store .* --backend oracle'"):  # fmt: skip
        KeypointCache.open(small)
    again = build_cache(small, oracle, progress=False)
    assert again.computed == len(small)
    np.testing.assert_array_equal(again.cache.heatmaps, first.cache.heatmaps)  # the oracle: same data


def test_missing_changed_or_moved_source_images_are_one_line(small, capsys):
    backend = build_backend("hrnet", random_init=True, input_size=(64, 32))
    victim = small.root / small.relpaths[3]
    victim.unlink()
    with pytest.raises(KglfrError, match=f"cannot read source image {victim} .*restore it, or prepare the store"):
        build_cache(small, backend, progress=False)
    shutil.copy(small.root / small.relpaths[0], victim)  # another file in its place
    with pytest.raises(KglfrError, match=f"source image {victim} changed since store .* was prepared"):
        build_cache(small, backend, progress=False)
    shutil.move(small.root, small.root.with_name("moved"))
    with pytest.raises(KglfrError, match="the source images of store .* are not at .*put the dataset back"):
        build_cache(small, backend, progress=False)


def _hold_lock(folder, ready, release) -> None:
    with folder_lock(folder, "store"):
        ready.set()
        release.wait(60)


def test_keypoints_refuse_a_store_another_process_holds(small, capsys):
    oracle = build_backend("oracle", root=small.root)
    build_cache(small, oracle, progress=False)
    before = (small.path / "keypoints" / "oracle" / "heatmaps.u8").read_bytes()
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(small.path), ready, release))
    proc.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockedError, match=f"store {small.path} is in use .*pid {proc.pid}"):
            build_cache(small, oracle, force=True, progress=False)
        assert main(["keypoints", "--store", str(small.path), "--backend", "oracle", "--force", "--no-progress"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(err) == 1 and f"pid {proc.pid}" in err[0]
    finally:
        release.set()
        proc.join(30)
    assert (small.path / "keypoints" / "oracle" / "heatmaps.u8").read_bytes() == before
    assert build_cache(small, oracle, force=True, progress=False).computed == len(small)  # free again


def test_unreadable_hrnet_weights_name_the_file(tmp_path):
    path = tmp_path / "pose_hrnet_w32_256x192.pth"
    path.write_bytes(b"hello world" * 10)  # torch.load says only: KeyError '101'
    with pytest.raises(KglfrError, match=f"cannot read pose weights {path} \\(110 bytes\\): not a PyTorch "
                       "checkpoint, or a truncated one") as e:  # fmt: skip
        build_backend("hrnet", weights=path)
    assert "\n" not in str(e.value)
