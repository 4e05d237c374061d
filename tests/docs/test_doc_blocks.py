"""Every fenced block of README.md and docs/*.md runs: shell blocks command by command on a tiny world
(``world.py``), Python blocks as code, YAML blocks parsed. A block that cannot run here carries
``<!-- docs-test: skip (reason) -->`` right before its fence; ``-ra`` lists those skips with their reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from blocks import SHELL, TOP, Block, all_blocks, page_blocks, shell_commands
from layouts import free_port
from world import TRAIN_OVERRIDES, block_folder, build_world, cwd, own

from kglfr.cli import main

BLOCKS = all_blocks()
TRAINS = {"train", "ablation", "demo", "compare"}  # commands that take key=value overrides and train
WRITES = {"keypoints": ("--store",), "train": ("--resume",)}  # paths a command writes besides --out


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    return build_world(tmp_path_factory.mktemp("docs") / "world")


@pytest.fixture(scope="session")
def namespaces() -> dict:
    return {}  # one Python namespace a page: its blocks run in order, as a reader would type them


def run_kglfr(argv: list[str]) -> None:
    """One ``kglfr`` command of a block, in this process, in the block's folder."""
    sub = argv[0]
    for flag in ("--out", *WRITES.get(sub, ())):
        if flag in argv:
            own(Path(argv[argv.index(flag) + 1].rstrip("/")), copy=flag != "--out")
    if sub in TRAINS and "--resume" not in argv:
        argv = [*argv, *TRAIN_OVERRIDES]
    if sub == "keypoints" and "hrnet" in argv and "--weights" not in argv:  # the fetched weights: the world's
        argv = [*argv, "--weights", "pose_hrnet_w32_256x192.pth"]
    rc = main(argv)
    assert rc == 0, f"kglfr {' '.join(argv)}: exit {rc}"


def run_torchrun(argv: list[str]) -> None:
    """``torchrun ... -m kglfr train ...``: two CPU processes (gloo) on the tiny world."""
    k = argv.index("-m")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--master_port", str(free_port()), *argv[:k], "-m", "kglfr",
           *argv[k + 2 :], *TRAIN_OVERRIDES]  # fmt: skip
    own(Path(cmd[cmd.index("--out") + 1]), copy=False)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


RUNNERS = {"kglfr": run_kglfr, "torchrun": run_torchrun}


def missing(argv: list[str]) -> str | None:
    """Why a command cannot run on this machine (a model the set-up line fetches), else None."""
    if argv[:1] == ["kglfr"] and "blazepose" in argv:
        from kglfr.errors import KglfrError
        from kglfr.keypoints.weights import blazepose_model_path

        try:
            blazepose_model_path()
        except KglfrError:
            return "the BlazePose model is not fetched here: kglfr keypoints --fetch-model (CI's set-up line does)"
    return None


def run_shell(block: Block) -> None:
    commands = shell_commands(block.text)
    reason = next((r for r in map(missing, commands) if r), None)
    if reason:
        pytest.skip(f"{block.id}: {reason}")
    for argv in commands:
        runner = RUNNERS.get(argv[0])
        assert runner, (
            f"{block.id}: no runner for {argv[0]!r}; run it in tests/docs/test_doc_blocks.py or mark the block "
            "<!-- docs-test: skip (reason) -->"
        )
        runner(argv[1:])


def doc_names(folder: Path) -> dict:
    """Names the docs' Python blocks use without defining them: images a reader has at hand."""
    import cv2

    images = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(folder.glob("gallery/*/*.jpg"))[:4]]
    return {"gallery_images": images, "calibration_images": images, "other_images": images}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, request, tmp_path):
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    if block.lang in ("yaml", "yml"):
        yaml.safe_load(block.text)
        return
    assert block.lang in SHELL | {"python"}, (
        f"{block.id}: a ```{block.lang} block: say how to run it here or mark it <!-- docs-test: skip (reason) -->"
    )
    world = request.getfixturevalue("world")
    folder = block_folder(world, tmp_path / "block")
    with cwd(folder):
        if block.lang == "python":
            namespaces = request.getfixturevalue("namespaces")
            ns = namespaces.setdefault(block.page, {"__name__": "docs", **doc_names(folder)})
            exec(compile(block.text, block.id, "exec"), ns)
        else:
            run_shell(block)


def test_markers_and_fences_are_well_formed():
    """A marker stands right before a fence, with a reason; every page's fences close."""
    for page in {b.page for b in BLOCKS}:
        text = page.read_text()
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if "docs-test" in line:
                assert "docs-test: skip (" in line and line.rstrip().endswith(") -->"), f"{page}:{i + 1}: {line}"
                assert lines[i + 1].startswith("```"), f"{page}:{i + 1}: a marker stands right before a fence"
        assert len(page_blocks(page)) == text.count("\n```") // 2 + text.startswith("```")


def test_shell_lines_become_commands():
    text = "kglfr a --x 1 [--y Y] [--z [W]]   # note\nkglfr b --store STORE \\\n    --root ~/data/D --device cuda\n"
    assert shell_commands(text) == [
        ["kglfr", "a", "--x", "1"],
        ["kglfr", "b", "--store", "stores/sysu", "--root", "home/data/D", "--device", "cpu"],
    ]


def test_extract_trial_picks_that_trials_split(world):
    """``kglfr extract --trial T``: RegDB's trials hold different test identities (the world's t1, t2)."""
    from kglfr.eval.features import load_features

    t1, t2 = (load_features(world / f"t{t}.npz") for t in (1, 2))
    assert set(t1.pids.tolist()) != set(t2.pids.tolist())


def test_run_folder_and_features_file_hold_what_the_docs_list(world):
    """docs/training.md's run-folder table and docs/evaluation.md's features-file keys, on the world's files."""
    training = (TOP / "docs" / "training.md").read_text()
    table = training[training.index("## The run folder") :].split("\n\n")[1]
    names = [n for cell in re.findall(r"^\| ([^|]+?) \|", table, flags=re.M) for n in re.findall(r"`([^`]+)`", cell)]
    assert {"config.yaml", "checkpoint.pt", "summary.json", "report.md"} <= set(names)
    run = world / "runs" / "sysu-kglfr"
    for name in names:
        if name.startswith("results/"):
            assert sorted(p.name for p in (run / "results").glob("*.json")), name
        else:
            assert (run / name).exists(), name
    assert "results/sysu-all_bn.json" in [f"results/{p.name}" for p in (run / "results").iterdir()]
    evaluation = (TOP / "docs" / "evaluation.md").read_text()
    keys = re.findall(r"^\| `(\w+)` \|", evaluation[evaluation.index("## Features file") :], flags=re.M)
    import numpy as np

    with np.load(world / "feats.npz") as f:
        assert set(keys) <= set(f.files) and {"feats", "pids", "cams", "paths"} <= set(keys)


SAME_AS_DOCS = "each command runs in a block of docs/"  # or in the test module that block's marker names
NAMED = ("--config", "--backend", "--protocol", "--trial", "--dataset")  # flags whose value makes another command


def signature(line: str) -> tuple:
    """A kglfr command's subcommands, its flags (optional ones included) and the values of :data:`NAMED`."""
    tokens = [t.strip("[]") for t in line.split("#", 1)[0].split()]
    subs = tuple(t for t in tokens[1:3] if not t.startswith("-") and "=" not in t and "/" not in t)
    flags = frozenset(t for t in tokens if t.startswith("--"))
    named = frozenset((t, tokens[i + 1]) for i, t in enumerate(tokens[:-1]) if t in NAMED)
    return subs, flags, named


def runs_somewhere(block: Block) -> bool:
    """Run here, or skipped for a test module that runs the same command (``tests/x/test_y.py runs it``)."""
    if not block.skip:
        return True
    named = re.search(r"(tests/\S+\.py) runs it", block.skip)
    return bool(named) and (TOP / named.group(1)).is_file()


def test_blocks_skipped_as_repeats_are_repeats():
    """A block marked as repeating docs/ holds no command that a run block of docs/ does not."""
    ran = [signature(li) for b in BLOCKS if b.page.parent.name == "docs" and runs_somewhere(b)
           for li in b.text.splitlines() if li.startswith("kglfr ")]  # fmt: skip
    repeats = [b for b in BLOCKS if b.skip and SAME_AS_DOCS in b.skip]
    assert repeats
    for block in repeats:
        for line in (li for li in block.text.splitlines() if li.startswith("kglfr ")):
            subs, flags, named = signature(line)
            assert any(s == subs and flags <= f and named <= n for s, f, n in ran), f"{block.id}: {line}"
