"""The training engine of KGLFR-Net (and of the Table 2 ablations), in plain PyTorch.

One step (one forward pass), the training method (``kglfr.train.methods``, ``method.name``) filling in
its parts::

    batch = the method's views of P identities x (K visible + K infrared), transformed with their keypoints
    images, extra = method.prepare(batch)    # KGLFR: KEGFR erasing and the step's KMLFR keypoint
    out = model(images, modalities)          # pooled global feature, BN feature, logits, layer4 map
    losses = method.losses(out, batch, extra)   # KGLFR: CE + 0.5 triplet(global) + 0.5 triplet(local)

:class:`Trainer` owns the model, optimiser, data and runtime and takes one step with
:meth:`Trainer.run_step`; :meth:`Trainer.fit` is the loop, which calls hooks (``kglfr.train.hooks``)
for the rest: checkpoints, metrics, evaluation, signals, the non-finite stop. :func:`train` builds a
run folder around them. Losses stay on the device and are read back every ``train.log_every`` steps
and at the end of each epoch.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from kglfr.data.store import Store
from kglfr.errors import KglfrError
from kglfr.eval.model_eval import Evaluation, check_protocols, store_permutations
from kglfr.io import folder_lock, write_atomic, write_json_atomic
from kglfr.keypoints.cache import KeypointCache
from kglfr.model import registry
from kglfr.model.agw import AGWNet
from kglfr.runtime import set_threads
from kglfr.train import config as C
from kglfr.train.checkpoint import load_checkpoint, load_model_state
from kglfr.train.data import Batch, TrainData, modality_counts, size_note, step_generator
from kglfr.train.hooks import (
    CheckpointHook,
    EvalHook,
    HookBase,
    LossReadHook,
    MetricsHook,
    ProgressHook,
    SignalHook,
    StopAfterSteps,
    StopTraining,
)
from kglfr.train.methods import Losses, Method, get_method
from kglfr.train.provenance import record_or_check
from kglfr.train.report import best_on_test_set, format_tables, write_report
from kglfr.train.report_page import trainer_page
from kglfr.train.run_folder import (
    CHECKPOINT,
    CONFIG,
    Interrupted,
    MetricsLog,
    TrainingError,
    check_out_folder,
    check_resume,
    end_file_logging,
    file_logging,
    is_run,
)
from kglfr.train.runtime import Runtime, resolve_runtime, stop_on_signals

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT", "CONFIG", "Interrupted", "Losses", "Runtime", "TrainResult", "Trainer", "TrainingError",
           "check_resume", "is_run", "lr_factor", "resolve_runtime",
           "stop_on_signals", "StopAfterSteps", "train"]  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Pure pieces


def lr_factor(epoch: int, milestones: list[int], gamma: float, warmup_epochs: int = 0) -> float:
    """The learning-rate multiplier of ``epoch`` (0-based): linear warm-up, then x gamma at each milestone."""
    f = gamma ** sum(epoch >= m for m in milestones)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        f *= (epoch + 1) / warmup_epochs
    return f


def open_data(cfg: DictConfig, method: Method) -> tuple[Store, KeypointCache | None]:
    store = Store.open(cfg.data.store)
    note = size_note(store.size, (cfg.data.height, cfg.data.width))
    if note:
        log.log(*note)
    cache = None
    if method.needs_keypoints(cfg):
        try:
            cache = KeypointCache.open(store, backend=cfg.data.keypoints, verify=False)
        except KglfrError as e:
            raise KglfrError(f"this config uses keypoints (method.name={cfg.method.name}, augment.erasing="
                             f"{cfg.augment.erasing}, loss.kmlfr={cfg.loss.kmlfr}): {e}") from None  # fmt: skip
    return store, cache


def build_model(cfg: DictConfig, num_classes: int, pretrained: str | None = None) -> AGWNet:
    """The config's model; ``pretrained`` overrides ``model.pretrained`` (``"none"`` when resuming)."""
    M = cfg.model
    return registry.build_model(M.arch, num_classes, last_stride=M.last_stride, non_local=M.non_local,
                                nl_reduction=M.nl_reduction, nl_width=M.nl_width, gem_p=M.gem_p, width=M.width,
                                pretrained=M.pretrained if pretrained is None else pretrained)  # fmt: skip


def base_lr(cfg: DictConfig, world_size: int) -> float:
    """``optim.lr``, times the number of processes under ``optim.scale_lr`` (the linear scaling rule)."""
    lr = float(cfg.optim.lr)  # finite and positive: the config's schema checks it
    return lr * world_size if cfg.optim.scale_lr else lr


# ---------------------------------------------------------------------------------------------------
# Losses on the device


class LossMeter:
    """Sums an epoch's loss parts on the device (float64, in step order: the same sums as Python floats) and
    remembers the first step whose loss was not finite; read back only when asked."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None
        self.last: torch.Tensor | None = None
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.bad_parts: torch.Tensor | None = None
        self.steps = 0

    def add(self, losses: Losses, step: int) -> None:
        self.names = list(losses.parts)
        vec = torch.stack([v.double() for v in losses.parts.values()])
        self.sums = vec if self.sums is None else self.sums + vec
        self.last = vec
        first = (self.bad_step < 0) & ~torch.isfinite(losses.parts["loss"])
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_parts = vec if self.bad_parts is None else torch.where(first, vec, self.bad_parts)
        self.steps += 1

    def read(self) -> tuple[dict[str, float], int | None, dict[str, float]]:
        """(the last step's parts, the first non-finite step or None, that step's parts): one sync."""
        if self.last is None:
            return {}, None, {}
        n = len(self.names)
        host = torch.cat([self.last, self.bad_parts, self.bad_step.double().reshape(1)]).tolist()
        bad = int(host[2 * n])
        last, at_bad = dict(zip(self.names, host[:n], strict=True)), dict(zip(self.names, host[n : 2 * n], strict=True))
        return last, (None if bad < 0 else bad), at_bad

    def means(self) -> dict[str, float]:
        sums = (self.sums / max(self.steps, 1)).tolist() if self.sums is not None else []
        return dict(zip(self.names, sums, strict=True))


# ---------------------------------------------------------------------------------------------------
# The engine


class NonFiniteLoss(TrainingError):
    """A step's loss was NaN or infinite (found when the losses were read back)."""


class Trainer:
    """Model, optimiser, data and runtime of one training, built in the order model -> device and memory
    format -> optimiser from the model's parameter groups -> saved state (``checkpoint``), so the
    optimiser's state always lives on its parameters' device."""

    def __init__(self, cfg: DictConfig, runtime: Runtime | None = None, checkpoint: dict | None = None,
                 source: str = "checkpoint") -> None:  # fmt: skip
        self.cfg, self.rt = cfg, runtime or resolve_runtime(cfg)
        self.seed = int(cfg.train.seed)
        torch.manual_seed(self.seed)
        self.method = get_method(cfg.method.name)
        self.store, self.cache = open_data(cfg, self.method)
        self.size = (int(cfg.data.height), int(cfg.data.width))
        self.data = self._make_data()
        self.protocols = check_protocols(self.store.dataset, cfg.eval.protocols)
        # read (and check) the official permutations before training, not at the first evaluation
        official = cfg.eval.gallery_draw == "official"
        self.official = store_permutations(self.store, cfg.eval.gallery_perm) if official else None
        # a resumed run takes its weights from the checkpoint: no ImageNet look-up
        self.model = build_model(cfg, self.data.num_classes, pretrained="none" if checkpoint else None)
        self.weights = self.model.weights.to_dict() if checkpoint is None else checkpoint.get("weights", "unknown")
        self.data.transform.heatmap_size = self.model.feature_map_size(self.size)
        self.model.to(self.rt.device)
        if self.rt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler(self.rt.device.type, enabled=self.rt.amp_dtype == torch.float16)
        self.epoch, self.start_step, self.history = 0, 0, []
        if checkpoint is not None:
            self.load_state(checkpoint, source)
        self.net = self.model
        if self.rt.world_size > 1:
            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.compile_mode = str(cfg.train.compile)
        self.compiled = None if self.compile_mode == "off" else torch.compile(self.net)
        self.meter = LossMeter(self.rt.device)
        self.step, self.taken, self.t0, self.seconds = 0, 0, 0.0, 0.0
        self.parts: dict[str, float] = {}
        self.parts_step = -1  # the step whose parts ``parts`` holds

    def _make_data(self) -> TrainData:
        d, rt = self.cfg.data, self.rt
        return TrainData(self.store, self.cache, trial=d.trial, size=self.size, pad=d.pad, flip_prob=d.flip_prob,
                         ids_per_batch=d.ids_per_batch, per_modality=d.per_modality, seed=self.seed, rank=rt.rank,
                         world_size=rt.world_size, iters_per_epoch=self.cfg.train.iters_per_epoch,
                         views=self.method.views(self.cfg))  # fmt: skip

    def _make_optimizer(self) -> torch.optim.Optimizer:
        opt = self.cfg.optim
        lr = base_lr(self.cfg, self.rt.world_size)
        groups = self.model.param_groups(lr, opt.backbone_lr_mult, opt.weight_decay)
        for g in groups:
            g["base_lr"] = g["lr"]
        return torch.optim.SGD(groups, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=True)

    def load_state(self, ckpt: dict, source: str = "checkpoint") -> None:
        """Model, optimiser (onto its parameters' device), GradScaler and progress of a checkpoint."""
        load_model_state(self.model, ckpt["model"], source)
        fresh = [g["base_lr"] for g in self.optimizer.param_groups]  # the config's, which --force may change
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for g, lr in zip(self.optimizer.param_groups, fresh, strict=True):
            g["base_lr"] = lr
        if self.scaler.is_enabled() and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.start_step = int(ckpt["epoch"]), int(ckpt.get("step", 0))
        self.history = list(ckpt.get("history", []))

    def state_dict(self, epoch: int, step: int) -> dict:
        """The checkpoint payload: ``epoch`` epochs done plus ``step`` steps of the next one."""
        data = self.data
        payload = {"model": self.model.state_dict(), "model_config": self.model.config(),
                   "num_classes": data.num_classes, "label_pids": data.label_pids.tolist(),
                   "config": C.to_dict(self.cfg), "epoch": epoch, "step": step,
                   "optimizer": self.optimizer.state_dict(), "history": self.history, "dataset": self.store.dataset,
                   "input_size": list(self.size), "weights": self.weights}  # fmt: skip
        if self.scaler.is_enabled():
            payload["scaler"] = self.scaler.state_dict()
        return payload

    def generator(self, step: int, stream: int, device: str | torch.device = "cpu") -> torch.Generator:
        """The random stream ``stream`` of ``step`` of the current epoch, on this process's rank."""
        return step_generator(self.seed, self.epoch, step, stream, device, rank=self.rt.rank)

    def prepare(self, batch: Batch) -> tuple[Batch, torch.Tensor, dict]:
        """The batch on the device, its images after the method's hook (memory-formatted) and what the
        method's losses need besides."""
        rt = self.rt
        b = batch.to(rt.device)

        def streams(stream: int, device: str | torch.device = "cpu") -> torch.Generator:
            return self.generator(b.step, stream, device)

        images, extra = self.method.prepare(b.images, b, self.cfg, streams)
        if rt.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return b, images, extra

    def run_step(self, batch: Batch) -> Losses:
        """One optimisation step on ``batch``; the losses stay on the device (summed in :attr:`meter`)."""
        b, images, extra = self.prepare(batch)
        dtype = self.rt.amp_dtype
        with torch.autocast(self.rt.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.forward(images, b.modalities)
        losses = self.method.losses(out, b, self.cfg, extra)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.meter.add(losses, b.step)
        self.taken += 1
        return losses

    def forward(self, images: torch.Tensor, modalities: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training forward pass, compiled under ``train.compile``: a compilation failure falls back to
        eager with a warning under ``auto`` and is one error under ``on``."""
        if self.compiled is None:
            return self.net(images, modalities)
        try:
            return self.compiled(images, modalities)
        except Exception as e:  # torch.compile raises many types (backend, C++ compiler, unsupported op)
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            if self.compile_mode == "on":
                raise KglfrError(f"train.compile=on: torch.compile failed ({why}); use train.compile=auto "
                                 "(falls back to eager) or off") from None  # fmt: skip
            log.warning("train.compile=auto: torch.compile failed (%s); training without compilation", why)
            self.compiled = None
            return self.net(images, modalities)

    def read_losses(self) -> dict[str, float]:
        """Read the losses back to the host (one sync): the last step's parts; raises :class:`NonFiniteLoss`
        naming the first step of the epoch whose loss was not finite."""
        last, bad, at_bad = self.meter.read()
        if bad is not None:
            raise NonFiniteLoss(f"the loss became non-finite ({at_bad}) at epoch {self.epoch + 1} step {bad + 1}")
        self.parts, self.parts_step = last, self.step
        return last

    def begin_epoch(self, epoch: int) -> None:
        opt = self.cfg.optim
        self.epoch = epoch
        factor = lr_factor(epoch, list(opt.milestones), opt.gamma, opt.warmup_epochs)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        self.net.train()
        self.meter.reset()
        self.t0 = time.perf_counter()

    def end_epoch(self) -> dict[str, float]:
        """Read the epoch's losses back, add its mean losses to the history; the epoch counts as done."""
        self.seconds = time.perf_counter() - self.t0
        self.read_losses()
        means = self.meter.means()
        self.history.append({"epoch": self.epoch + 1, **means, "seconds": self.seconds})
        self.epoch, self.start_step = self.epoch + 1, 0
        return means

    def images_per_s(self) -> float:
        n = self.meter.steps * self.data.batch_size * self.rt.world_size
        return n / max(time.perf_counter() - self.t0, 1e-9)

    def loader_options(self) -> dict:
        """On a GPU: pinned batches made ahead by several threads. On the CPU: each batch made in the training
        thread when it is needed. A CPU batch takes milliseconds beside a step of a tenth of a second or
        more, and a second thread's torch ops start their own OpenMP threads on the cores the step uses: the
        demo's step took 444-459 ms with the prefetch thread, 337-389 ms without (2 cores). The batches are
        the same either way."""
        if self.rt.device.type != "cuda":
            return {"prefetch": 0}
        return {"pin": True, "workers": max(1, min(4, (os.cpu_count() or 1) // (2 * self.rt.world_size)))}

    def fit(self, hooks: list) -> str | None:
        """Train from the current state to ``train.epochs``; the reason a hook stopped early, or None."""
        for h in hooks:
            h.before_train(self)
        try:
            for epoch in range(self.epoch, int(self.cfg.train.epochs)):
                self.begin_epoch(epoch)
                for h in hooks:
                    h.before_epoch(self)
                for batch in self.data.epoch(epoch, self.start_step, **self.loader_options()):
                    self.step = batch.step
                    self.run_step(batch)
                    for h in hooks:
                        h.after_step(self)
                self.end_epoch()
                for h in hooks:
                    h.after_epoch(self)
        except StopTraining as e:
            return str(e)
        finally:
            for h in hooks:
                h.after_train(self)
        return None


# ---------------------------------------------------------------------------------------------------
# A run folder around the engine


@dataclass
class TrainResult:
    folder: Path
    epochs: int
    evaluation: Evaluation | None
    summary: dict
    tables: str = ""  # the per-trial tables of the final evaluation, for the CLI to print


def train(
    cfg: DictConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    force: bool = False,
    hooks: Sequence[HookBase] = (),
) -> TrainResult:
    """Train ``cfg`` into the run folder ``out`` (or continue the run there with ``resume``), holding an
    exclusive lock on it. A folder that holds files other than a run's is refused unless ``force``; a
    folder this call created is removed again when it fails before its first checkpoint. ``hooks`` run
    after the checkpoint and metrics hooks (e.g. :class:`~kglfr.train.hooks.StopAfterSteps`)."""
    C.require(cfg, "data.store")
    folder = Path(out).expanduser()
    rt = resolve_runtime(cfg)
    set_threads(int(cfg.train.threads), "train.threads")
    if not rt.main:
        return _run(cfg, folder, rt, resume, progress, hooks)
    if not resume:
        check_out_folder(folder, force)
    created, locked = not folder.exists(), False
    try:
        with folder_lock(folder, "run folder"):
            locked = True
            if not resume:
                check_out_folder(folder, force)  # again, now that no other kglfr process can write there
            handler = file_logging(folder)
            try:
                return _run(cfg, folder, rt, resume, progress, hooks)
            finally:
                end_file_logging(handler)
    except BaseException:
        if created and locked and not (folder / CHECKPOINT).exists():
            shutil.rmtree(folder, ignore_errors=True)  # nothing was trained in the folder this call made
        raise


def _run(cfg: DictConfig, folder: Path, rt: Runtime, resume: bool, progress: bool, extra: Sequence) -> TrainResult:
    log.info("run %s: seed %d, device %s%s, amp %s, %s (%s); evaluation amp %s (%s)", folder, int(cfg.train.seed),
             rt.device, f", DDP {rt.world_size} processes" if rt.world_size > 1 else "", rt.amp_name,
             "channels_last" if rt.channels_last else "contiguous", rt.why, rt.evaluation.amp_name,
             rt.evaluation.why)  # fmt: skip
    ckpt = load_checkpoint(folder / CHECKPOINT) if resume else None
    trainer = Trainer(cfg, rt, checkpoint=ckpt, source=str(folder / CHECKPOINT))
    if resume and trainer.epoch >= int(cfg.train.epochs):
        log.info("run %s is finished (%d of %d epochs): nothing to train; its evaluation and report are made "
                 "again", folder, trainer.epoch, int(cfg.train.epochs))  # fmt: skip
    elif resume:
        log.info("resuming %s at epoch %d step %d", folder, trainer.epoch + 1, trainer.start_step)
    if rt.main:
        record_or_check(folder, trainer.store, trainer.cache, resume)
    if rt.main:  # only now that the checkpoint is known to fit (a failed --resume --force changes nothing)
        write_atomic(folder / CONFIG, lambda f: f.write(C.to_yaml(cfg)))
    _log_plan(trainer)
    metrics = MetricsLog(folder, rt.main, cfg.train.tensorboard)
    metrics.write(rt.record())  # the precision and memory format chosen, and why
    evaluator = EvalHook(folder, metrics, progress)
    try:
        with stop_on_signals() as flag:
            hooks = [LossReadHook(), ProgressHook(progress and rt.main), MetricsHook(metrics), CheckpointHook(folder),
                     *extra, evaluator, SignalHook(folder, flag)]  # fmt: skip
            stopped = trainer.fit(hooks)
        if stopped:
            return TrainResult(folder, trainer.epoch, None, {"stopped": stopped})
        return _finish(trainer, folder, evaluator)
    except NonFiniteLoss as e:
        last = folder / CHECKPOINT
        where = f"the last good checkpoint is {last} (epoch {trainer.epoch})" if last.is_file() else \
            "no checkpoint was written yet"  # fmt: skip
        raise TrainingError(f"{e}; training stopped, {where}; lower optim.lr (or warm up with "
                            "optim.warmup_epochs) or check the data") from None  # fmt: skip
    finally:
        metrics.close()


def _log_plan(trainer: Trainer) -> None:
    data = trainer.data
    counts = ", ".join(f"{k} {v}" for k, v in modality_counts(trainer.store, data.indices).items())
    log.info("%d training identities, %d images (%s), %d steps an epoch of %d images, %d epochs",
             data.num_classes, len(data.indices), counts, len(data), data.batch_size,
             int(trainer.cfg.train.epochs))  # fmt: skip


def _finish(trainer: Trainer, folder: Path, evaluator: EvalHook) -> TrainResult:
    """The final evaluation and the report (main process), then wait for the other processes."""
    cfg, rt, epochs = trainer.cfg, trainer.rt, int(trainer.cfg.train.epochs)
    t0 = time.perf_counter()
    evaluation = evaluator.final(trainer)
    summary: dict = {}
    if rt.main:
        summary = write_report(folder, evaluation, cfg, trainer.store, epochs, trainer.weights, rt.amp_name,
                               rt.evaluation.amp_name)  # fmt: skip
        trainer_page(trainer, folder, evaluation, time.perf_counter() - t0)
        if evaluator.evals and cfg.eval.report_epoch == "best":
            summary["best_epoch_on_test_set"] = best_on_test_set(evaluator.evals)
            write_json_atomic(folder / "summary.json", summary, indent=2)
    if rt.world_size > 1:
        torch.distributed.barrier()
    return TrainResult(folder, epochs, evaluation, summary, format_tables(evaluation) if rt.main else "")
