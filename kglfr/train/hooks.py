"""What happens around the steps of :meth:`kglfr.train.trainer.Trainer.fit` (detectron2's hooks, in small).

A hook's methods are called in list order: ``before_train``, then per epoch ``before_epoch``, after
each step ``after_step`` (``trainer.step`` is the step just taken), ``after_epoch`` (``trainer.epoch``
epochs are done), and ``after_train`` however the loop ended.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kglfr.eval.model_eval import Evaluation, evaluate_model
from kglfr.runtime import input_format, release_host_memory
from kglfr.train.checkpoint import save_checkpoint
from kglfr.train.run_folder import CHECKPOINT, Interrupted, MetricsLog, TrainingError

if TYPE_CHECKING:
    from kglfr.train.trainer import Trainer

log = logging.getLogger(__name__)


class StopTraining(Exception):  # noqa: N818 (a signal to the loop, not an error)
    """Raised by a hook to end :meth:`Trainer.fit` at once, saving nothing (as a killed process would)."""


class HookBase:
    def before_train(self, trainer: Trainer) -> None: ...

    def before_epoch(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def after_epoch(self, trainer: Trainer) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


def logging_step(trainer: Trainer) -> bool:
    return (trainer.step + 1) % max(1, int(trainer.cfg.train.log_every)) == 0


class LossReadHook(HookBase):
    """Read the losses back every ``train.log_every`` steps (and stop on a non-finite one); the epoch's end
    reads them too."""

    def after_step(self, trainer: Trainer) -> None:
        if logging_step(trainer):
            trainer.read_losses()


class ProgressHook(HookBase):
    """A progress bar per epoch on stderr (tqdm), with the last losses read back."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar = enabled, None

    def before_epoch(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        epochs = int(trainer.cfg.train.epochs)
        self.bar = tqdm(total=len(trainer.data), initial=trainer.start_step, desc=f"epoch {trainer.epoch + 1}/{epochs}",
                        unit="step", disable=not self.enabled, file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
                        leave=False)  # fmt: skip

    def after_step(self, trainer: Trainer) -> None:
        self.bar.update(1)
        if trainer.parts_step == trainer.step:
            self.bar.set_postfix(loss=f"{trainer.parts['loss']:.3f}", acc=f"{trainer.parts['acc']:.2f}")

    def after_epoch(self, trainer: Trainer) -> None:
        self.after_train(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsHook(HookBase):
    """Step records every ``train.log_every`` steps and one record per epoch in ``metrics.jsonl``."""

    def __init__(self, metrics: MetricsLog) -> None:
        self.metrics = metrics

    def after_step(self, trainer: Trainer) -> None:
        if not (trainer.rt.main and trainer.parts_step == trainer.step and logging_step(trainer)):
            return
        s = trainer.step
        rec = {"type": "step", "epoch": trainer.epoch + 1, "step": s + 1,
               "global_step": trainer.epoch * len(trainer.data) + s + 1, "lr": trainer.optimizer.param_groups[0]["lr"],
               **{k: round(v, 5) for k, v in trainer.parts.items()},
               "images_per_s": round(trainer.images_per_s(), 1)}  # fmt: skip
        self.metrics.write(rec, rec["global_step"])

    def after_epoch(self, trainer: Trainer) -> None:
        if not trainer.rt.main:
            return
        means = {k: v for k, v in trainer.history[-1].items() if k not in ("epoch", "seconds")}
        seconds = trainer.seconds
        rate = trainer.meter.steps * trainer.data.batch_size * trainer.rt.world_size / max(seconds, 1e-9)
        self.metrics.write({"type": "epoch", "epoch": trainer.epoch, **{k: round(v, 5) for k, v in means.items()},
                            "lr": trainer.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                            "images_per_s": round(rate, 1)}, trainer.epoch)  # fmt: skip
        log.info("epoch %d/%d: %s (%.1f s)", trainer.epoch, int(trainer.cfg.train.epochs),
                 ", ".join(f"{k} {v:.4f}" for k, v in means.items()), seconds)  # fmt: skip


class CheckpointHook(HookBase):
    """``RUN/checkpoint.pt`` (atomic) at the end of every epoch, by the main process."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / CHECKPOINT

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.rt.main:
            save_checkpoint(self.path, trainer.state_dict(trainer.epoch, 0))


class StopAfterSteps(HookBase):
    """Stop abruptly after ``steps`` steps of this call, saving nothing, as a killed process would (after
    the epoch's checkpoint when the last step ends an epoch): for the tests of ``--resume``."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def after_step(self, trainer: Trainer) -> None:
        if trainer.taken >= self.steps and trainer.step + 1 < len(trainer.data):
            raise StopTraining("max_steps")

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.taken >= self.steps:
            raise StopTraining("max_steps")


class SignalHook(HookBase):
    """Ctrl-C or SIGTERM (a flag set by :func:`~kglfr.train.runtime.stop_on_signals`): save the step, stop."""

    def __init__(self, folder: Path, flag: dict) -> None:
        self.folder, self.flag = Path(folder), flag

    def after_step(self, trainer: Trainer) -> None:
        name = self.flag["signal"]
        if not name:
            return
        trainer.read_losses()  # never save a step whose loss was not finite
        where = f"at epoch {trainer.epoch + 1} step {trainer.step + 1}"
        if trainer.rt.main:
            save_checkpoint(self.folder / CHECKPOINT, trainer.state_dict(trainer.epoch, trainer.step + 1))
        raise Interrupted(f"{name}: saved {self.folder / CHECKPOINT} {where}; continue with "
                          f"'kglfr train --resume {self.folder}'", name)  # fmt: skip


DIVERGED = ("the model diverged: train from ImageNet weights (model.pretrained), with a learning-rate warm-up "
            "(optim.warmup_epochs=5) or a lower optim.lr")  # fmt: skip


class EvalHook(HookBase):
    """Evaluation every ``train.eval_every`` epochs (not the last: :meth:`final` evaluates it), on the main
    process, under the dataset's protocols; the evaluations are kept for ``eval.report_epoch=best``."""

    def __init__(self, folder: Path, metrics: MetricsLog, progress: bool) -> None:
        self.folder, self.metrics, self.progress = Path(folder), metrics, progress
        self.evals: list[tuple[int, Evaluation]] = []

    def after_epoch(self, trainer: Trainer) -> None:
        every, epochs = int(trainer.cfg.train.eval_every), int(trainer.cfg.train.epochs)
        if every > 0 and trainer.epoch % every == 0 and trainer.epoch < epochs:
            from kglfr.train.report_page import trainer_page

            t0 = time.perf_counter()
            trainer_page(trainer, self.folder, self.evaluate(trainer), time.perf_counter() - t0)

    def final(self, trainer: Trainer) -> Evaluation | None:
        return self.evaluate(trainer)

    def evaluate(self, trainer: Trainer) -> Evaluation | None:
        if not (trainer.rt.main and trainer.protocols):
            return None
        ev = self._run(trainer)
        self._log(ev, trainer.epoch)
        self.evals.append((trainer.epoch, ev))
        return ev

    def _run(self, trainer: Trainer) -> Evaluation:
        from kglfr.eval.features import FeatureFileError

        cfg, rt = trainer.cfg, trainer.rt
        trainer.optimizer.zero_grad(set_to_none=True)  # the next step sets them anew
        if rt.device.type == "cpu":
            release_host_memory()  # what the backward passes left in the heap, before the evaluation's batches
        model = trainer.model
        if input_format(model) != rt.evaluation.memory_format:  # a copy: the training keeps its own format
            model = copy.deepcopy(model).to(memory_format=rt.evaluation.memory_format)
        try:
            return evaluate_model(model, trainer.store, trainer.protocols, trial=cfg.data.trial,
                                  size=trainer.size, trials=cfg.eval.trials, batch_size=cfg.eval.batch_size,
                                  device=rt.device, flip=cfg.eval.flip, amp_dtype=rt.evaluation.amp_dtype,
                                  progress=self.progress,
                                  official=trainer.official)  # fmt: skip
        except FeatureFileError as e:
            msg = f"the evaluation after epoch {trainer.epoch} gave unusable features ({e}): {DIVERGED}"
            raise TrainingError(f"{msg}; the run's checkpoint and logs are kept in {self.folder}") from None

    def _log(self, ev: Evaluation, epoch: int) -> None:
        for p, by in ev.results.items():
            rec = {"type": "eval", "epoch": epoch, "protocol": p, "chance_rank1": round(ev.chance_rank1[p], 3)}
            for kind, r in by.items():
                m = r.mean()
                rec.update({f"{kind}_{k}": round(m[k], 3) for k in ("rank1", "rank10", "mAP", "mINP")})
            self.metrics.write(rec, epoch)
            bn, pool = by["bn"].mean(), by["pool"].mean()
            log.info("epoch %d %s: Rank-1 %.2f mAP %.2f (BN feature; pooled: Rank-1 %.2f mAP %.2f; chance "
                     "Rank-1 %.2f)", epoch, p, bn["rank1"], bn["mAP"], pool["rank1"], pool["mAP"],
                     ev.chance_rank1[p])  # fmt: skip
