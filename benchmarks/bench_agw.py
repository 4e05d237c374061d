"""kglfr's network side by side with the published AGW code (``embed_net``), in one process, alternating.

Usage:
    python benchmarks/bench_agw.py --agw-model /path/to/model.py              # non-local off, then on
    python benchmarks/bench_agw.py --agw-model model.py --non-local off --rounds 3 --infer-batch 16 --train-batch 8
    python benchmarks/bench_agw.py --agw-model model.py --profile             # where each path's time goes

AGW's code is not part of kglfr: pass the path of its ``model.py`` (mangye16/Cross-Modal-Re-ID-baseline).
Its folder goes on ``sys.path`` so its ``from resnet import resnet50`` resolves; torchvision does not run
with the CPU torch here, so that folder needs a ``resnet.py`` giving ``resnet50(pretrained,
last_conv_stride, last_conv_dilation)``; ``--write-resnet-shim`` writes one built on kglfr's plain-torch
ResNet (the same design: stride on the 3x3, last stride 1).

Same network on both sides (ResNet-50, last stride 1, GeM p=3, BNNeck, random weights, ``--height`` x
``--width``), with the non-local blocks off in both, then on in both (AGW's inner width is
``in_channels // 2`` in the repository's current model.py, kglfr's ``channels // model.nl_reduction`` = 2:
the same; older AGW copies had width 1, the ``reduc_ratio // reduc_ratio`` bug). Paths, timed in turn in
every round (the median over ``--rounds`` is kept, so a machine shared with other jobs biases all alike):

- inference of one modality's batch of ``--infer-batch``: AGW ``model(x, x, modal=1)`` in eval mode under
  ``no_grad``; kglfr ``embed_batch`` (what ``kglfr extract`` runs) in float32 contiguous, float32
  channels_last, and bf16 autocast + channels_last;
- a training step of ``--train-batch`` images (half visible, half infrared), cross-entropy on the logits,
  SGD: AGW ``model(x1, x2, modal=0)``; kglfr ``model(images, modalities)``, the same three paths.

Prints images/s and each path's ratio to AGW's, and writes ``benchmarks/results/bench_agw.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import record  # noqa: E402

from kglfr.eval.extract import embed_batch  # noqa: E402
from kglfr.model import AGWNet  # noqa: E402
from kglfr.runtime import cpu_flags  # noqa: E402

CLASSES = 395  # SYSU-MM01's training identities
SHIM = '''"""AGW's `from resnet import resnet50` on kglfr's plain-torch ResNet (torchvision does not run here)."""
from kglfr.model.resnet import resnet18 as _r18, resnet50 as _r50


def resnet50(pretrained=False, last_conv_stride=1, last_conv_dilation=1, **kw):
    return _r50(last_stride=last_conv_stride)


def resnet18(pretrained=False, last_conv_stride=1, last_conv_dilation=1, **kw):
    return _r18(last_stride=last_conv_stride)
'''
OURS = {"fp32": (None, False), "fp32_channels_last": (None, True), "bf16_channels_last": (torch.bfloat16, True)}


FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_description() -> str:
    """``Intel(R) Xeon(R) Processor (avx2 avx512f avx512_bf16 amx_bf16)``: the CPU's name and its flags
    that decide kglfr's speed."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{name} ({' '.join(f for f in FLAGS if f in cpu_flags()) or 'none of ' + ', '.join(FLAGS)})"


def load_agw(path: Path):
    """AGW's ``embed_net`` class from its model.py (its folder on sys.path for ``from resnet import ...``)."""
    if not path.is_file():
        raise SystemExit(f"--agw-model {path} does not exist; give the path of AGW's model.py")
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("agw_model", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        raise SystemExit(f"cannot import {path}: {e}; --write-resnet-shim puts a resnet.py beside it") from None
    return module.embed_net


def _median_rate(times: list[float], images: int) -> float:
    return images / statistics.median(times)


def inference_paths(agw_cls, non_local: bool, batch: int, hw: tuple[int, int]) -> dict[str, Callable[[], None]]:
    """name -> a call embedding one batch of one modality (warmed up)."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, *hw)
    agw = agw_cls(CLASSES, no_local="on" if non_local else "off", gm_pool="on").eval()
    paths: dict[str, Callable[[], None]] = {}

    def run_agw() -> None:
        with torch.no_grad():
            agw(x, x, modal=1)

    paths["agw_fp32"] = run_agw
    for name, (dtype, cl) in OURS.items():
        net = AGWNet(CLASSES, arch="resnet50", non_local=non_local, pretrained="none").eval()
        if cl:
            net = net.to(memory_format=torch.channels_last)
        paths[name] = lambda net=net, dtype=dtype: embed_batch(net, x, 0, amp_dtype=dtype)
    for fn in paths.values():
        fn()
    return paths


def train_paths(agw_cls, non_local: bool, batch: int, hw: tuple[int, int]) -> dict[str, Callable[[], None]]:
    """name -> one SGD step on a batch of half visible, half infrared images, cross-entropy (warmed up)."""
    torch.manual_seed(0)
    half = batch // 2
    x = torch.randn(2 * half, 3, *hw)
    labels = torch.arange(2 * half) % CLASSES
    modalities = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(half, dtype=torch.long)])
    agw = agw_cls(CLASSES, no_local="on" if non_local else "off", gm_pool="on").train()
    agw_opt = torch.optim.SGD(agw.parameters(), lr=1e-4, momentum=0.9)

    def step_agw() -> None:
        _, logits = agw(x[:half], x[half:], modal=0)
        agw_opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits, labels).backward()
        agw_opt.step()

    paths: dict[str, Callable[[], None]] = {"agw_fp32": step_agw}
    for name, (dtype, cl) in OURS.items():
        net = AGWNet(CLASSES, arch="resnet50", non_local=non_local, pretrained="none").train()
        images = x
        if cl:
            net, images = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

        def step(net=net, opt=opt, images=images, dtype=dtype) -> None:
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                logits = net(images, modalities)["logits"]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(logits.float(), labels).backward()
            opt.step()

        paths[name] = step
    for fn in paths.values():
        fn()
    return paths


def alternate(paths: dict[str, Callable[[], None]], rounds: int, images: int) -> dict[str, float]:
    """Each path once per round, in turn; images/s from the median of its rounds."""
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: _median_rate(v, images) for k, v in times.items()}


def profile(paths: dict[str, Callable[[], None]], names: tuple[str, ...], rows: int = 12) -> None:
    """torch.profiler's table (self CPU time) of one call of each named path."""
    from torch.profiler import profile as torch_profile

    for name in names:
        with torch_profile() as prof:
            paths[name]()
        print(f"-- {name}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agw-model", type=Path, required=True, help="path of AGW's model.py")
    p.add_argument("--write-resnet-shim", action="store_true", help="write resnet.py beside --agw-model first")
    p.add_argument("--non-local", default="off,on", help="off, on or off,on (default off,on)")
    p.add_argument("--infer-batch", type=int, default=16, help="inference batch (default 16)")
    p.add_argument("--train-batch", type=int, default=8, help="training batch, half per modality (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is kept (default 3)")
    p.add_argument("--height", type=int, default=288)
    p.add_argument("--width", type=int, default=144)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--only", choices=("inference", "train", "both"), default="both")
    p.add_argument("--profile", action="store_true", help="print where kglfr's fp32 and AGW's time goes")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_resnet_shim:
        (args.agw_model.parent / "resnet.py").write_text(SHIM)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    agw_cls = load_agw(args.agw_model)
    hw = (args.height, args.width)
    figures: dict = {"cpu": cpu_description(), "size": f"{hw[0]}x{hw[1]}", "rounds": args.rounds,
                     "infer_batch": args.infer_batch, "train_batch": args.train_batch}  # fmt: skip
    for nl in args.non_local.split(","):
        kinds = ("inference", "train") if args.only == "both" else (args.only,)
        for kind in kinds:
            inference = kind == "inference"
            make, batch = (inference_paths, args.infer_batch) if inference else (train_paths, args.train_batch)
            paths = make(agw_cls, nl == "on", batch, hw)
            if args.profile:
                profile(paths, ("agw_fp32", "fp32", "fp32_channels_last"))
            rates = alternate(paths, args.rounds, batch)
            for name, rate in rates.items():
                figures[f"nl_{nl}_{kind}_{name}_images_per_s"] = round(rate, 3)
                figures[f"nl_{nl}_{kind}_{name}_ratio_to_agw"] = round(rate / rates["agw_fp32"], 3)
            del paths
    record("bench_agw", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
