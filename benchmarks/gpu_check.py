"""GPU acceptance run: everything a first GPU machine must show, in one script, one JSON and one table.

    python benchmarks/gpu_check.py --out DIR            # on a GPU machine: at most ~8 minutes
    python benchmarks/gpu_check.py --smoke --out DIR    # the same steps on the CPU at tiny size (tests)

Steps (each timed; a failing step is recorded and the next one still runs; exit 1 if any failed):

1. ``environment``: torch, CUDA, GPU name and memory, bf16 support (GPU; native on the CPU), CPU count, the
   code checked.
2. ``dataset``: a synthetic SYSU-layout set (288x144), prepared into a store, oracle keypoint cache.
3. ``train_resume``: ``python -m kglfr train --config sysu/kglfr`` (ResNet-50, ``model.pretrained=none``,
   a low learning rate: from random weights one step at lr 0.1 makes the features non-finite) with AMP
   (``train.amp=auto``) and channels_last, a few hundred steps; SIGTERM part-way (exit 143, checkpoint
   kept), ``--resume`` (continues after the saved step, exit 0, summary.json with finite Rank-1/mAP).
4. ``step_throughput``: images/s of the baseline and KGLFR steps (``Trainer.run_step``, through
   bench_train's functions, the presets alternating) at batch 64 in fp32 and bf16; the KGLFR/baseline
   step-time ratio; peak GPU memory of the KGLFR step (target <= 8 GiB, the paper's card).
5. ``data_pipeline``: the data pipeline's images/s as bench_train measures it, against the KGLFR step
   rate of step 4 (target >= 3x).
6. ``hrnet``: HRNet-W32 keypoints images/s with random weights (fp16 autocast on a GPU, as the backend).
7. ``ddp``: ``torchrun --nproc_per_node 2 -m kglfr train`` for a few steps (ResNet-18 at 64x32); on one
   GPU kglfr's runtime maps rank r to cuda:r with NCCL, which one device cannot hold: then the reason is
   recorded as "not possible on one GPU" (not a failure) and the two processes run with gloo on the CPU.
8. ``compile``: ``train.compile`` speed-up when the option exists (skipped with a note otherwise).

The steps run through ``step_runner.Runner``. Targets are judged on a GPU run only (``--smoke`` records
them). ``--budget`` skips the optional steps (4-8) that would not fit in the time left, saying so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]  # check the code beside this script, not an installed copy

import torch  # noqa: E402
from harness import timeit  # noqa: E402
from step_runner import Outcome, Runner, StepError, free_gpu, target  # noqa: E402

STEPS = ("environment", "dataset", "train_resume", "step_throughput", "data_pipeline", "hrnet", "ddp", "compile")
PEAK_GIB_MAX = 8.0
PIPELINE_RATIO_MIN = 3.0
H200_KGLFR_MIN = 2000.0  # images/s of the KGLFR bf16 step at batch 64 (issue 17's target on an H200)
SINGLE_GPU = re.compile(r"invalid device ordinal|Duplicate GPU|device >= 0 && device < num_gpus|"
                        r"CUDA error: invalid device|ncclInvalidUsage", re.I)  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the GPU acceptance run or the CPU smoke run."""

    smoke: bool
    height: int
    width: int
    arch: str
    ids: int
    test_ids: int | None
    images_per_camera: int
    batch: tuple[str, ...]  # batch overrides (empty: the presets' 8 x (4 + 4) = 64)
    epochs: int
    iters: int
    log_every: int
    signal_after: int  # step lines in metrics.jsonl (and the first epoch's checkpoint) before SIGTERM
    eval_trials: int
    bench_steps: int
    hrnet_batch: int
    hrnet_input: tuple[int, int]
    threads: int  # torch CPU threads (0: torch's default); 1 on a shared CPU, where 2 threads ran 20x slower
    budget: float
    estimates: dict  # seconds each optional step is expected to take (for the budget guard)


FULL = Plan(smoke=False, height=288, width=144, arch="resnet50", ids=96, test_ids=32, images_per_camera=4, batch=(),
            epochs=4, iters=75, log_every=25, signal_after=4, eval_trials=10, bench_steps=20, hrnet_batch=64,
            hrnet_input=(320, 160), threads=0, budget=480.0,
            estimates={"step_throughput": 90, "data_pipeline": 15, "hrnet": 30, "ddp": 90, "compile": 150})  # fmt: skip
SMOKE = Plan(smoke=True, height=64, width=32, arch="resnet18", ids=20, test_ids=None, images_per_camera=2,
             batch=("data.ids_per_batch=3", "data.per_modality=2", "data.pad=2"), epochs=3, iters=6, log_every=1,
             signal_after=8, eval_trials=2, bench_steps=2, hrnet_batch=2, hrnet_input=(64, 32), threads=1, budget=110.0,
             estimates={"step_throughput": 10, "data_pipeline": 3, "hrnet": 5, "ddp": 40, "compile": 0})  # fmt: skip
TINY_DDP = ("model.arch=resnet18", "data.height=64", "data.width=32", "data.pad=2", "data.ids_per_batch=3",
            "data.per_modality=2", "train.epochs=1", "train.iters_per_epoch=3", "train.log_every=1",
            "eval.trials=2", "train.tensorboard=false", "model.pretrained=none", "train.threads=1")  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Helpers


def subprocess_env(threads: int | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def kglfr_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kglfr", *args]


def tail(path: Path, n: int = 8) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-n:] if path.is_file() else []


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_store(root: Path, height: int, width: int, ids: int, images_per_camera: int,
               test_ids: int | None) -> tuple[Path, dict]:  # fmt: skip
    """As ``kglfr synth``, ``kglfr prepare`` and ``kglfr keypoints --backend oracle`` do it: (store, figures)."""
    from kglfr.data.datasets import load_dataset
    from kglfr.data.store import prepare_store
    from kglfr.data.synth import synthesize
    from kglfr.keypoints.build import build_cache, build_pose_backend

    t = time.perf_counter()
    synth = synthesize(root / "synth", "sysu", ids=ids, seed=0, images_per_camera=images_per_camera, height=height,
                       width=width, test_ids=test_ids)  # fmt: skip
    t_synth = time.perf_counter() - t
    t = time.perf_counter()
    store, bad = prepare_store(load_dataset("sysu", synth.root), root / "store", height=height, width=width,
                               progress=False)  # fmt: skip
    t_store = time.perf_counter() - t
    t = time.perf_counter()
    result = build_cache(store, build_pose_backend("oracle", store), progress=False)
    t_cache = time.perf_counter() - t
    figures = {"images": synth.images, "ids": synth.ids, "train_ids": len(synth.train_ids),
               "test_ids": len(synth.test_ids), "store_images": len(store), "skipped": len(bad),
               "cached_images": len(result.cache) if result.cache is not None else 0, "size": f"{height}x{width}",
               "synth_s": round(t_synth, 2), "prepare_s": round(t_store, 2), "keypoints_s": round(t_cache, 2),
               "synth_images_per_s": round(synth.images / max(t_synth, 1e-9), 1)}  # fmt: skip
    return store.path, figures


# ---------------------------------------------------------------------------------------------------
# Steps


def step_environment(r: Runner) -> Outcome:
    import kglfr
    from kglfr.runtime import cpu_has_bf16

    f: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
               "torch": torch.__version__, "torch_cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(),
               "cuda_available": torch.cuda.is_available(), "device": r.device, "kglfr": kglfr.__version__,
               "kglfr_path": str(Path(kglfr.__file__).parent), "cpu_bf16": cpu_has_bf16()}  # fmt: skip
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    f["git_commit"] = git.stdout.strip() or None
    summary = f"torch {torch.__version__}, {f['cpus']} CPUs"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        f.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                 capability=f"{p.major}.{p.minor}", gpu_bf16=torch.cuda.is_bf16_supported(),
                 cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                 tf32_cudnn=torch.backends.cudnn.allow_tf32,
                 cudnn_benchmark=torch.backends.cudnn.benchmark)  # fmt: skip
        summary = (f"{p.name} {f['gpu_memory_gib']} GiB, CUDA {torch.version.cuda}, bf16 {f['gpu_bf16']}, "
                   f"torch {torch.__version__}, {f['cpus']} CPUs")  # fmt: skip
    return Outcome(summary, f)


def step_dataset(r: Runner) -> Outcome:
    p = r.plan
    store, f = make_store(r.state["work"] / "data", p.height, p.width, p.ids, p.images_per_camera, p.test_ids)
    if f["cached_images"] != f["store_images"] or f["store_images"] == 0:
        raise StepError(f"the keypoint cache holds {f['cached_images']} of the store's {f['store_images']} images")
    r.state["store"] = store
    return Outcome(f"{f['store_images']} images, {f['train_ids']}+{f['test_ids']} ids at {f['size']}, oracle cache", f)


def train_overrides(r: Runner, store: Path) -> list[str]:
    p = r.plan
    return [f"data.store={store}", f"model.arch={p.arch}", f"data.height={p.height}", f"data.width={p.width}",
            *p.batch, "model.pretrained=none", "optim.lr=0.0001", f"train.device={r.device}", "train.amp=auto",
            f"train.channels_last={'on' if r.device == 'cuda' else 'auto'}", f"train.epochs={p.epochs}",
            f"train.iters_per_epoch={p.iters}", f"train.log_every={p.log_every}", "train.eval_every=0",
            f"eval.trials={p.eval_trials}", "train.tensorboard=false", f"train.threads={p.threads}"]  # fmt: skip


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return out


def start_and_terminate(r: Runner, run: Path, logs: Path) -> dict:
    """Start the training, SIGTERM it once the first epoch's checkpoint and ``signal_after`` step lines exist."""
    p = r.plan
    overrides = train_overrides(r, r.need("store", "dataset"))
    cmd = kglfr_cmd("train", "--config", "sysu/kglfr", "--out", str(run), "--no-progress", *overrides)
    with open(logs / "train.out", "w") as out, open(logs / "train.err", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=subprocess_env(p.threads))
    deadline = time.monotonic() + (120 if p.smoke else 300)
    t = time.perf_counter()
    while True:
        steps = sum(m.get("type") == "step" for m in read_metrics(run))
        if (run / "checkpoint.pt").is_file() and steps >= p.signal_after:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise StepError(f"the training ended (exit {proc.returncode}) or timed out before {p.signal_after} step "
                            f"lines and a checkpoint: {' | '.join(tail(logs / 'train.err', 3))}")  # fmt: skip
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    t_signal = time.perf_counter() - t
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise StepError("the training did not stop within 120 s of SIGTERM") from None
    return {"sigterm_after_s": round(t_signal, 2), "step_lines_at_signal": steps, "sigterm_exit_code": rc}


def check_resumed(r: Runner, run: Path, before: int, saved: int) -> dict:
    """The resumed run continued after the saved step and finished with finite Rank-1/mAP."""
    p = r.plan
    new = [m for m in read_metrics(run)[before:] if m.get("type") == "step"]
    if not new or min(m["global_step"] for m in new) <= saved:
        first = min((m["global_step"] for m in new), default=None)
        raise StepError(f"the resumed run did not continue after global step {saved} (first new step line: {first})")
    summary = json.loads((run / "summary.json").read_text())
    f: dict = {"first_resumed_global_step": min(m["global_step"] for m in new), "amp": summary.get("amp"),
               "weights": summary.get("weights")}  # fmt: skip
    bad = []
    for proto, res in summary["protocols"].items():
        m = res["bn"]["mean"]
        f[f"{proto}_rank1"], f[f"{proto}_mAP"] = m["rank1"], m["mAP"]
        bad += [f"{proto} {k}" for k in ("rank1", "mAP") if not math.isfinite(m[k])]
    if not summary["protocols"] or bad:
        raise StepError(f"the evaluation is not finite: {', '.join(bad) or 'no protocol evaluated'}")
    epochs = [m for m in read_metrics(run) if m.get("type") == "epoch"]
    f["train_loop_images_per_s"] = max((m["images_per_s"] for m in epochs), default=None)
    r.state["train_loop_rate"] = f["train_loop_images_per_s"]
    if p.epochs * p.iters - saved <= 0:
        raise StepError(f"the SIGTERM came after the last step ({saved}); nothing was left to resume")
    return f


def step_train_resume(r: Runner) -> Outcome:
    from kglfr.train.checkpoint import load_checkpoint

    p = r.plan
    run, logs = r.state["work"] / "run", r.state["work"] / "logs"
    logs.mkdir(exist_ok=True)
    f = start_and_terminate(r, run, logs)
    if f["sigterm_exit_code"] != 143:
        raise StepError(
            f"exit {f['sigterm_exit_code']} after SIGTERM, want 143: {' | '.join(tail(logs / 'train.err', 3))}"
        )
    ck = load_checkpoint(run / "checkpoint.pt")
    saved = int(ck["epoch"]) * p.iters + int(ck["step"])
    f.update(saved_epoch=int(ck["epoch"]), saved_step=int(ck["step"]), saved_global_step=saved)
    before = len(read_metrics(run))
    t = time.perf_counter()
    cmd = kglfr_cmd("train", "--resume", str(run), "--no-progress")
    with open(logs / "resume.out", "w") as out, open(logs / "resume.err", "w") as err:
        limit = 150 if p.smoke else 300
        proc = subprocess.run(cmd, stdout=out, stderr=err, env=subprocess_env(p.threads), timeout=limit)
    f.update(resume_exit_code=proc.returncode, resume_s=round(time.perf_counter() - t, 2))
    if proc.returncode != 0:
        raise StepError(f"--resume exited {proc.returncode}: {' | '.join(tail(logs / 'resume.err', 3))}")
    final = load_checkpoint(run / "checkpoint.pt")
    if int(final["epoch"]) != p.epochs:
        raise StepError(f"the resumed run ended at epoch {final['epoch']}, want {p.epochs}")
    f["resumed_steps"] = p.epochs * p.iters - saved
    f["total_steps"] = p.epochs * p.iters
    f.update(check_resumed(r, run, before, saved))
    scores = ", ".join(f"{k.split('_')[0]} R1 {v:.1f}" for k, v in f.items() if k.endswith("_rank1"))
    return Outcome(f"SIGTERM at step {saved} -> 143, --resume +{f['resumed_steps']} steps -> 0, amp {f['amp']}, "
                   f"{scores}", f)  # fmt: skip


def bench_configs(r: Runner, amp: str, extra: tuple[str, ...] = ()) -> dict:
    """The baseline and KGLFR presets at the plan's size on the dataset step's store."""
    from kglfr.train import config as C

    p = r.plan
    common = [f"data.store={r.need('store', 'dataset')}", f"model.arch={p.arch}", f"data.height={p.height}",
              f"data.width={p.width}", *p.batch, "model.pretrained=none", f"train.device={r.device}",
              f"train.amp={amp}", f"train.channels_last={'on' if r.device == 'cuda' else 'auto'}",
              "train.tensorboard=false", f"train.threads={p.threads}", *extra]  # fmt: skip
    return {name: C.load_config(f"sysu/{name}", common) for name in ("baseline", "kglfr")}


def precisions(device: str) -> list[tuple[str, str]]:
    """(label, train.amp) pairs: fp32 and the AMP dtype training uses by default."""
    if device == "cuda":
        return [("fp32", "off"), ("bf16", "bf16") if torch.cuda.is_bf16_supported() else ("fp16", "fp16")]
    return [("fp32", "off"), ("auto", "auto")]


def step_throughput(r: Runner) -> Outcome:
    import bench_train as bt

    from kglfr.train.runtime import resolve_runtime

    f: dict = {"batch": None, "steps": r.plan.bench_steps}
    cuda, targets, parts = r.device == "cuda", [], []
    for label, amp in precisions(r.device):
        cfgs = bench_configs(r, amp)
        rt = resolve_runtime(cfgs["kglfr"])
        f[f"{label}_amp"], f[f"{label}_channels_last"] = rt.amp_name, rt.channels_last
        if cuda:  # alone on the device, before the interleaved pair (see bench_train.peak_gpu_gib)
            free_gpu()
            f[f"{label}_kglfr_peak_gpu_gib"] = round(bt.peak_gpu_gib(cfgs["kglfr"]), 3)
            free_gpu()
        rates = bt.interleaved_rates(cfgs, r.plan.bench_steps)
        free_gpu()
        for name, rate in rates.items():
            f[f"{label}_{name}_images_per_s"] = round(rate, 1)
        ratio = rates["baseline"] / rates["kglfr"]
        f[f"{label}_kglfr_over_baseline_step_time"] = round(ratio, 3)
        r.state["kglfr_rate"], r.state["kglfr_cfg"] = rates["kglfr"], cfgs["kglfr"]  # the last: the AMP default
        parts.append(f"{label}: base {rates['baseline']:,.0f} / KGLFR {rates['kglfr']:,.0f} img/s (x{ratio:.2f})")
    f["batch"] = r.state["kglfr_cfg"].data.ids_per_batch * 2 * r.state["kglfr_cfg"].data.per_modality
    amp_label = precisions(r.device)[-1][0]
    if cuda:
        peak = f[f"{amp_label}_kglfr_peak_gpu_gib"]
        targets.append(target(f"{amp_label}_kglfr_peak_gpu_gib", peak, PEAK_GIB_MAX, "<="))
        parts.append(f"peak {peak:.2f} GiB")
        if "H200" in torch.cuda.get_device_name(0) and f["batch"] == 64:
            targets.append(target(f"{amp_label}_kglfr_images_per_s", f[f"{amp_label}_kglfr_images_per_s"],
                                  H200_KGLFR_MIN, ">="))  # fmt: skip
    f["note"] = "kglfr_over_baseline_step_time: the KGLFR step's time over the baseline's (issue 17: <= 1.10 on CPU)"
    return Outcome("; ".join(parts), f, targets=targets)


def step_pipeline(r: Runner) -> Outcome:
    import bench_train as bt

    from kglfr.data.store import Store
    from kglfr.keypoints.cache import KeypointCache

    cfg = r.state.get("kglfr_cfg") or bench_configs(r, precisions(r.device)[-1][1])["kglfr"]
    store = Store.open(r.need("store", "dataset"))
    cache = KeypointCache.open(store)
    size = (r.plan.height, r.plan.width)
    fmap = bt.build_model(cfg, 2).feature_map_size(size)
    rate = bt.pipeline_rate(cfg, store, cache, size, fmap, max(r.plan.bench_steps, 4))
    f: dict = {"pipeline_images_per_s": round(rate, 1), "cpus": os.cpu_count()}
    step = r.state.get("kglfr_rate")
    if step is None:
        return Outcome(f"{rate:,.0f} img/s (no step rate: step_throughput did not run)", f)
    f["kglfr_step_images_per_s"] = round(step, 1)
    f["pipeline_over_kglfr_step"] = round(rate / step, 2)
    if r.state.get("train_loop_rate"):  # the whole loop of step 3 against the bare step: near 1 if data keeps up
        f["train_loop_over_kglfr_step"] = round(r.state["train_loop_rate"] / step, 2)
    return Outcome(
        f"{rate:,.0f} img/s = {rate / step:.1f}x the KGLFR step",
        f,
        targets=[target("pipeline_over_kglfr_step", rate / step, PIPELINE_RATIO_MIN, ">=")],
    )


def step_hrnet(r: Runner) -> Outcome:
    import numpy as np

    from kglfr.keypoints.backends import BatchInfo, build_backend

    p, n = r.plan, r.plan.hrnet_batch
    be = build_backend("hrnet", random_init=True, device=r.device, batch_size=n, input_size=p.hrnet_input)
    imgs = np.random.default_rng(0).integers(0, 256, (n, p.height, p.width, 3), dtype=np.uint8)
    info = BatchInfo(relpaths=[f"{i}.jpg" for i in range(n)], source_hw=np.full((n, 2), p.height), root=Path("."))
    repeat, warmup = (1, 1) if p.smoke else (5, 2)
    t_full = timeit(lambda: be.predict(imgs, info), repeat=repeat, warmup=warmup)  # predict reads back: synced
    x = be.preprocess(imgs).to(be.device)

    def net() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=be.fp16):
            be.model(x)
        sync(be.device)

    t_net = timeit(net, repeat=repeat * 2, warmup=warmup)
    f = {"backend": be.identity(), "batch": n, "input": f"{p.hrnet_input[0]}x{p.hrnet_input[1]}",
         "autocast": "fp16" if be.fp16 else "off", "images_per_s": round(n / t_full, 1),
         "network_only_images_per_s": round(n / t_net, 1)}  # fmt: skip
    free_gpu()
    return Outcome(f"{n / t_full:,.0f} img/s (network {n / t_net:,.0f}), batch {n}, {f['autocast']}", f)


def torchrun(r: Runner, store: Path, device: str, tag: str) -> tuple[int, Path, list[str]]:
    """Two processes of ``kglfr train`` under torchrun: (exit code, run folder, last stderr lines)."""
    run, logs = r.state["work"] / f"ddp-{tag}", r.state["work"] / "logs"
    logs.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "kglfr", "train", "--config", "sysu/kglfr", "--out", str(run), "--no-progress",
           f"data.store={store}", f"train.device={device}", *TINY_DDP]  # fmt: skip
    with open(logs / f"ddp-{tag}.err", "w") as err:
        try:
            rc = subprocess.run(cmd, stdout=err, stderr=subprocess.STDOUT, env=subprocess_env(threads=1),
                                timeout=180).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = -1
    return rc, run, tail(logs / f"ddp-{tag}.err", 400)  # the child's error stands above torchrun's summary


def check_ddp_run(rc: int, run: Path, lines: list[str], what: str) -> None:
    from kglfr.train.checkpoint import load_checkpoint

    if rc != 0:
        raise StepError(f"{what}: exit {rc}: {' | '.join(lines[-3:])}")
    if (
        int(load_checkpoint(run / "checkpoint.pt")["epoch"]) != 1
        or "DDP 2 processes" not in (run / "train.log").read_text()
    ):
        raise StepError(f"{what}: the run folder does not show one epoch trained by 2 processes")


def step_ddp(r: Runner) -> Outcome:
    if r.plan.smoke:
        store = r.need("store", "dataset")
    else:
        store, _ = make_store(r.state["work"] / "ddp-data", 64, 32, SMOKE.ids, SMOKE.images_per_camera, None)
    if r.device != "cuda":
        rc, run, lines = torchrun(r, store, "cpu", "cpu")
        check_ddp_run(rc, run, lines, "2 gloo processes on the CPU")
        return Outcome("2 processes, gloo on the CPU: 1 epoch trained", {"backend": "gloo", "device": "cpu"})
    rc, run, lines = torchrun(r, store, "cuda", "cuda")
    if rc == 0:
        check_ddp_run(rc, run, lines, "2 processes on CUDA")
        return Outcome("2 processes on CUDA (NCCL): 1 epoch trained", {"backend": "nccl", "device": "cuda"})
    reason = next((ln.strip() for ln in lines if SINGLE_GPU.search(ln)), None)
    if reason is None or torch.cuda.device_count() > 1:
        raise StepError(f"2 processes on CUDA: exit {rc}: {' | '.join(lines[-3:])}")
    f: dict = {"cuda_exit_code": rc, "cuda_reason": reason[:300],
               "why": "kglfr's runtime puts rank r on cuda:r with NCCL (no gloo on CUDA); NCCL refuses two ranks "
                      "on one device"}  # fmt: skip
    rc, run, lines = torchrun(r, store, "cpu", "cpu")
    check_ddp_run(rc, run, lines, "fallback: 2 gloo processes on the CPU")
    f["cpu_gloo"] = "1 epoch trained by 2 processes"
    return Outcome(
        "not possible on one GPU; 2 gloo processes on the CPU: ok",
        f,
        status="not_possible",
        note=f"not possible on one GPU: {reason[:200]}",
    )


def step_compile(r: Runner) -> Outcome:
    import bench_train as bt

    from kglfr.train import config as C

    if "train.compile" not in C.valid_keys():
        return Outcome("skipped: kglfr has no train.compile option", status="skipped",
                       note="no train.compile option in the config schema yet")  # fmt: skip
    if r.plan.smoke:
        return Outcome("skipped in --smoke", status="skipped", note="compilation is timed on a GPU run only")
    allowed = C.choices().get("train.compile") or ()
    value = "on" if "on" in allowed else "true"
    amp = precisions(r.device)[-1][1]
    eager = bench_configs(r, amp)["kglfr"]
    compiled = bench_configs(r, amp, (f"train.compile={value}",))["kglfr"]
    t = time.perf_counter()
    rates = bt.interleaved_rates({"eager": eager, "compiled": compiled}, r.plan.bench_steps)
    free_gpu()
    f = {f"{k}_kglfr_images_per_s": round(v, 1) for k, v in rates.items()}
    f.update(
        speedup=round(rates["compiled"] / rates["eager"], 3), seconds_incl_compilation=round(time.perf_counter() - t, 1)
    )
    return Outcome(f"KGLFR {amp}: eager {rates['eager']:,.0f}, compiled {rates['compiled']:,.0f} img/s "
                   f"(x{f['speedup']:.2f})", f)  # fmt: skip


STEP_FUNCTIONS = {"environment": step_environment, "dataset": step_dataset, "train_resume": step_train_resume,
                  "step_throughput": step_throughput, "data_pipeline": step_pipeline, "hrnet": step_hrnet,
                  "ddp": step_ddp, "compile": step_compile}  # fmt: skip
OPTIONAL = {"step_throughput", "data_pipeline", "hrnet", "ddp", "compile"}


# ---------------------------------------------------------------------------------------------------


def resolve_device(want: str, smoke: bool) -> str:
    if want == "auto":
        return "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    if want == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda, but torch {torch.__version__} sees no CUDA device "
                         f"(built for CUDA {torch.version.cuda}); use --smoke or --device cpu")  # fmt: skip
    return want


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite runs this)")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                    help="auto: cuda when there is one (cpu with --smoke)")  # fmt: skip
    ap.add_argument("--budget", type=float, default=None, metavar="S",
                    help="seconds; optional steps that would not fit are skipped (480; --smoke: 110)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work folder (store, runs, logs) under --out")
    args = ap.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    try:
        device = resolve_device(args.device, args.smoke)
    except ValueError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    if device == "cpu" and not args.smoke:
        print("gpu_check: warning: the full check on the CPU takes hours; --smoke is the CPU check", file=sys.stderr)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.out, plan, device, args.budget if args.budget is not None else plan.budget)
    try:
        for name in STEPS:
            runner.run(name, STEP_FUNCTIONS[name], optional=name in OPTIONAL)
    finally:
        if not args.keep:
            shutil.rmtree(runner.state["work"], ignore_errors=True)
    print(runner.table())
    return 1 if runner.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
