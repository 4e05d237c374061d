import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from layouts import STORE_HW, no_person_relpath, occluded_store

from kglfr.cli import main
from kglfr.data.records import Modality
from kglfr.data.store import MANIFEST, Store, write_json_atomic
from kglfr.errors import KglfrError, StoreError
from kglfr.keypoints.backends import BatchInfo, build_backend
from kglfr.keypoints.backends.oracle import OracleBackend, read_sidecar
from kglfr.keypoints.build import build_cache, format_summary
from kglfr.keypoints.cache import DEFAULT_HEATMAP_HW, MAX_BYTES_PER_IMAGE, KeypointCache, bytes_per_image
from kglfr.keypoints.heatmaps import peaks, render_gaussians, resize_maps
from kglfr.keypoints.skeleton import PARTS, coco_to_13_keypoints, part_centres


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A store with a complete oracle cache (read-only for the tests that use it)."""
    store = occluded_store(tmp_path_factory.mktemp("kp"))
    backend = build_backend("oracle", root=store.root)
    result = build_cache(store, backend, progress=False)
    return store, result


@pytest.fixture
def fresh(built, tmp_path):
    """A copy of the built store whose cache a test may change."""
    store, _ = built
    shutil.copytree(store.path, tmp_path / "store")
    return Store.open(tmp_path / "store")


# -- the oracle backend -------------------------------------------------------------------------------------


def test_oracle_renders_ground_truth_at_store_scale(built):
    store, _ = built
    gt, sha = read_sidecar(store.root)
    backend = OracleBackend(root=store.root)
    assert sha in backend.identity() and backend.identity().startswith("oracle:")
    idx = np.arange(6)
    info = BatchInfo([store.relpaths[i] for i in idx], store.source_hw[idx], store.root)
    out = backend.predict(store.read_batch(idx), info)
    assert out.heatmaps.shape == (6, 17, 80, 40) and out.heatmaps.dtype == np.float32
    for row, i in enumerate(idx):
        truth = gt[store.relpaths[i]]
        sy, sx = STORE_HW[0] / store.source_hw[i][0], STORE_HW[1] / store.source_hw[i][1]
        np.testing.assert_allclose(out.keypoints[row, :, 0], truth[:, 0] * sx, rtol=1e-5)
        np.testing.assert_allclose(out.keypoints[row, :, 1], truth[:, 1] * sy, rtol=1e-5)
        np.testing.assert_array_equal(out.keypoints[row, :, 2], truth[:, 2] > 0)
        vis = truth[:, 2] > 0
        assert np.all(out.heatmaps[row, ~vis] == 0)
        pk = peaks(out.heatmaps[row, vis], STORE_HW)
        inside = (out.keypoints[row, vis, 0] > 0) & (out.keypoints[row, vis, 0] < STORE_HW[1])
        cell = STORE_HW[1] / 40
        assert np.all(np.abs(pk[inside, 0] - out.keypoints[row, vis, 0][inside]) <= cell / 2 + 1e-3)
        assert np.all(np.abs(pk[inside, 1] - out.keypoints[row, vis, 1][inside]) <= cell / 2 + 1e-3)
        assert np.all(pk[inside, 2] > 0.85)


def test_oracle_without_sidecar_says_it_needs_a_synthetic_dataset(tmp_path):
    with pytest.raises(KglfrError, match=r"oracle backend needs a synthetic dataset \(made by 'kglfr synth'\)"):
        OracleBackend(root=tmp_path).identity()
    with pytest.raises(KglfrError, match="takes no weights"):
        OracleBackend(root=tmp_path, weights="w.pth")


# -- building and reading the cache ------------------------------------------------------------------------


def test_cache_holds_compact_heatmaps_coords_and_parts(built):
    store, result = built
    cache = result.cache
    n = len(store)
    h, w = DEFAULT_HEATMAP_HW
    assert bytes_per_image((h, w)) <= MAX_BYTES_PER_IMAGE
    assert cache.heatmaps.shape == (n, 13, h, w) and cache.heatmaps.dtype == np.uint8
    assert cache.coords.shape == (n, 13, 3) and cache.parts.shape == (n, 11, 2) and cache.part_valid.dtype == bool
    on_disk = sum(p.stat().st_size for p in (store.path / "keypoints" / "oracle").glob("*.*") if p.suffix != ".json")
    assert on_disk == n * bytes_per_image((h, w))

    gt, _ = read_sidecar(store.root)
    idx = np.array([0, 7, n - 1, 3])
    rows = cache.read_batch(idx)
    assert rows["heatmaps"].dtype == np.float32 and rows["heatmaps"].min() >= 0 and rows["heatmaps"].max() <= 1
    backend = OracleBackend(root=store.root)
    info = BatchInfo([store.relpaths[i] for i in idx], store.source_hw[idx], store.root)
    full = backend.predict(store.read_batch(idx), info)
    kp13 = coco_to_13_keypoints(full.keypoints)
    np.testing.assert_allclose(rows["coords"], kp13, atol=1e-4)
    centres, valid = part_centres(kp13)
    np.testing.assert_allclose(rows["parts"], centres, atol=1e-4)
    np.testing.assert_array_equal(rows["part_valid"], valid)
    from kglfr.keypoints.skeleton import coco_to_13_heatmaps

    expected = resize_maps(coco_to_13_heatmaps(full.heatmaps), (h, w))
    assert np.abs(rows["heatmaps"] - expected).max() <= 1 / 255 + 1e-6  # uint8 quantisation only
    for row, i in enumerate(idx):  # chest of a valid torso: 0.75 shoulder centre + 0.25 hip centre
        k = gt[store.relpaths[i]]
        if valid[row, PARTS.index("chest")]:
            s = (k[5, :2] + k[6, :2]) / 2
            hp = (k[11, :2] + k[12, :2]) / 2
            want = (0.75 * s + 0.25 * hp) * [STORE_HW[1] / store.source_hw[i][1], STORE_HW[0] / store.source_hw[i][0]]
            np.testing.assert_allclose(rows["parts"][row, 1], want, rtol=1e-4)


def test_summary_counts_valid_parts_and_images_without_a_person(built):
    store, result = built
    s = result.summary
    assert s == json.loads((store.path / "keypoints" / "oracle" / "summary.json").read_text())
    valid = result.cache.part_valid
    for mod in Modality:
        rows = valid[store.modalities == int(mod)]
        entry = s["modalities"][mod.short]
        assert entry["images"] == len(rows)
        assert [entry["part_valid"][p] for p in PARTS] == rows.sum(0).tolist()
        assert entry["no_person"] == int((~rows.any(1)).sum())
    total = sum(m["no_person"] for m in s["modalities"].values())
    assert total == int(result.cache.no_person.sum())
    assert result.cache.no_person[store.relpaths.index(no_person_relpath(store.relpaths))]
    assert s["modalities"]["ir"]["no_person"] >= 1
    table = format_summary(s)
    assert "no person found" in table and "chest" in table and "vis (" in table and "ir (" in table


def test_up_to_date_cache_is_kept_and_threshold_can_change_on_open(built):
    store, result = built
    stamp = (store.path / "keypoints" / "oracle" / "heatmaps.u8").stat().st_mtime_ns
    again = build_cache(store, OracleBackend(root=store.root), progress=False)
    assert again.computed == 0 and (store.path / "keypoints" / "oracle" / "heatmaps.u8").stat().st_mtime_ns == stamp
    strict = KeypointCache.open(store, threshold=1.5)  # no confidence reaches 1.5: nothing valid
    assert not strict.part_valid.any() and strict.no_person.all()


def test_stale_cache_is_refused(fresh):
    KeypointCache.open(fresh, backend="oracle")
    with pytest.raises(KglfrError, match=r"no keypoint cache of backend 'hrnet' \(it has oracle\); run 'kglfr keyp"):
        KeypointCache.open(fresh, backend="hrnet")
    with pytest.raises(KglfrError, match="made by another version of backend 'oracle'"):
        KeypointCache.open(fresh, identity="oracle:sidecar=0000")
    manifest = json.loads((fresh.path / MANIFEST).read_text())
    manifest["fingerprint"] = "0" * 40 + ":288x144"  # as if prepared again from changed sources
    write_json_atomic(fresh.path / MANIFEST, manifest)
    with pytest.raises(KglfrError, match=r"is stale: the store was prepared again .* re-run 'kglfr keypoints"):
        KeypointCache.open(Store.open(fresh.path, check_sources=False))


def test_damaged_cache_is_refused(fresh):
    folder = fresh.path / "keypoints" / "oracle"
    data = bytearray((folder / "heatmaps.u8").read_bytes())
    data[100] ^= 0xFF
    (folder / "heatmaps.u8").write_bytes(bytes(data))
    KeypointCache.open(fresh, verify=False)  # same size: only the checksum tells
    with pytest.raises(KglfrError, match="damaged .checksum mismatch.; re-run 'kglfr keypoints"):
        KeypointCache.open(fresh)
    with open(folder / "coords.f32", "r+b") as f:
        f.truncate(10)
    with pytest.raises(KglfrError, match="damaged .a data file is missing or of the wrong size"):
        KeypointCache.open(fresh)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(
        KglfrError, match="damaged or of another version; re-run .kglfr keypoints --store .* --backend oracle."
    ):
        KeypointCache.open(fresh)
    shutil.rmtree(folder)
    with pytest.raises(KglfrError, match="has no keypoint cache; run 'kglfr keypoints --store"):
        KeypointCache.open(fresh)


def _damage(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_cache_is_rebuilt_not_reported_up_to_date(fresh, built, caplog, capsys):
    _, full = built
    folder = fresh.path / "keypoints" / "oracle"
    good = {f: (folder / f).read_bytes() for f in ("heatmaps.u8", "coords.f32", "valid.u8")}
    _damage(folder / "heatmaps.u8")
    with pytest.raises(KglfrError, match="checksum mismatch"):
        KeypointCache.open(fresh)
    with caplog.at_level(logging.WARNING, logger="kglfr.keypoints.build"):
        result = build_cache(fresh, OracleBackend(root=fresh.root), progress=False)
    assert "is damaged (checksum mismatch); rebuilding it" in caplog.text
    assert result.computed == len(fresh) and not result.resumed
    KeypointCache.open(fresh)  # the checksum matches again
    assert {f: (folder / f).read_bytes() for f in good} == good  # the same backend writes the same bytes
    # the command says so too: not "up to date"
    _damage(folder / "heatmaps.u8")
    assert main(["keypoints", "--store", str(fresh.path), "--backend", "oracle", "--no-progress"]) == 0
    assert "written" in capsys.readouterr().out
    KeypointCache.open(fresh)


def test_damaged_cache_is_rebuilt_not_rethresholded(fresh, built):
    """A new --threshold on a damaged cache must not write a fresh checksum over the damage."""
    _, full = built
    folder = fresh.path / "keypoints" / "oracle"
    _damage(folder / "coords.f32", 4 * 3 * 13 * 5 + 8)  # the confidence of image 5's head keypoint
    result = build_cache(fresh, OracleBackend(root=fresh.root), threshold=0.5, progress=False)
    assert result.computed == len(fresh)  # rebuilt by the backend
    cache = KeypointCache.open(fresh)
    assert cache.threshold == 0.5
    np.testing.assert_array_equal(cache.coords, full.cache.coords)
    np.testing.assert_array_equal(cache.heatmaps, full.cache.heatmaps)
    np.testing.assert_array_equal(cache.part_valid, part_centres(np.asarray(full.cache.coords), 0.5)[1])


def test_read_batch_keeps_the_requested_order(built):
    _, result = built
    cache = result.cache
    idx = np.array([9, 2, 9, 0, len(cache) - 1, 5])  # unsorted, with a repeat
    for raw in (False, True):
        rows = cache.read_batch(idx, raw=raw)
        np.testing.assert_array_equal(rows["coords"], cache.coords[idx])
        np.testing.assert_array_equal(rows["parts"], cache.parts[idx])
        np.testing.assert_array_equal(rows["part_valid"], cache.part_valid[idx])
        assert rows["part_valid"].dtype == bool
        if raw:
            np.testing.assert_array_equal(rows["heatmaps"], cache.heatmaps[idx])
            np.testing.assert_array_equal(rows["scales"], cache.scales[idx])
        else:
            for row, i in enumerate(idx):
                np.testing.assert_array_equal(rows["heatmaps"][row], cache.read_batch([i])["heatmaps"][0])
    assert cache.read_batch([])["coords"].shape == (0, 13, 3)


def test_interrupted_run_resumes_and_matches_a_full_run(fresh, built):
    _, full = built
    shutil.rmtree(fresh.path / "keypoints")
    backend = OracleBackend(root=fresh.root)
    first = build_cache(fresh, backend, batch_size=4, max_images=9, progress=False, commit_seconds=0)
    assert first.cache is None and first.computed == 9
    assert int(np.fromfile(fresh.path / "keypoints" / ".oracle.partial" / "done.u8", np.uint8).sum()) == 9
    with pytest.raises(KglfrError, match=r"incomplete \(an interrupted run\)"):
        KeypointCache.open(fresh)

    class Broken(OracleBackend):
        calls = 0

        def predict(self, images, info):
            Broken.calls += 1
            if Broken.calls == 3:
                raise KeyboardInterrupt
            return super().predict(images, info)

    with pytest.raises(KeyboardInterrupt):
        build_cache(fresh, Broken(root=fresh.root), batch_size=4, progress=False, commit_seconds=1e9)
    # the two batches before the interruption were committed on the way out
    assert int(np.fromfile(fresh.path / "keypoints" / ".oracle.partial" / "done.u8", np.uint8).sum()) == 9 + 8
    last = build_cache(fresh, backend, batch_size=4, progress=False)
    assert last.resumed and last.computed == len(fresh) - 17
    np.testing.assert_array_equal(last.cache.part_valid, full.cache.part_valid)
    for name in ("scales", "coords", "parts"):  # batch size changes float rounding, nothing more
        np.testing.assert_allclose(getattr(last.cache, name), getattr(full.cache, name), rtol=1e-5, atol=1e-5)
    assert np.abs(last.cache.heatmaps.astype(int) - full.cache.heatmaps).max() <= 1
    assert last.summary == full.summary


def test_new_threshold_recomputes_validity_without_the_backend(fresh):
    class Refuses(OracleBackend):
        def predict(self, images, info):
            raise AssertionError("the backend must not run")

    result = build_cache(fresh, Refuses(root=fresh.root), threshold=1.5, progress=False)
    assert result.computed == 0 and result.cache.threshold == 1.5 and result.cache.no_person.all()
    assert sum(m["no_person"] for m in result.summary["modalities"].values()) == len(fresh)
    again = build_cache(fresh, OracleBackend(root=fresh.root), progress=False)  # back to 0.3
    assert again.computed == 0 and again.cache.part_valid.any()
    KeypointCache.open(fresh)  # checksum of the rewritten validity matches


def test_other_backend_options_rebuild_the_cache(fresh):
    result = build_cache(fresh, OracleBackend(root=fresh.root, sigma=3.0), heatmap_size=(24, 12), progress=False)
    assert result.computed == len(fresh) and not result.resumed
    cache = KeypointCache.open(fresh)
    assert cache.heatmap_size == (24, 12) and "sigma=3" in cache.identity
    with pytest.raises(KglfrError, match="bytes per image"):
        build_cache(fresh, OracleBackend(root=fresh.root), heatmap_size=(36, 18), progress=False)


def test_gaussian_renderer_peaks_at_cell_containing_point():
    maps = render_gaussians(np.array([[[70.0, 100.0], [3.0, 3.0]]]), np.array([[True, False]]), (288, 144), (80, 40))
    assert maps.shape == (1, 2, 80, 40) and maps[0, 1].max() == 0
    i, j = np.unravel_index(maps[0, 0].argmax(), (80, 40))
    assert (i, j) == (int(100 / 3.6), int(70 / 3.6))


# -- the command ------------------------------------------------------------------------------------------


def test_cli_writes_the_cache_then_finds_it_up_to_date(built, tmp_path, capsys):
    store, _ = built
    shutil.copytree(store.path, tmp_path / "s", ignore=shutil.ignore_patterns("keypoints"))
    assert main(["keypoints", "--store", str(tmp_path / "s"), "--backend", "oracle", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "written" in out and "no person found" in out and "left_shin" in out
    KeypointCache.open(tmp_path / "s", backend="oracle")
    assert main(["keypoints", "--store", str(tmp_path / "s"), "--backend", "oracle", "--no-progress"]) == 0
    assert "up to date" in capsys.readouterr().out


def _error(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1, err
    return err


def test_cli_bad_input_gives_one_line(built, tmp_path, capsys):
    store, _ = built
    plain = tmp_path / "plain"
    shutil.copytree(store.path, plain, ignore=shutil.ignore_patterns("keypoints"))
    manifest = json.loads((plain / MANIFEST).read_text())
    manifest["root"] = str(tmp_path / "elsewhere")  # sources gone: no sidecar beside them
    write_json_atomic(plain / MANIFEST, manifest)
    err = _error(["keypoints", "--store", str(plain), "--backend", "oracle"], capsys)
    assert "needs a synthetic dataset (made by 'kglfr synth')" in err

    err = _error(["keypoints", "--store", str(plain), "--backend", "nosuch"], capsys)
    assert "unknown pose backend 'nosuch'; choose one of " in err and "oracle" in err
    try:
        import torch

        if not torch.cuda.is_available():
            err = _error(["keypoints", "--store", str(plain), "--backend", "oracle", "--device", "cuda"], capsys)
            assert "no CUDA device is available" in err
    except ImportError:
        pass
    err = _error(["keypoints", "--store", str(plain), "--backend", "oracle", "--weights", str(tmp_path / "w.pth")],
                 capsys)  # fmt: skip
    assert f"weights file {tmp_path / 'w.pth'} does not exist" in err
    (tmp_path / "w.pth").write_bytes(b"weights")
    err = _error(["keypoints", "--store", str(plain), "--backend", "oracle", "--weights", str(tmp_path / "w.pth")],
                 capsys)  # fmt: skip
    assert "the oracle backend reads ground truth and takes no --weights" in err

    empty = tmp_path / "empty"
    shutil.copytree(store.path, empty, ignore=shutil.ignore_patterns("keypoints"))
    manifest = json.loads((empty / MANIFEST).read_text())
    manifest["count"] = 0
    manifest["records"] = {k: [] for k in manifest["records"]}
    manifest["trial_splits"] = {k: [] for k in manifest["trial_splits"]}
    write_json_atomic(empty / MANIFEST, manifest)
    (empty / "images.u8").write_bytes(b"")
    err = _error(["keypoints", "--store", str(empty), "--backend", "oracle"], capsys)
    assert "holds no images" in err

    (plain / "images.u8").unlink()
    err = _error(["keypoints", "--store", str(plain), "--backend", "oracle"], capsys)
    assert "images.u8" in err and "'kglfr prepare --force'" in err


def test_empty_store_raises_store_error(built, tmp_path):
    store, _ = built
    empty = Store(tmp_path, {**store.manifest, "count": 0, "records": {k: [] for k in store.manifest["records"]}},
                  np.zeros((0, *STORE_HW, 3), np.uint8))  # fmt: skip
    with pytest.raises(StoreError, match="holds no images"):
        build_cache(empty, OracleBackend(root=store.root), progress=False)


class _OtherBackend(OracleBackend):
    name = "other"


def test_caches_of_several_backends_are_kept_side_by_side(fresh):
    oracle = fresh.path / "keypoints" / "oracle"
    stamp = (oracle / "heatmaps.u8").stat().st_mtime_ns
    result = build_cache(fresh, _OtherBackend(root=fresh.root), progress=False)
    assert result.cache.backend == "other" and result.cache.path == fresh.path / "keypoints" / "other"
    assert (oracle / "heatmaps.u8").stat().st_mtime_ns == stamp  # not replaced
    assert KeypointCache.open(fresh, backend="oracle").backend == "oracle"
    assert KeypointCache.open(fresh, backend="other").backend == "other"
    other_done = (fresh.path / "keypoints" / "other" / "meta.json").stat().st_mtime_ns
    os.utime(oracle / "meta.json", ns=(other_done - 10**9, other_done - 10**9))
    assert KeypointCache.open(fresh).backend == "other"  # the most recent
    os.utime(oracle / "meta.json", ns=(other_done + 10**9, other_done + 10**9))  # oracle finished last
    assert KeypointCache.open(fresh).backend == "oracle"
    again = build_cache(fresh, OracleBackend(root=fresh.root), progress=False)
    assert again.computed == 0


def test_incomplete_cache_is_not_picked_over_a_complete_one(fresh):
    build_cache(fresh, _OtherBackend(root=fresh.root), max_images=3, progress=False)
    assert KeypointCache.open(fresh).backend == "oracle"
    with pytest.raises(KglfrError, match="is incomplete"):
        KeypointCache.open(fresh, backend="other")


def test_old_single_folder_cache_is_read_in_place_then_moved(fresh):
    root = fresh.path / "keypoints"
    for p in (root / "oracle").iterdir():
        os.replace(p, root / p.name)
    (root / "oracle").rmdir()  # the layout before caches were kept per backend
    assert KeypointCache.open(fresh).path == root
    assert KeypointCache.open(fresh, backend="oracle").path == root
    with pytest.raises(KglfrError, match="no keypoint cache of backend 'other' .it has oracle."):
        KeypointCache.open(fresh, backend="other")
    result = build_cache(fresh, OracleBackend(root=fresh.root), progress=False)
    assert result.computed == 0 and result.cache.path == root / "oracle"
    assert not (root / "meta.json").exists()


def test_full_disk_refuses_the_cache_with_the_space_needed_and_leaves_no_files(built, tmp_path, monkeypatch):
    import shutil as _shutil
    from collections import namedtuple

    store, _ = built
    shutil.copytree(store.path, tmp_path / "s", ignore=shutil.ignore_patterns("keypoints"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(_shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(KglfrError, match=r"not enough disk space for the keypoint cache of \d+ images .* needs"):
        build_cache(Store.open(tmp_path / "s"), OracleBackend(root=store.root), progress=False)
    assert not any((tmp_path / "s" / "keypoints").iterdir())


def test_fallocate_enospc_on_the_cache_is_a_clear_error(built, tmp_path, monkeypatch):
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    store, _ = built
    shutil.copytree(store.path, tmp_path / "s", ignore=shutil.ignore_patterns("keypoints"))
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    code = main(["keypoints", "--store", str(tmp_path / "s"), "--backend", "oracle", "--no-progress"])
    assert code == 2 and not any((tmp_path / "s" / "keypoints").iterdir())


@pytest.mark.parametrize("value", ["5", "nan", "-0.1", "inf"])
def test_cli_threshold_out_of_range_is_refused(built, capsys, value):
    store, _ = built
    with pytest.raises(SystemExit) as exc:
        main(["keypoints", "--store", str(store.path), "--backend", "oracle", "--threshold", value])
    assert exc.value.code == 2 and "--threshold: must be a number between 0 and 1" in capsys.readouterr().err


def test_non_finite_threshold_is_refused_by_build_cache(fresh):
    with pytest.raises(KglfrError, match="threshold must be a number from 0 to 1, got nan"):
        build_cache(fresh, OracleBackend(root=fresh.root), threshold=float("nan"), progress=False)


# -- a rebuild never touches the cache a reader holds (issue 25) --------------------------------------------


def test_failed_forced_rebuild_keeps_the_complete_cache(fresh):
    """keypoints --force that dies half-way leaves the old, complete cache as it was, and in use."""
    before = KeypointCache.open(fresh, backend="oracle")
    good = np.array(before.heatmaps)

    class Dies(OracleBackend):
        def predict(self, images, info):
            raise KglfrError("cannot read source image x.jpg")

    with pytest.raises(KglfrError, match="cannot read source image"):
        build_cache(fresh, Dies(root=fresh.root), force=True, batch_size=4, progress=False)
    after = KeypointCache.open(fresh, backend="oracle")  # still complete, checksum verified
    np.testing.assert_array_equal(after.heatmaps, good)
    assert KeypointCache.open(fresh).backend == "oracle"
    again = build_cache(fresh, OracleBackend(root=fresh.root), force=True, progress=False)
    assert again.computed == len(fresh) and not (fresh.path / "keypoints" / ".oracle.partial").exists()


def test_forced_rebuild_of_another_size_leaves_an_open_cache_unchanged(fresh):
    """A reader's memory maps (a running training) keep the old data: the new files are renamed into
    place, the old ones are never truncated (which killed the reader with SIGBUS)."""
    reader = KeypointCache.open(fresh, backend="oracle")
    before = {k: np.array(v) for k, v in reader.read_batch(np.arange(len(fresh)), raw=True).items()}
    build_cache(fresh, OracleBackend(root=fresh.root, sigma=3.0), heatmap_size=(24, 12), force=True, progress=False)
    after = reader.read_batch(np.arange(len(fresh)), raw=True)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v)
    second = KeypointCache.open(fresh)
    assert second.heatmap_size == (24, 12)
    valid = np.array(second.part_valid)
    result = build_cache(fresh, OracleBackend(root=fresh.root, sigma=3.0), heatmap_size=(24, 12), threshold=1.5,
                         progress=False)  # fmt: skip
    assert result.computed == 0 and not result.cache.part_valid.any()  # re-thresholded in a copy
    np.testing.assert_array_equal(second.part_valid, valid)


def test_a_swap_interrupted_between_its_renames_is_finished(fresh):
    kp = fresh.path / "keypoints"
    os.replace(kp / "oracle", kp / ".oracle.old")  # killed after moving the old cache aside, before the new one
    result = build_cache(fresh, OracleBackend(root=fresh.root), progress=False)
    assert result.computed == 0 and not (kp / ".oracle.old").exists()
    KeypointCache.open(fresh, backend="oracle")
