"""The training loop of KGLFR-Net (and of the Table 2 ablations), in plain PyTorch.

One step, as the paper describes it (one forward pass per step)::

    batch = P identities x (K visible + K infrared), jointly transformed with their keypoints
    images = erase(batch)              # KEGFR (keypoint centres), Random Erasing, or nothing
    out = model(images, modalities)    # pooled global feature, BN feature, logits, layer4 map
    loss = CE(logits) + w_g * triplet(global, margin 0.3)
         + w_l * triplet(mean(mask_c * layer4 map), margin 0.01)   # KMLFR, keypoint c drawn per step

Around it: SGD with the backbone / head learning rates of the model's parameter groups and the step
schedule of SPEC; AMP and channels_last on a GPU; DDP when started by ``torchrun``; an atomic
checkpoint every epoch and on Ctrl-C / SIGTERM; metrics as JSON lines (and TensorBoard when
installed); evaluation every ``train.eval_every`` epochs and at the end, under the dataset's protocols.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from kglfr.data.store import Store
from kglfr.errors import KglfrError
from kglfr.eval.model_eval import Evaluation, check_protocols, evaluate_model, store_permutations
from kglfr.eval.report import format_table, result_to_dict
from kglfr.io import write_atomic, write_json_atomic
from kglfr.keypoints.cache import KeypointCache
from kglfr.train import config as C
from kglfr.train.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from kglfr.train.data import STREAM_ERASING, STREAM_KEYPOINT, Batch, TrainData, modality_counts, step_generator
from kglfr.train.erasing import keypoint_erasing, random_erasing
from kglfr.train.losses import (
    batch_hard_triplet,
    cross_entropy,
    keypoint_mask,
    masked_local_features,
    weighted_regularized_triplet,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"


class TrainingError(KglfrError):
    """Training cannot go on (a non-finite loss, a run folder that holds no run, ...)."""


class Interrupted(KglfrError):
    """Ctrl-C or SIGTERM: the run was saved and can be resumed."""

    exit_code = 130


# ---------------------------------------------------------------------------------------------------
# Pure pieces


def lr_factor(epoch: int, milestones: list[int], gamma: float, warmup_epochs: int = 0) -> float:
    """The learning-rate multiplier of ``epoch`` (0-based): linear warm-up, then x gamma at each milestone."""
    f = gamma ** sum(epoch >= m for m in milestones)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        f *= (epoch + 1) / warmup_epochs
    return f


@dataclass
class Losses:
    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


def compute_losses(out: dict[str, torch.Tensor], batch: Batch, cfg: DictConfig, keypoint: int | None) -> Losses:
    """The total loss of one step (eq. 6) and its detached parts, from the model's training outputs."""
    L = cfg.loss
    labels = batch.labels
    logits = out["logits"].float()
    loss_id = cross_entropy(logits, labels, L.label_smoothing)
    glob = out["global"].float()
    if L.triplet == "wrt":
        loss_g, stats = weighted_regularized_triplet(glob, labels)
    else:
        loss_g, stats = batch_hard_triplet(glob, labels, L.global_margin)
    total = L.id_weight * loss_id + L.global_weight * loss_g
    parts = {"id": float(loss_id.detach()), "triplet": float(loss_g.detach()),
             "acc": float((logits.argmax(1) == labels).float().mean())}  # fmt: skip
    if L.kmlfr:
        fmap = out["feature_map"].float()
        mask = keypoint_mask(batch.heatmaps, keypoint)
        local = masked_local_features(fmap, mask)
        loss_l, _ = batch_hard_triplet(local, labels, L.local_margin)
        total = total + L.local_weight * loss_l
        parts["local"] = float(loss_l.detach())
    parts["loss"] = float(total.detach())
    return Losses(total, parts)


def erase(images: torch.Tensor, batch: Batch, cfg: DictConfig, generator: torch.Generator) -> torch.Tensor:
    """KEGFR or Random Erasing on the (normalised) batch, as the config asks; fill 0 = the channel mean."""
    A = cfg.augment
    area, ratio = (A.area_min, A.area_max), (A.ratio_min, 1.0 / A.ratio_min)
    if A.erasing == "keypoint":
        images, _ = keypoint_erasing(images, batch.pids, batch.parts, batch.part_valid, generator,
                                     prob=A.erasing_prob, area=area, ratio=ratio)  # fmt: skip
    elif A.erasing == "random":
        images, _ = random_erasing(images, generator, prob=A.erasing_prob, area=area, ratio=ratio)
    return images


def needs_keypoints(cfg: DictConfig) -> bool:
    return cfg.augment.erasing == "keypoint" or bool(cfg.loss.kmlfr)


# ---------------------------------------------------------------------------------------------------
# Environment: devices, DDP, AMP, signals


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_runtime(cfg: DictConfig) -> Runtime:
    """Device, DDP rank (from torchrun's environment), AMP dtype and memory format."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KglfrError(f"train.device={want} was asked for but no CUDA device is available; use train.device=cpu")
        device = torch.device("cuda", local if world > 1 else (torch.device(want).index or 0))
        torch.cuda.set_device(device)
    elif want == "cpu":
        device = torch.device("cpu")
    else:
        raise KglfrError(f"unknown train.device {want!r}; use auto, cpu, cuda or cuda:N")
    amp = cfg.train.amp
    dtype = None
    if device.type == "cuda":
        if amp == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif amp != "off":
            dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    elif amp in ("bf16", "fp16"):
        log.warning("train.amp=%s ignored on the CPU (no speed-up there); training in float32", amp)
    cl = cfg.train.channels_last
    channels_last = device.type == "cuda" if cl == "auto" else cl == "on"
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return Runtime(device, rank, world, local, dtype, channels_last)


@contextmanager
def stop_on_signals():
    """Turn Ctrl-C and SIGTERM into a flag the loop checks after each step (main thread only)."""
    flag = {"signal": None}
    if threading_main():

        def handler(signum, _frame):
            flag["signal"] = signal.Signals(signum).name

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    else:
        old = {}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------------------------
# Run folder


def is_run(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / CHECKPOINT).is_file()


def check_resume(folder: Path, overrides: list[str], force: bool) -> DictConfig:
    """The config of the run in ``folder``; overrides that would change it are refused unless ``force``."""
    if not folder.is_dir() or not (folder / CONFIG).is_file():
        raise TrainingError(f"--resume {folder}: no run there (no {CONFIG}); start one with "
                            f"'kglfr train --config PRESET --out {folder}'")  # fmt: skip
    if not (folder / CHECKPOINT).is_file():
        raise TrainingError(f"--resume {folder}: the run has no {CHECKPOINT} yet (it stopped before its first "
                            "epoch ended); start it again without --resume")  # fmt: skip
    import yaml

    saved = C.config_from_dict(yaml.safe_load((folder / CONFIG).read_text()), str(folder / CONFIG))
    if overrides:
        changed = C.config_from_dict(C.deep_merge(C.to_dict(saved), C.parse_overrides(overrides)), "override")
        keys = C.diff(C.to_dict(saved), C.to_dict(changed))
        if keys and not force:
            raise TrainingError(f"--resume {folder}: the override(s) would change the run ({', '.join(keys)}); "
                                "pass --force to resume with them anyway")  # fmt: skip
        saved = changed
    return saved


class MetricsLog:
    """JSON lines in ``RUN/metrics.jsonl`` (and TensorBoard scalars when installed and asked for)."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = folder / METRICS
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                log.debug("tensorboard not installed; metrics go to %s only", self.path)

    def write(self, record: dict, step: int | None = None) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and step is not None:
            kind = record.get("type", "step")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step", "global_step"):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _file_logging(folder: Path) -> logging.Handler:
    handler = logging.FileHandler(folder / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger("kglfr").addHandler(handler)
    return handler


# ---------------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    folder: Path
    epochs: int
    evaluation: Evaluation | None
    summary: dict


def open_data(cfg: DictConfig, rt: Runtime) -> tuple[Store, KeypointCache | None]:
    store = Store.open(cfg.data.store)
    cache = None
    if needs_keypoints(cfg):
        try:
            cache = KeypointCache.open(store, backend=cfg.data.keypoints, verify=False)
        except KglfrError as e:
            raise KglfrError(f"this config uses keypoints (augment.erasing={cfg.augment.erasing}, "
                             f"loss.kmlfr={cfg.loss.kmlfr}): {e}") from None  # fmt: skip
    return store, cache


def build_model(cfg: DictConfig, num_classes: int):
    from kglfr.model import AGWNet

    M = cfg.model
    return AGWNet(num_classes, arch=M.arch, last_stride=M.last_stride, non_local=M.non_local,
                  nl_reduction=M.nl_reduction, gem_p=M.gem_p, pretrained=M.pretrained)  # fmt: skip


def train(
    cfg: DictConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Train ``cfg`` into the run folder ``out`` (or continue the run there with ``resume``).

    ``max_steps`` stops abruptly after that many steps of this call, saving nothing (as a killed
    process would; used by the tests of ``--resume``).
    """
    C.require(cfg, "data.store")
    folder = Path(out).expanduser()
    rt = resolve_runtime(cfg)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if not resume and is_run(folder) and rt.main:
        raise TrainingError(f"{folder} already holds a run; continue it with 'kglfr train --resume {folder}' "
                            "or choose another --out")  # fmt: skip
    if rt.main:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / CONFIG, lambda f: f.write(C.to_yaml(cfg)))
    handler = _file_logging(folder) if rt.main else None
    try:
        return _train(cfg, folder, rt, resume, progress, max_steps)
    finally:
        if handler is not None:
            logging.getLogger("kglfr").removeHandler(handler)
            handler.close()


def _train(cfg, folder: Path, rt: Runtime, resume: bool, progress: bool, max_steps: int | None) -> TrainResult:
    seed = int(cfg.train.seed)
    torch.manual_seed(seed)
    log.info("run %s: seed %d, device %s%s, amp %s", folder, seed, rt.device,
             f", DDP {rt.world_size} processes" if rt.world_size > 1 else "",
             "off" if rt.amp_dtype is None else str(rt.amp_dtype).replace("torch.", ""))  # fmt: skip
    store, cache = open_data(cfg, rt)
    size = (int(cfg.data.height), int(cfg.data.width))
    data = TrainData(store, cache, trial=cfg.data.trial, size=size, pad=cfg.data.pad, flip_prob=cfg.data.flip_prob,
                     ids_per_batch=cfg.data.ids_per_batch, per_modality=cfg.data.per_modality, seed=seed,
                     rank=rt.rank, world_size=rt.world_size, iters_per_epoch=cfg.train.iters_per_epoch)  # fmt: skip
    protocols = check_protocols(store.dataset, cfg.eval.protocols)
    # read (and check) the official permutations before training, not at the first evaluation
    official = store_permutations(store, cfg.eval.gallery_perm) if cfg.eval.gallery_draw == "official" else None
    model = build_model(cfg, data.num_classes)
    data.transform.heatmap_size = model.feature_map_size(size)
    opt = cfg.optim
    groups = model.param_groups(opt.lr, opt.backbone_lr_mult, opt.weight_decay)
    for g in groups:
        g["base_lr"] = g["lr"]
    optimizer = torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=True)
    start_epoch, start_step, history = 0, 0, []
    if resume:
        ckpt = load_checkpoint(folder / CHECKPOINT)
        load_model_state(model, ckpt["model"], str(folder / CHECKPOINT))
        optimizer.load_state_dict(ckpt["optimizer"])
        for g, saved in zip(optimizer.param_groups, groups, strict=True):
            g["base_lr"] = saved["base_lr"]
        start_epoch, start_step, history = int(ckpt["epoch"]), int(ckpt.get("step", 0)), list(ckpt.get("history", []))
        log.info("resuming %s at epoch %d step %d", folder, start_epoch + 1, start_step)
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if rt.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type ==
                                                        "cuda" else None)  # fmt: skip
    scaler = torch.amp.GradScaler("cuda", enabled=rt.amp_dtype == torch.float16)
    metrics = MetricsLog(folder, rt.main, cfg.train.tensorboard)
    epochs = int(cfg.train.epochs)
    per_epoch = len(data)
    counts = ", ".join(f"{k} {v}" for k, v in modality_counts(store, data.indices).items())
    log.info("%d training identities, %d images (%s), %d steps an epoch of %d images, %d epochs",
             data.num_classes, len(data.indices), counts,
             per_epoch, data.sampler.batch_size, epochs)  # fmt: skip

    def payload(epoch: int, step: int) -> dict:
        return {"model": model.state_dict(), "model_config": model.config(), "num_classes": data.num_classes,
                "label_pids": data.label_pids.tolist(), "config": C.to_dict(cfg), "epoch": epoch, "step": step,
                "optimizer": optimizer.state_dict(), "history": history, "dataset": store.dataset,
                "input_size": list(size)}  # fmt: skip

    taken = 0
    evaluation = None
    evals: list[tuple[int, Evaluation]] = []  # (epoch, evaluation) of the runs on the way
    with stop_on_signals() as flag:
        for epoch in range(start_epoch, epochs):
            factor = lr_factor(epoch, list(opt.milestones), opt.gamma, opt.warmup_epochs)
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * factor
            net.train()
            sums: dict[str, float] = {}
            n_steps = 0
            t0 = time.perf_counter()
            bar = _bar(per_epoch, start_step, f"epoch {epoch + 1}/{epochs}", progress and rt.main)
            for batch in data.epoch(epoch, start_step):
                s = batch.step
                b = batch.to(rt.device)
                images = erase(b.images, b, cfg, step_generator(seed, epoch, s, STREAM_ERASING, rt.device)) \
                    if cfg.augment.erasing != "none" else b.images  # fmt: skip
                if rt.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                keypoint = None
                if cfg.loss.kmlfr:
                    g = step_generator(seed, epoch, s, STREAM_KEYPOINT)
                    keypoint = int(torch.randint(0, 13, (1,), generator=g))
                with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
                    out = net(images, b.modalities)
                losses = compute_losses(out, b, cfg, keypoint)
                if not math.isfinite(losses.parts["loss"]):
                    last = folder / CHECKPOINT
                    where = f"the last good checkpoint is {last} (epoch {epoch})" if last.is_file() else \
                        "no checkpoint was written yet"  # fmt: skip
                    raise TrainingError(
                        f"the loss became non-finite ({losses.parts}) at epoch {epoch + 1} step "
                        f"{s + 1}; training stopped, {where}; lower optim.lr or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses.total).backward()
                scaler.step(optimizer)
                scaler.update()
                n_steps += 1
                taken += 1
                for k, v in losses.parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.update(1)
                if rt.main and (s + 1) % max(1, cfg.train.log_every) == 0:
                    rate = n_steps * data.sampler.batch_size * rt.world_size / (time.perf_counter() - t0)
                    rec = {
                        "type": "step",
                        "epoch": epoch + 1,
                        "step": s + 1,
                        "global_step": epoch * per_epoch + s + 1,
                        "lr": optimizer.param_groups[0]["lr"],
                        **{k: round(v, 5) for k, v in losses.parts.items()},
                        "images_per_s": round(rate, 1),
                    }
                    metrics.write(rec, rec["global_step"])
                    bar.set_postfix(loss=f"{losses.parts['loss']:.3f}", acc=f"{losses.parts['acc']:.2f}")
                if max_steps is not None and taken >= max_steps and s + 1 < per_epoch:
                    bar.close()
                    return TrainResult(folder, epoch, None, {"stopped": "max_steps"})
                if flag["signal"]:
                    bar.close()
                    if rt.main:
                        save_checkpoint(folder / CHECKPOINT, payload(epoch, s + 1))
                    raise Interrupted(f"{flag['signal']}: saved {folder / CHECKPOINT} at epoch {epoch + 1} step "
                                      f"{s + 1}; continue with 'kglfr train --resume {folder}'")  # fmt: skip
            bar.close()
            start_step = 0
            seconds = time.perf_counter() - t0
            means = {k: v / max(n_steps, 1) for k, v in sums.items()}
            history.append({"epoch": epoch + 1, **means, "seconds": seconds})
            if rt.main:
                save_checkpoint(folder / CHECKPOINT, payload(epoch + 1, 0))
                metrics.write({"type": "epoch", "epoch": epoch + 1, **{k: round(v, 5) for k, v in means.items()},
                               "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                               "images_per_s": round(n_steps * data.sampler.batch_size * rt.world_size /
                                                     max(seconds, 1e-9), 1)}, epoch + 1)  # fmt: skip
                log.info("epoch %d/%d: %s (%.1f s)", epoch + 1, epochs,
                         ", ".join(f"{k} {v:.4f}" for k, v in means.items()), seconds)  # fmt: skip
            if max_steps is not None and taken >= max_steps:  # killed right after the epoch's checkpoint
                return TrainResult(folder, epoch + 1, None, {"stopped": "max_steps"})
            every = int(cfg.train.eval_every)
            if rt.main and protocols and every > 0 and (epoch + 1) % every == 0 and epoch + 1 < epochs:
                ev = _evaluate(model, store, cfg, rt, protocols, size, progress, official)
                _log_eval(metrics, ev, epoch + 1, folder)
                evals.append((epoch + 1, ev))
    if rt.main and protocols:
        evaluation = _evaluate(model, store, cfg, rt, protocols, size, progress, official)
        _log_eval(metrics, evaluation, epochs, folder)
        evals.append((epochs, evaluation))
    summary = write_report(folder, evaluation, cfg, store, epochs) if rt.main else {}
    if rt.main and evals and cfg.eval.report_epoch == "best":
        summary["best_epoch_on_test_set"] = best_on_test_set(evals)
        write_json_atomic(folder / "summary.json", summary, indent=2)
    metrics.close()
    if rt.world_size > 1:
        torch.distributed.barrier()
    return TrainResult(folder, epochs, evaluation, summary)


def _bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, file=sys.stderr,
                mininterval=1.0, dynamic_ncols=True, leave=False)  # fmt: skip


def _evaluate(model, store: Store, cfg, rt: Runtime, protocols, size, progress: bool, official=None) -> Evaluation:
    return evaluate_model(model, store, protocols, trial=cfg.data.trial, size=size, trials=cfg.eval.trials,
                          batch_size=cfg.eval.batch_size, device=rt.device, flip=cfg.eval.flip,
                          amp_dtype=rt.amp_dtype, progress=progress, official=official)  # fmt: skip


def _log_eval(metrics: MetricsLog, ev: Evaluation, epoch: int, folder: Path) -> None:
    for p, by in ev.results.items():
        rec = {"type": "eval", "epoch": epoch, "protocol": p, "chance_rank1": round(ev.chance_rank1[p], 3)}
        for kind, r in by.items():
            m = r.mean()
            rec.update({f"{kind}_{k}": round(m[k], 3) for k in ("rank1", "rank10", "mAP", "mINP")})
        metrics.write(rec, epoch)
        log.info("epoch %d %s: Rank-1 %.2f mAP %.2f (BN feature; pooled: Rank-1 %.2f mAP %.2f; chance Rank-1 %.2f)",
                 epoch, p, by["bn"].mean()["rank1"], by["bn"].mean()["mAP"], by["pool"].mean()["rank1"],
                 by["pool"].mean()["mAP"], ev.chance_rank1[p])  # fmt: skip


def best_on_test_set(evals: list[tuple[int, Evaluation]]) -> dict:
    """Per protocol, the evaluated epoch with the best BN Rank-1. Chosen on the test set, so optimistic: a
    labelled extra (``eval.report_epoch=best``), never the headline, which is the last epoch."""
    out = {}
    for p in evals[-1][1].results:
        epoch, ev = max(evals, key=lambda e: e[1].results[p]["bn"].mean()["rank1"])
        m = ev.results[p]["bn"].mean()
        out[p] = {
            "epoch": epoch,
            "rank1": m["rank1"],
            "mAP": m["mAP"],
            "note": "epoch picked on the test set: optimistic, not comparable to the last-epoch figures",
        }
    return out


def write_report(folder: Path, ev: Evaluation | None, cfg, store: Store, epochs: int) -> dict:
    """``RUN/results/<protocol>_<feature>.json`` (the ``kglfr evaluate`` format), ``RUN/summary.json`` and
    ``RUN/report.md`` (a table in the paper's format; BN feature first, the headline)."""
    summary: dict = {"run": str(folder), "dataset": store.dataset, "epoch": epochs, "feature_headline": "bn",
                     "report_epoch": "last", "seed": int(cfg.train.seed), "protocols": {}}  # fmt: skip
    if ev is None:
        write_json_atomic(folder / "summary.json", summary, indent=2)
        return summary
    lines = [f"# {folder.name}: {store.dataset}, epoch {epochs} (the last)", "",
             "| protocol | feature | Rank-1 | Rank-10 | mAP | mINP | chance Rank-1 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    tables = []
    for p, by in ev.results.items():
        summary["protocols"][p] = {"chance_rank1": ev.chance_rank1[p],
                                   "gallery_draw": next(iter(by.values())).gallery_draw}  # fmt: skip
        for kind, r in by.items():
            write_json_atomic(
                folder / "results" / f"{p}_{kind}.json",
                {**result_to_dict(r), "feature": kind, "epoch": epochs},
                indent=2,
            )
            m, s = r.mean(), r.std()
            summary["protocols"][p][kind] = {"mean": m, "std": s}
            lines.append(
                f"| {p} | {'BN' if kind == 'bn' else 'pooled'} | {m['rank1']:.2f} ± {s['rank1']:.2f} | "
                f"{m['rank10']:.2f} | {m['mAP']:.2f} ± {s['mAP']:.2f} | {m['mINP']:.2f} | "
                f"{ev.chance_rank1[p]:.2f} |"
            )
            tables.append(f"{kind} feature\n{format_table(r)}")
    lines += [
        "",
        "BN: the BatchNorm-neck feature (the headline, as AGW and KGLFR report); pooled: the GeM feature "
        "before it. Mean ± standard deviation over the protocol's trials. Re-ranking off.",
    ]
    write_atomic(folder / "report.md", lambda f: f.write("\n".join(lines) + "\n"))
    write_json_atomic(folder / "summary.json", summary, indent=2)
    print("\n\n".join(tables))
    return summary
