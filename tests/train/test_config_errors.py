"""Config files and overrides that used to end in a YAML or OmegaConf traceback or an internal message
(issue 25): each is one line naming the file or override and what to do."""

import pytest
import yaml

from kglfr.cli import main
from kglfr.train import config as C

DEMO = str(C.PRESET_DIR / "demo.yaml")


def _file(tmp_path, body: bytes):
    f = tmp_path / "run.yaml"
    f.write_bytes(f"_base_: {DEMO}\n".encode() + body)
    return f


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    f = _file(tmp_path, b"train:\n  epochs: 3 # caf\xe9\n")
    with pytest.raises(C.ConfigError, match=r"is not UTF-8 text \(byte 0xe9 on line 3\); save it as UTF-8"):
        C.load_config(f)


def test_a_utf8_bom_is_read_and_utf16_is_named(tmp_path):
    f = tmp_path / "bom.yaml"
    f.write_bytes(b"\xef\xbb\xbf" + f"_base_: {DEMO}\ntrain:\n  epochs: 3\n".encode())
    assert C.load_config(f).train.epochs == 3
    f.write_bytes(f"_base_: {DEMO}\n".encode("utf-16"))
    with pytest.raises(C.ConfigError, match="is UTF-16 .* save it as UTF-8"):
        C.load_config(f)


def test_a_yaml_error_names_its_line(tmp_path):
    f = _file(tmp_path, b"train:\n  epochs: [3\n  seed: 1\n")
    with pytest.raises(C.ConfigError, match=r"is not valid YAML at line \d+, column \d+"):
        C.load_config(f)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"data:\n  store: ${oc.env:KGLFR_TEST_UNSET_VAR}\n",
         "data.store reads the environment variable KGLFR_TEST_UNSET_VAR, which is not set"),
        (b"data:\n  store: ${nope.key}\n", r"data.store refers to \$\{nope.key\}, which is not a config key"),
    ],
)  # fmt: skip
def test_an_unresolvable_interpolation_in_a_file_is_one_line(tmp_path, monkeypatch, body, message):
    monkeypatch.delenv("KGLFR_TEST_UNSET_VAR", raising=False)
    with pytest.raises(C.ConfigError, match=message):
        C.load_config(_file(tmp_path, body))


def test_an_unresolvable_interpolation_in_an_override_names_it(monkeypatch):
    monkeypatch.delenv("KGLFR_TEST_UNSET_VAR", raising=False)
    with pytest.raises(C.ConfigError, match=r"^override 'data.store=\$\{oc.env:KGLFR_TEST_UNSET_VAR\}': data.store "
                                            "reads the environment variable"):  # fmt: skip
        C.load_config("demo", ["data.store=${oc.env:KGLFR_TEST_UNSET_VAR}"])


def test_interpolations_are_resolved_when_loaded_and_saved_resolved(tmp_path, monkeypatch):
    """The saved config.yaml holds the value, not ${oc.env:VAR}: a resume reads what the run started on."""
    monkeypatch.setenv("KGLFR_TEST_STORE", "/data/store-a")
    cfg = C.load_config(_file(tmp_path, b"data:\n  store: ${oc.env:KGLFR_TEST_STORE}\n"), ["data.width=${data.height}"])
    monkeypatch.setenv("KGLFR_TEST_STORE", "/data/store-b")
    assert cfg.data.store == "/data/store-a" and cfg.data.width == cfg.data.height
    saved = yaml.safe_load(C.to_yaml(cfg))
    assert saved["data"]["store"] == "/data/store-a" and "${" not in C.to_yaml(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=resnet18", "is a section, not a value"),
        ("optim.milestones=5", r"optim.milestones must be a list, e.g. optim.milestones=\[40,70\]"),
    ],
)
def test_values_of_the_wrong_shape_do_not_show_omegaconf_internals(override, message):
    with pytest.raises(C.ConfigError, match=message) as e:
        C.load_config("demo", [override] if "." in override else {"model": "resnet18"})
    assert "Merge error" not in str(e.value) and "AnyNode" not in str(e.value)


def test_a_section_given_a_value_in_a_file(tmp_path):
    with pytest.raises(C.ConfigError, match=r"model is a section, not a value \(model: 'resnet18'\)"):
        C.load_config(_file(tmp_path, b"model: resnet18\n"))


def test_an_override_without_a_section_says_how_overrides_look(capsys, tmp_path):
    out = str(tmp_path / "r")
    assert main(["train", "--config", "demo", "--out", out, "model=resnet18"]) == 2
    assert "set its keys as model.KEY=value (e.g. model.arch=resnet18)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # after an option, argparse sees it as an unknown argument
        main(["train", "--config", "demo", "data.store=x", "--out", out, "model=resnet18"])
    err = capsys.readouterr().err
    assert "overrides are section.key=value" in err and "Merge error" not in err


def test_a_damaged_saved_config_is_one_line_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  store: [x\n")
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.yaml is not valid YAML at line" in err[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [("train.epochs=abc", "must be a whole number, got 'abc'"), ("optim.lr=x", "must be a number, got 'x'"),
     ("train.tensorboard=maybe", "must be true or false, got 'maybe'")],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_worded_without_omegaconf_types(override, message):
    with pytest.raises(C.ConfigError, match=message) as e:
        C.load_config("demo", [override])
    assert "could not be converted" not in str(e.value) and "Integer" not in str(e.value)


def test_a_folder_given_as_the_config_is_named_a_folder(tmp_path):
    with pytest.raises(C.ConfigError, match="is a folder; give a YAML file or a preset name"):
        C.load_config(tmp_path)


def test_a_file_may_refer_to_a_key_an_override_sets(tmp_path):
    f = _file(tmp_path, b"eval:\n  gallery_perm: ${data.store}/perm.mat\n")
    assert C.load_config(f, ["data.store=/s"]).eval.gallery_perm == "/s/perm.mat"
    with pytest.raises(C.ConfigError, match=r"eval.gallery_perm refers to a key that is not set \(data.store\)"):
        C.load_config(f)
