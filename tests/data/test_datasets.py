import logging

import pytest
from layouts import make_custom, make_llcm, make_regdb, make_sysu, write_image

from kglfr.cli import main
from kglfr.data.datasets import dataset_names, load_dataset
from kglfr.data.records import TEST, TRAIN, Modality
from kglfr.errors import DatasetError


def test_registry_lists_all_readers():
    assert dataset_names() == ["custom", "llcm", "regdb", "sysu"]
    with pytest.raises(DatasetError, match="choose one of custom, llcm, regdb, sysu"):
        load_dataset("market", "/tmp")


def test_sysu_reads_official_layout(tmp_path):
    ds = load_dataset("sysu", make_sysu(tmp_path))
    train, test = ds.split(TRAIN), ds.split(TEST)
    assert {r.pid for r in train} == {1, 2, 3, 4}  # train + val
    assert {r.pid for r in test} == {5, 6}
    assert len(ds.records) == 6 * 6 * 2
    r = next(r for r in ds.records if r.relpath == "cam3/0005/0002.jpg")
    assert (r.pid, r.camera, r.modality, r.split) == (5, 3, Modality.INFRARED, TEST)
    assert {r.camera for r in ds.records if r.modality == Modality.VISIBLE} == {1, 2, 4, 5}
    assert [r.relpath for r in ds.records] == sorted(r.relpath for r in ds.records)


def test_sysu_missing_split_file_names_it(tmp_path):
    root = make_sysu(tmp_path)
    (root / "exp" / "test_id.txt").unlink()
    with pytest.raises(DatasetError, match=r"SYSU-MM01 layout: missing exp/test_id.txt"):
        load_dataset("sysu", root)


def test_sysu_malformed_split_file_names_file_and_line(tmp_path):
    root = make_sysu(tmp_path)
    (root / "exp" / "val_id.txt").write_text("4\n7,x\n")
    with pytest.raises(DatasetError, match=r"val_id.txt:2: 'x' is not an identity number"):
        load_dataset("sysu", root)
    (root / "exp" / "val_id.txt").write_text("")
    with pytest.raises(DatasetError, match=r"val_id.txt: split file is empty"):
        load_dataset("sysu", root)


def test_regdb_reads_every_trial(tmp_path):
    ds = load_dataset("regdb", make_regdb(tmp_path))
    assert ds.trials == list(range(1, 11))
    assert len(ds.records) == 6 * 2 * 2
    assert {r.camera for r in ds.records if r.modality == Modality.VISIBLE} == {1}
    assert {r.camera for r in ds.records if r.modality == Modality.INFRARED} == {2}
    t2 = ds.with_trial(2)
    assert [r.relpath for r in t2.records] == [r.relpath for r in ds.records]
    assert len({frozenset(r.pid for r in ds.with_trial(t).split(TEST)) for t in ds.trials}) > 1
    for t in ds.trials:
        tr = ds.with_trial(t)
        assert len({r.pid for r in tr.split(TRAIN)}) == 3 and len({r.pid for r in tr.split(TEST)}) == 3
        assert not {r.pid for r in tr.split(TRAIN)} & {r.pid for r in tr.split(TEST)}
    with pytest.raises(DatasetError, match="no trial 11"):
        ds.with_trial(11)


def test_regdb_malformed_line(tmp_path):
    root = make_regdb(tmp_path)
    path = root / "idx" / "test_thermal_3.txt"
    path.write_text(path.read_text() + "Thermal/1/oops.bmp\n")
    with pytest.raises(DatasetError, match=r"test_thermal_3.txt:\d+: expected 'relative/path label'"):
        load_dataset("regdb", root)


def test_llcm_reads_release_layout(tmp_path):
    ds = load_dataset("llcm", make_llcm(tmp_path))
    r = next(r for r in ds.records if r.relpath == "nir/0004/0004_c03_s100_f30_nir.jpg")
    assert (r.pid, r.camera, r.modality, r.split) == (4, 3, Modality.INFRARED, TEST)
    assert len(ds.split(TRAIN)) == 3 * 4


def test_custom_split_is_seeded_by_identity(tmp_path):
    root = make_custom(tmp_path)
    a = load_dataset("custom", root, split_seed=1)
    b = load_dataset("custom", root, split_seed=1)
    c = load_dataset("custom", root, split_seed=2)
    ids = lambda ds, s: {r.pid for r in ds.split(s)}  # noqa: E731
    assert ids(a, TEST) == ids(b, TEST) and len(ids(a, TEST)) == 4
    assert not ids(a, TRAIN) & ids(a, TEST)
    assert ids(a, TEST) != ids(c, TEST)
    cams = {r.relpath: r.camera for r in a.records}
    assert cams["visible/002/c2_2_b.png"] == 2 and cams["infrared/002/7_2_a.jpg"] == 7


def test_custom_layout_has_one_parser_for_prepare_extract_and_search(tmp_path):
    """docs/datasets.md: a bare 0001.jpg is camera 0, for prepare as for extract and search."""
    from kglfr.data.datasets.base import parse_layout

    root = make_custom(tmp_path)
    write_image(root / "infrared" / "001" / "0001.jpg", 1)
    write_image(root / "infrared" / "002" / "cam3_x.jpg", 2)
    ds = load_dataset("custom", root)
    assert all((r.pid, r.camera) == parse_layout(r.relpath) for r in ds.records)
    cams = {r.relpath: r.camera for r in ds.records}
    assert cams["infrared/001/0001.jpg"] == 0 and cams["infrared/002/cam3_x.jpg"] == 3


def test_custom_bare_names_in_both_modalities_are_one_camera(tmp_path):
    root = make_custom(tmp_path)
    write_image(root / "infrared" / "001" / "0001.jpg", 1)
    write_image(root / "visible" / "001" / "0001.jpg", 1)
    with pytest.raises(DatasetError, match=r"cameras \[0\] appear in both.*0001.jpg, is camera 0.*3_0001.jpg"):
        load_dataset("custom", root)


def test_train_identity_in_one_modality_is_skipped_with_warning(tmp_path, caplog):
    root = make_sysu(tmp_path)
    for cam in (3, 6):
        for f in (root / f"cam{cam}" / "0002").iterdir():
            f.unlink()
    with caplog.at_level(logging.WARNING):
        load_dataset("sysu", root)
    assert "1 training identities have images in one modality only and are skipped: 2" in caplog.text


def test_test_identity_without_queries_is_an_error(tmp_path):
    root = make_sysu(tmp_path)
    for cam in (3, 6):
        for f in (root / f"cam{cam}" / "0006").iterdir():
            f.unlink()
    with pytest.raises(DatasetError, match="test identity 6 has images in one modality only"):
        load_dataset("sysu", root)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "does not match the SYSU-MM01 layout: missing cam1"),
    ],
)
def test_cli_bad_root_is_one_line(tmp_path, capsys, setup, message):
    rc = main(["prepare", "--dataset", "sysu", "--root", str(setup(tmp_path)), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


# -- split files are checked, not taken on trust -------------------------------------------------------------


def test_sysu_identity_in_train_and_test_is_an_error(tmp_path):
    root = make_sysu(tmp_path)
    (root / "exp" / "test_id.txt").write_text("5,6,2\n")
    with pytest.raises(DatasetError, match=r"train_id.txt and .*test_id.txt both list identity 2"):
        load_dataset("sysu", root)


def test_sysu_identity_folders_in_no_split_file_are_reported(tmp_path, caplog):
    root = make_sysu(tmp_path)
    (root / "exp" / "test_id.txt").write_text("5\n")  # a cut list: identity 6 is on disk but in no split
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("sysu", root)
    assert "1 identity folders are in no split file" in caplog.text and "left out: 6" in caplog.text
    assert 6 not in {r.pid for r in ds.records}


def test_sysu_layout_error_names_every_expected_path(tmp_path):
    root = make_sysu(tmp_path)
    (root / "exp" / "test_id.txt").unlink()
    with pytest.raises(DatasetError, match=r"expected .*exp/val_id.txt, exp/test_id.txt\)"):
        load_dataset("sysu", root)


def test_regdb_missing_trial_file_is_an_error_naming_it(tmp_path):
    root = make_regdb(tmp_path)
    (root / "idx" / "test_thermal_4.txt").unlink()
    with pytest.raises(DatasetError, match=r"RegDB trial 4 is incomplete: split file .*test_thermal_4.txt is missing"):
        load_dataset("regdb", root)


def test_regdb_path_in_two_split_files_is_an_error(tmp_path):
    root = make_regdb(tmp_path)
    train = (root / "idx" / "train_visible_2.txt").read_text().splitlines()
    test = root / "idx" / "test_visible_2.txt"
    test.write_text(test.read_text() + train[0] + "\n")
    with pytest.raises(DatasetError, match=r"test_visible_2.txt: Visible/\S+ is also listed in .*train_visible_2.txt"):
        load_dataset("regdb", root)


def test_llcm_path_in_two_split_files_is_an_error(tmp_path):
    root = make_llcm(tmp_path)
    first = (root / "idx" / "train_vis.txt").read_text().splitlines()[0]
    test = root / "idx" / "test_vis.txt"
    test.write_text(test.read_text() + first + "\n")
    with pytest.raises(DatasetError, match=r"test_vis.txt:\d+: vis/\S+ is already listed in .*train_vis.txt:1"):
        load_dataset("llcm", root)
