"""The ``kglfr`` command itself: --help stays fast (no torch), and the names it lists for --help
without importing the heavy modules agree with those modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_parser_does_not_import_torch_or_the_heavy_modules():
    code = (
        "import sys, kglfr.cli; kglfr.cli.build_parser(); "
        "heavy = [m for m in ('torch', 'cv2', 'kglfr.eval', 'kglfr.data.store', 'kglfr.keypoints.cache', "
        "'kglfr.keypoints.build') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})  # fmt: skip
    assert out.stdout.strip() == "", f"imported on --help: {out.stdout.strip()}"


def test_help_names_agree_with_the_modules():
    from kglfr.cli import evaluate, keypoints, synth
    from kglfr.data.synth import DEFAULTS
    from kglfr.eval.metrics import DISTANCES
    from kglfr.eval.protocols import PROTOCOLS
    from kglfr.keypoints.backends import backend_names
    from kglfr.keypoints.skeleton import VALID_THRESHOLD

    assert synth.HELP_DEFAULTS == DEFAULTS
    assert evaluate.DISTANCES == DISTANCES and list(evaluate.PROTOCOL_HELP) == list(PROTOCOLS)
    assert sorted(keypoints.BACKEND_NAMES) == sorted(backend_names())
    assert keypoints.VALID_THRESHOLD == VALID_THRESHOLD


def test_overrides_may_stand_anywhere_among_the_options():
    from kglfr.cli import build_parser, parse_args

    parser = build_parser()
    args = parse_args(
        parser,
        ["train", "--config", "regdb/kglfr", "--out", "R", "data.store=S", "--trial", "all", "model.arch=resnet18"],
    )
    assert args.overrides == ["data.store=S", "model.arch=resnet18"] and args.trial == "all" and args.out == "R"
    args = parse_args(parser, ["demo", "train.amp=off", "--seed", "1", "train.epochs=2"])
    assert args.overrides == ["train.amp=off", "train.epochs=2"] and args.seed == 1
    for argv in ("train --config demo --out R --bogus", "evaluate --features f.npz a.b=c"):
        with pytest.raises(SystemExit) as exc:
            parse_args(parser, argv.split())
        assert exc.value.code == 2


def test_ctrl_c_while_the_interpreter_exits_is_exit_130_without_a_traceback(tmp_path):
    """A SIGINT that lands in an atexit hook, after the command finished, as a Ctrl-C late in a run does."""
    code = (
        "import atexit, os, signal, sys\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))\n"
        "sys.argv = ['kglfr', 'train', '--resume', sys.argv[1]]\n"
        "from kglfr.cli import entry\n"
        "entry()\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none")], capture_output=True, text=True,
                         cwd=ROOT)  # fmt: skip
    assert run.returncode == 130, run.stderr
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr
    assert run.stderr.count("error:") == 1  # the command's own one line


def test_an_unwritable_output_is_one_line_with_advice(tmp_path):
    import errno

    from kglfr.cli import describe_os_error

    line = describe_os_error(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro" / "x.npz")))
    assert line == f"Permission denied: {tmp_path / 'ro' / 'x.npz'}; check its permissions or choose another location"
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/x")).endswith(
        "the file system is read-only; choose another location"
    )
