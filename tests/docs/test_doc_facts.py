"""Facts the docs and --help texts state that a test can check cheaply: each was once wrong or stale."""

from __future__ import annotations

import re
from pathlib import Path

from blocks import page_blocks, shell_commands

from kglfr.cli import build_parser

TOP = Path(__file__).resolve().parents[2]
README = (TOP / "README.md").read_text()


def command_help(name: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name].format_help()


def test_readme_gives_a_cpu_torch_line_for_an_ordinary_machine():
    """On PyPI torch==2.13.0 is the CUDA wheel: the constraint alone does not make it the CPU build."""
    assert "pins the CPU build" not in README
    blocks = [b for b in page_blocks(TOP / "README.md") if "pip install" in b.text]
    ci, ordinary = blocks[0], blocks[1]
    assert "download.pytorch.org/whl/cpu" not in ci.text  # CI reaches only its configured indexes
    assert "--index-url https://download.pytorch.org/whl/cpu" in ordinary.text and ordinary.skip
    assert ordinary.text.endswith(ci.text.split(".venv/bin/pip install", 1)[1].split(" && ", 1)[1])


def demo_figures() -> str:
    start, end = README.index("<!-- Demo figures"), README.index("<!-- End of the demo figures. -->")
    return README[start:end]


def test_demo_figures_are_a_table_of_cpus():
    block = demo_figures()
    assert "same kind of CPU only" in block
    header = next(line for line in block.splitlines() if line.startswith("| CPU"))
    assert all(word in header for word in ("flags", "time", "Rank-1", "mAP"))
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 2 and any("AMD EPYC" in r for r in rows) and any("Intel Xeon" in r for r in rows)
    training = (TOP / "docs" / "training.md").read_text()
    assert "same on both" not in training and "same kind of\nCPU only" in training


def test_the_demos_data_line_makes_the_demos_images():
    from kglfr.cli.demo import DEMO_DEFAULTS

    block = next(b for b in page_blocks(TOP / "docs" / "datasets.md") if "the demo's data" in b.text)
    line = next(li for li in block.text.splitlines() if "the demo's data" in li)
    argv = shell_commands(line)[0]
    for flag, key in (("--ids", "ids"), ("--test-ids", "test_ids"), ("--images-per-camera", "images_per_camera"),
                      ("--height", "height"), ("--width", "width")):  # fmt: skip
        assert argv[argv.index(flag) + 1] == str(DEMO_DEFAULTS[key]), flag


def test_gradcam_sheet_is_described_by_its_columns():
    from kglfr.viz import gradcam

    text = (TOP / "docs" / "using-a-model.md").read_text()
    assert "Rows: visible" not in text
    assert "columns: visible image, map, infrared image, map" in text
    assert "One row per pair: visible image, its Grad-CAM, infrared image" in gradcam.__doc__ + str(
        [f.__doc__ for f in vars(gradcam).values() if callable(f)]
    )


def test_demo_help_names_every_protocol_it_reports():
    from kglfr.eval.model_eval import default_protocols

    text = " ".join(command_help("demo").split())
    for protocol in default_protocols("sysu"):
        assert protocol.replace("sysu-", "") + "-search" in text, protocol


def test_train_help_lists_every_shipped_preset():
    from kglfr.train.config import presets

    text = " ".join(command_help("train").split())
    listed = re.search(r"Presets: (.+?); or a YAML file", text).group(1).split(", ")
    assert listed == presets()
    assert "sysu/random_erasing_w05" in listed


INLINE = re.compile(r"`(kglfr [^`]+)`")


def subparser(argv: list[str]):
    """The parser of ``kglfr CMD [SUB]`` and the rest of argv."""
    import argparse

    parser, rest = build_parser(), argv
    while rest:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or rest[0] not in sub.choices:
            break
        parser, rest = sub.choices[rest[0]], rest[1:]
    return parser, rest


def test_options_the_docs_name_in_passing_exist():
    """``kglfr CMD --flag`` in the docs' running text names a real option of that command."""
    wrong, spans = [], 0
    for page in [TOP / "README.md", *sorted((TOP / "docs").glob("*.md"))]:
        for span in INLINE.findall(page.read_text()):
            spans += 1
            parser, rest = subparser(span.split()[1:])
            known = {s for a in parser._actions for s in a.option_strings}
            flags = [t.split("=")[0].strip("[]") for t in rest if t.strip("[").startswith("--")]
            wrong += [f"{page.name}: `{span}`: {f}" for f in flags if f not in known]
    assert spans > 20 and not wrong, wrong


def test_constants_the_docs_quote_are_the_codes():
    from kglfr.data import conventions

    text = (TOP / "docs" / "datasets.md").read_text()
    quoted = re.findall(r"`([A-Z_]+) = (\d+)`", text)
    assert len(quoted) >= 3
    for name, value in quoted:
        assert getattr(conventions, name) == int(value), name


def test_sampler_and_schema_defaults_the_docs_quote():
    from kglfr.train.config import Config

    cfg = Config()
    assert (cfg.data.ids_per_batch, cfg.data.per_modality) == (8, 4)
    assert "8 x\n(4 + 4) by default" in (TOP / "docs" / "datasets.md").read_text()
    assert (cfg.data.height, cfg.data.width) == (288, 144)
    assert "288x144 unless\n`--height/--width`" in (TOP / "docs" / "datasets.md").read_text()
