"""The ``kglfr`` command. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import re
import signal
import sys

from kglfr.errors import KglfrError

# Subcommand modules, in the order ``kglfr --help`` lists them.
COMMANDS = (
    "demo",
    "synth",
    "prepare",
    "keypoints",
    "train",
    "ablation",
    "compare",
    "evaluate",
    "extract",
    "search",
    "export",
    "viz",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kglfr",
        description="KGLFR-Net for visible-infrared person re-identification.",
        epilog="Run 'kglfr COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"kglfr.cli.{name}").register(sub)
    return parser


def add_command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """Add a subcommand whose --help ends with examples."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_range(low: int, high: int):
    """argparse type: an integer in ``low..high``."""

    def parse(text: str) -> int:
        value = positive_int(text) if low >= 1 else int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def as_flags(error: KglfrError, flags: dict[str, str]) -> KglfrError:
    """``error`` with the parameters its message names worded as the command's ``flags``."""
    message = str(error)
    for param, flag in flags.items():
        message = message.replace(param, flag)
    out = type(error)(message)
    out.__dict__.update(error.__dict__)
    return out


AMP_HELP = (
    "autocast dtype: auto (default: bf16 on a GPU that has it, fp16 on older GPUs, bf16 on a CPU with native "
    "bf16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo), float32 on other CPUs; channels_last with it; the output "
    "says which and why), off (float32), bf16 (on a CPU fast only with native bf16), fp16 (GPU only)"
)
EVAL_AMP_HELP = (
    "autocast dtype: auto (default: float32 on every device, so reported numbers do not depend on the "
    "machine), off (float32), bf16 (on a CPU fast only with native bf16), fp16 (GPU only)"
)
INT8_HELP = (
    " or int8 (CPU inference: the backbone up to layer3 in int8, calibrated on 128 of the images of each "
    "modality embedded; 1.4-1.8x faster, features approximate float32's)"
)


def add_amp_option(p: argparse.ArgumentParser, prefix: str = "", int8: bool = True, evaluate: bool = False) -> None:
    """``--amp auto|off|bf16|fp16[|int8]`` of the commands that run a model (the runtime policy,
    kglfr.runtime); ``int8``: offer int8 (inference without gradients); ``evaluate``: auto is float32."""
    choices = ("auto", "off", "bf16", "fp16", "int8") if int8 else ("auto", "off", "bf16", "fp16")
    text = EVAL_AMP_HELP if evaluate else AMP_HELP
    p.add_argument("--amp", choices=choices, default="auto", help=prefix + text + (INT8_HELP if int8 else ""))


def resolve_amp(args: argparse.Namespace, command: str = "extract"):
    """The runtime policy of ``--device`` / ``--amp`` for ``command`` (kglfr.runtime.COMMANDS); an
    unsupported dtype is one line naming the flags."""
    from kglfr.runtime import resolve_policy

    return resolve_policy(args.device, args.amp, name="--amp", command=command)


def fraction(text: str) -> float:
    """argparse type: a finite number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # False for nan too
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text}")
    return value


OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)+=.*", re.DOTALL)
OVERRIDE_HINT = " (overrides are section.key=value, e.g. model.arch=resnet18 train.epochs=5)"


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that ``section.key=value`` tokens may stand anywhere among a command's
    options: they go to its ``overrides`` (commands declare a positional ``overrides``). Anything else
    unknown is the usual argparse error."""
    args, extra = parser.parse_known_args(argv)
    takes = isinstance(getattr(args, "overrides", None), list)
    unknown = [t for t in extra if not (takes and OVERRIDE.fullmatch(t))]
    if unknown:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        hint = OVERRIDE_HINT if takes and any(re.fullmatch(r"\w+=.*", t) for t in unknown) else ""
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    if takes:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except KglfrError as e:
        print(f"kglfr {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path the user gave that cannot be written or read (permissions, a file as folder)
        print(f"kglfr {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kglfr {args.command}: interrupted", file=sys.stderr)
        return 130


OS_ADVICE = {
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "the disk is full; free some space or choose another location",
    errno.EDQUOT: "the disk quota is exhausted; free some space or choose another location",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "it is a folder; give a file",
}


def describe_os_error(e: OSError) -> str:
    """One line for an operating-system error on a path the user gave: what failed, where, what to do."""
    what = e.strerror or str(e)
    where = f": {e.filename}" if e.filename else ""
    advice = OS_ADVICE.get(e.errno)
    return f"{what}{where}" + (f"; {advice}" if advice else "")


def entry() -> None:
    """The ``kglfr`` program: :func:`main`, then exit. A Ctrl-C that lands while the interpreter shuts down
    (after the command finished, in an atexit hook) exits with 130 instead of printing a traceback."""
    code = main()
    signal.signal(signal.SIGINT, _interrupted_at_exit)
    sys.exit(code)


def _interrupted_at_exit(_signum, _frame) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    entry()
