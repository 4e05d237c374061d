import json
import os

import numpy as np
import pytest
from layouts import make_custom, make_regdb, make_sysu

from kglfr.cli import main
from kglfr.data.datasets import load_dataset
from kglfr.data.records import TEST, TRAIN, Modality
from kglfr.data.store import Store, decode_image, prepare_store, resize
from kglfr.errors import DiskFullError, StoreError


@pytest.fixture
def sysu(tmp_path):
    return load_dataset("sysu", make_sysu(tmp_path / "sysu"))


def test_prepare_stores_resized_pixels_and_metadata(sysu, tmp_path):
    store, bad = prepare_store(sysu, tmp_path / "store", height=32, width=16, progress=False)
    assert bad == [] and len(store) == len(sysu.records)
    assert store.images.shape == (len(sysu.records), 32, 16, 3) and store.images.dtype == np.uint8
    for i in (0, 17, len(store) - 1):
        r = sysu.records[i]
        assert store.relpaths[i] == r.relpath and store.pids[i] == r.pid and store.cameras[i] == r.camera
        expected = resize(decode_image(r.path(sysu.root)), 32, 16)
        np.testing.assert_array_equal(store.images[i], expected)
    assert store.source_hw[0].tolist() == [40, 20]
    assert store.records() == sysu.records


def test_read_batch_keeps_requested_order(sysu, tmp_path):
    store, _ = prepare_store(sysu, tmp_path / "store", height=16, width=8, progress=False)
    idx = [5, 0, 5, 3]
    batch = store.read_batch(idx)
    for row, i in enumerate(idx):
        np.testing.assert_array_equal(batch[row], store.images[i])


def test_indices_by_split_and_modality(sysu, tmp_path):
    store, _ = prepare_store(sysu, tmp_path / "store", height=16, width=8, progress=False)
    ir_test = store.indices(TEST, modality=Modality.INFRARED)
    assert len(ir_test) == 2 * 2 * 2 and set(store.cameras[ir_test]) == {3, 6}
    assert set(store.pids[store.indices(TRAIN)]) == {1, 2, 3, 4}


def test_up_to_date_store_is_reused_and_changed_dataset_refused(sysu, tmp_path):
    out = tmp_path / "store"
    prepare_store(sysu, out, height=16, width=8, progress=False)
    stamp = (out / "images.u8").stat().st_mtime_ns
    prepare_store(sysu, out, height=16, width=8, progress=False)
    assert (out / "images.u8").stat().st_mtime_ns == stamp  # not rebuilt
    victim = sysu.root / sysu.records[3].relpath
    victim.write_bytes(victim.read_bytes())
    os.utime(victim, ns=(1, 1))
    with pytest.raises(StoreError, match=r"is stale: 1 source images changed .* re-run 'kglfr prepare' with the same"):
        Store.open(out)


def test_changed_split_updates_the_manifest_and_keeps_pixels(tmp_path):
    root = make_custom(tmp_path / "custom")
    out = tmp_path / "store"
    half = load_dataset("custom", root, test_fraction=0.5)
    prepare_store(half, out, height=16, width=8, progress=False)
    (out / "keypoints").mkdir()
    (out / "keypoints" / "meta.json").write_text("{}")
    stamp = (out / "images.u8").stat().st_mtime_ns
    quarter = load_dataset("custom", root, test_fraction=0.25)
    store, _ = prepare_store(quarter, out, height=16, width=8, progress=False)
    assert store.records() == quarter.records
    assert len(store.indices(TEST)) < len(Store.open(out).indices(TRAIN))
    assert (out / "images.u8").stat().st_mtime_ns == stamp and (out / "keypoints" / "meta.json").exists()


def test_regdb_trial_choice_reaches_the_store(tmp_path):
    ds = load_dataset("regdb", make_regdb(tmp_path / "regdb"))
    out = tmp_path / "store"
    prepare_store(ds, out, height=16, width=8, progress=False)
    store, _ = prepare_store(ds.with_trial(3), out, height=16, width=8, progress=False)
    assert store.manifest["trial"] == 3 and store.records() == ds.with_trial(3).records


def test_store_of_another_dataset_is_not_replaced_without_force(sysu, tmp_path):
    out = tmp_path / "store"
    prepare_store(sysu, out, height=16, width=8, progress=False)
    (out / "keypoints").mkdir()
    regdb = load_dataset("regdb", make_regdb(tmp_path / "regdb"))
    with pytest.raises(StoreError, match="is a store of sysu at .* pass force=True to replace it"):
        prepare_store(regdb, out, height=16, width=8, progress=False)
    assert Store.open(out).dataset == "sysu"
    store, _ = prepare_store(regdb, out, height=16, width=8, force=True, progress=False)
    assert store.dataset == "regdb" and not (tmp_path / "store.old").exists()
    assert (out / "keypoints").is_dir()  # carried over; the cache checks its own key when opened


def test_corrupt_and_truncated_images_are_all_named(sysu, tmp_path):
    a, b = sysu.records[2], sysu.records[9]
    (sysu.root / a.relpath).write_bytes(b"not an image")
    data = (sysu.root / b.relpath).read_bytes()
    (sysu.root / b.relpath).write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="2 unreadable image") as exc:
        prepare_store(sysu, tmp_path / "store", height=16, width=8, progress=False)
    assert a.relpath in str(exc.value) and b.relpath in str(exc.value)
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()

    store, bad = prepare_store(sysu, tmp_path / "store", height=16, width=8, skip_bad=True, progress=False)
    assert sorted(x.relpath for x in bad) == sorted([a.relpath, b.relpath])
    assert len(store) == len(sysu.records) - 2 and a.relpath not in store.relpaths
    good = sysu.records[10]
    i = store.relpaths.index(good.relpath)
    np.testing.assert_array_equal(store.images[i], resize(decode_image(good.path(sysu.root)), 16, 8))


def test_regdb_store_serves_every_trial(tmp_path):
    ds = load_dataset("regdb", make_regdb(tmp_path / "regdb"))
    store, _ = prepare_store(ds, tmp_path / "store", height=16, width=8, progress=False)
    assert store.trials == list(range(1, 11))
    for t in (1, 7):
        assert store.records(t) == ds.with_trial(t).records


def test_damaged_store_is_refused(sysu, tmp_path):
    out = tmp_path / "store"
    prepare_store(sysu, out, height=16, width=8, progress=False)
    with open(out / "images.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(StoreError, match="damaged"):
        Store.open(out)
    (out / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match="damaged"):
        Store.open(out)
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="another format"):
        Store.open(out)
    manifest.write_text(json.dumps({"format": "kglfr-store", "version": 1, "height": 16}))
    with pytest.raises(StoreError, match=r"damaged \(no dataset, root, trial, width, count"):
        Store.open(out)


def test_non_store_output_folder_is_refused(sysu, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="exists and is not a kglfr store"):
        prepare_store(sysu, out, height=16, width=8, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_prepare_reports_bad_files_in_one_line(sysu, tmp_path, capsys):
    (sysu.root / sysu.records[0].relpath).write_bytes(b"\xff\xd8broken")
    args = [
        "prepare",
        "--dataset",
        "sysu",
        "--root",
        str(sysu.root),
        "--out",
        str(tmp_path / "s"),
        "--height",
        "16",
        "--width",
        "16",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert sysu.records[0].relpath in errors[0] and "--skip-bad" in errors[0]
    assert main([*args, "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert f"skipped {sysu.records[0].relpath}" in captured.err
    assert "1 skipped" in captured.out


def test_cli_bad_sizes_and_unwritable_out_are_one_line(sysu, tmp_path, capsys):
    base = ["prepare", "--dataset", "sysu", "--root", str(sysu.root)]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--out", str(tmp_path / "s"), "--height", "0"])
    assert exc.value.code == 2 and "--height: must be at least 1" in capsys.readouterr().err
    for option, value in (("--height", "100000"), ("--width", "15")):
        with pytest.raises(SystemExit) as exc:
            main([*base, "--out", str(tmp_path / "s"), option, value])
        assert exc.value.code == 2 and f"{option}: must be between 16 and 2048, got {value}" in capsys.readouterr().err
    assert not (tmp_path / "s.partial").exists()
    with pytest.raises(StoreError, match="image height 100000 is out of range"):
        prepare_store(sysu, tmp_path / "s", height=100000, width=100000, progress=False)
    (tmp_path / "file").write_text("")
    assert main([*base, "--out", str(tmp_path / "file" / "store"), "--height", "16", "--width", "16"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith(f"kglfr prepare: error: Not a directory: {tmp_path / 'file' / 'store'}")


def _full_disk(monkeypatch, free: int = 1000) -> None:
    import shutil as _shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(_shutil, "disk_usage", lambda path: usage(10**6, 10**6 - free, free))


def test_full_disk_is_refused_with_the_space_needed_and_no_partial_left(sysu, tmp_path, monkeypatch):
    _full_disk(monkeypatch)
    out = tmp_path / "store"
    with pytest.raises(DiskFullError, match=r"not enough disk space .* needs .* free"):
        prepare_store(sysu, out, height=32, width=16, progress=False)
    assert not out.exists() and not (tmp_path / "store.partial").exists()
    code = main(["prepare", "--dataset", "sysu", "--root", str(sysu.root), "--out", str(out),
                 "--height", "32", "--width", "16"])  # fmt: skip
    assert code == 2 and not (tmp_path / "store.partial").exists()


def test_fallocate_failing_with_enospc_is_a_clear_error(sysu, tmp_path, monkeypatch):
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(DiskFullError, match=r"not enough disk space for store .*store \(\d+ images of 32x16\)"):
        prepare_store(sysu, tmp_path / "store", height=32, width=16, progress=False)
    assert not (tmp_path / "store.partial").exists()


def test_failure_while_decoding_removes_the_partial_store(sysu, tmp_path, monkeypatch):
    import kglfr.data.store as store_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_decode_into", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_store(sysu, tmp_path / "store", height=16, width=8, progress=False)
    assert not (tmp_path / "store.partial").exists()


def test_keypoint_cache_left_in_partial_by_a_crash_is_recovered(sysu, tmp_path):
    out = tmp_path / "store"
    prepare_store(sysu, out, height=16, width=8, progress=False)
    partial = tmp_path / "store.partial"
    (partial / "keypoints").mkdir(parents=True)  # as _swap_in leaves it when killed after its first move
    (partial / "keypoints" / "meta.json").write_text("{}")
    prepare_store(sysu, out, height=16, width=8, force=True, progress=False)
    assert (out / "keypoints" / "meta.json").read_text() == "{}" and not partial.exists()


def test_stale_store_message_says_plain_prepare(sysu, tmp_path):
    prepare_store(sysu, tmp_path / "store", height=16, width=8, progress=False)
    (sysu.root / sysu.records[0].relpath).write_bytes((sysu.root / sysu.records[1].relpath).read_bytes() + b"x")
    with pytest.raises(StoreError, match="stale") as e:
        Store.open(tmp_path / "store")
    assert "--force" not in str(e.value)


@pytest.mark.parametrize("column", ["records.pid", "records.mtime_ns", "trial_splits.1"])
def test_manifest_columns_shorter_than_count_are_refused(sysu, tmp_path, column):
    prepare_store(sysu, tmp_path / "store", height=16, width=8, progress=False)
    path = tmp_path / "store" / "manifest.json"
    manifest = json.loads(path.read_text())
    group, key = column.split(".")
    manifest[group][key] = manifest[group][key][:-1]
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=rf"damaged \(count is {len(sysu.records)} but {column} has"):
        Store.open(tmp_path / "store")


def _hold_lock(folder, ready, release) -> None:
    from kglfr.io import folder_lock

    with folder_lock(folder, "store"):
        ready.set()
        release.wait(60)


@pytest.fixture
def other_process_holds(tmp_path):
    """Start a second process holding the lock of a folder; yields (start(folder) -> pid)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = []

    def start(folder) -> int:
        ready, release = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_hold_lock, args=(str(folder), ready, release))
        proc.start()
        assert ready.wait(60)
        procs.append((proc, release))
        return proc.pid

    yield start
    for proc, release in procs:
        release.set()
        proc.join(30)


def test_prepare_refuses_a_store_another_process_holds(sysu, tmp_path, other_process_holds, capsys):
    from kglfr.io import LockedError

    out = tmp_path / "store"
    prepare_store(sysu, out, height=32, width=16, progress=False)
    before = (out / "images.u8").read_bytes()
    pid = other_process_holds(out)
    with pytest.raises(LockedError, match=f"store {out} is in use by another kglfr process \\(pid {pid}\\)"):
        prepare_store(sysu, out, height=32, width=16, force=True, progress=False)
    assert (out / "images.u8").read_bytes() == before and not (tmp_path / "store.partial").exists()
    args = ["prepare", "--dataset", "sysu", "--root", str(sysu.root), "--out", str(out), "--height", "32",
            "--width", "16", "--force"]  # fmt: skip
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and f"pid {pid}" in err[0]


def test_prepare_keeps_the_lock_across_the_swap(sysu, tmp_path):
    """The lock file moves with the new store: after a rebuild the store is still one locked folder."""
    from kglfr.io import LOCK_FILE

    out = tmp_path / "store"
    prepare_store(sysu, out, height=32, width=16, progress=False)
    prepare_store(sysu, out, height=32, width=16, force=True, progress=False)
    assert (out / LOCK_FILE).is_file() and not (tmp_path / "store.old").exists()
    assert Store.open(out).size == (32, 16)


def test_failed_prepare_into_a_new_folder_leaves_nothing(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    (root / "cam1" / "0001" / "0001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(StoreError, match="pass skip_bad=True"):
        prepare_store(load_dataset("sysu", root), tmp_path / "new", height=32, width=16, progress=False)
    assert not (tmp_path / "new").exists()


def test_non_integer_pid_in_the_manifest_is_one_line(sysu, tmp_path, capsys):
    out = tmp_path / "store"
    prepare_store(sysu, out, height=32, width=16, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["records"]["pid"][0] = "x7"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="manifest.json is damaged .*x7.*kglfr prepare --force"):
        Store.open(out)


def test_damaged_manifest_says_so_and_force_rebuilds(sysu, tmp_path, capsys):
    out = tmp_path / "store"
    prepare_store(sysu, out, height=32, width=16, progress=False)
    (out / "manifest.json").write_text("{ truncated")
    with pytest.raises(StoreError, match=r"manifest.json is damaged \(.*\); pass force=True to rebuild") as e:
        prepare_store(sysu, out, height=32, width=16, progress=False)
    assert "None" not in str(e.value)
    args = ["prepare", "--dataset", "sysu", "--root", str(sysu.root), "--out", str(out), "--height", "32",
            "--width", "16"]  # fmt: skip
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "is damaged" in err[0] and err[0].endswith("pass --force to rebuild the store")
    assert main([*args, "--force"]) == 0 and len(Store.open(out)) == len(sysu.records)


def test_missing_pixels_advice_does_not_loop(sysu, tmp_path, capsys):
    """After images.u8 is removed, a plain prepare keeps the store (it is up to date by its manifest):
    the advice names --force, and following it repairs the store."""
    out = tmp_path / "store"
    prepare_store(sysu, out, height=32, width=16, progress=False)
    (out / "images.u8").unlink()
    with pytest.raises(StoreError, match="rebuild it with 'kglfr prepare --force'") as e:
        Store.open(out)
    args = ["prepare", "--dataset", "sysu", "--root", str(sysu.root), "--out", str(out), "--height", "32",
            "--width", "16"]  # fmt: skip
    assert main(args) == 2  # the plain command fails the same way: only --force helps, as the message says
    assert "'kglfr prepare --force'" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert Store.open(out).images.shape[0] == len(sysu.records) and "--force" in str(e.value)
