"""The step runner of the acceptance scripts (``gpu_check.py``): each step timed, its result, figures and
targets recorded (or its failure, and the next step still runs), the JSON rewritten after every step, and a
table at the end. Optional steps that would not fit in the time budget are skipped, saying so."""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


class StepError(Exception):
    """A check of a step that did not hold (the message says which)."""


@dataclass
class Outcome:
    """What a step function returns: a one-line result for the table, the figures, and its status."""

    summary: str
    figures: dict = field(default_factory=dict)
    status: str = "passed"  # passed, skipped, not_possible
    note: str = ""
    targets: list = field(default_factory=list)


@dataclass
class StepRecord:
    name: str
    status: str
    seconds: float
    summary: str = ""
    figures: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    note: str = ""
    error: str = ""


def target(name: str, value: float | None, limit: float, op: str) -> dict:
    met = None if value is None else (value <= limit if op == "<=" else value >= limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "met": met}


class Runner:
    """Runs steps in turn against ``plan`` (its ``smoke`` flag and per-step ``estimates`` in seconds) on
    ``device``, within ``budget`` seconds, writing ``OUT/NAME.json`` after each step."""

    def __init__(self, out: Path, plan, device: str, budget: float, name: str = "gpu_check") -> None:
        self.out, self.plan, self.device, self.budget, self.name = out, plan, device, budget, name
        self.t0 = time.perf_counter()
        self.records: list[StepRecord] = []
        # what later steps need (store path, step rates, ...); the work folder is removed at the end unless --keep
        self.state: dict = {"work": Path(tempfile.mkdtemp(prefix=f"{name}-work-", dir=out))}
        self.json_path = out / f"{name}.json"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, name: str, fn: Callable[[Runner], Outcome], optional: bool = False) -> StepRecord:
        estimate = float(self.plan.estimates.get(name, 0)) if optional else 0.0
        t = time.perf_counter()
        if optional and self.elapsed() + estimate > self.budget:
            rec = StepRecord(name, "skipped", 0.0, "skipped: budget",
                             note=f"budget: {self.elapsed():.0f} s of {self.budget:.0f} s spent, the step needs "
                                  f"about {estimate:.0f} s")  # fmt: skip
        else:
            try:
                o = fn(self)
                rec = StepRecord(name, o.status, 0.0, o.summary, o.figures, o.targets, o.note)
                self._judge(rec)
            except Exception as e:  # a failing step is recorded; the next one still runs
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                rec = StepRecord(name, "failed", 0.0, f"FAILED: {first[:100]}", error=f"{type(e).__name__}: {e}")
                rec.figures["traceback"] = traceback.format_exc(limit=6).splitlines()[-12:]
                free_gpu()  # a CUDA out-of-memory must not spill into the next step
        rec.seconds = round(time.perf_counter() - t, 2)
        self.records.append(rec)
        self.write()
        return rec

    def _judge(self, rec: StepRecord) -> None:
        """A missed target fails the step on a GPU run; --smoke records targets without judging them."""
        for t in rec.targets:
            t["judged"] = not self.plan.smoke and t["met"] is not None
        missed = [t for t in rec.targets if t["judged"] and not t["met"]]
        if missed and rec.status == "passed":
            rec.status, rec.summary = "failed", f"{rec.summary} [target missed]"
            rec.error = "target missed: " + "; ".join(f"{t['name']} {t['value']:.3g} (want {t['op']} {t['limit']})"
                                                      for t in missed)  # fmt: skip

    def need(self, key: str, step: str) -> object:
        if key not in self.state:
            raise StepError(f"needs the {key} of the {step} step, which did not run or failed")
        return self.state[key]

    def failed(self) -> bool:
        return any(r.status == "failed" for r in self.records)

    def write(self) -> None:
        payload = {"name": self.name, "mode": "smoke" if self.plan.smoke else "full", "device": self.device,
                   "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv, "budget_s": self.budget,
                   "seconds": round(self.elapsed(), 2), "passed": not self.failed(), "plan": asdict(self.plan),
                   "steps": [asdict(r) for r in self.records]}  # fmt: skip
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        tmp.replace(self.json_path)

    def table(self) -> str:
        rows = [("step", "status", "seconds", "result")]
        rows += [(r.name, r.status, f"{r.seconds:.1f}", r.summary) for r in self.records]
        w = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d}" for a, b, c, d in rows]
        lines.insert(1, "-" * min(120, max(len(s) for s in lines)))
        verdict = "FAILED: " + ", ".join(r.name for r in self.records if r.status == "failed") if self.failed() \
            else "all checks passed"  # fmt: skip
        lines.append(f"{verdict} in {self.elapsed():.0f} s ({self.device}); {self.json_path}")
        return "\n".join(lines)


def free_gpu() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
