"""Methods compared on one store under one budget (``kglfr compare``): plan, train, resume, one table.

Planning (:func:`plan_compare`) is pure: a method name maps to the preset ``<dataset>/<method>`` of the
store's dataset (``sysu``, ``regdb``, ``llcm``; a synthetic store has the SYSU layout, so ``sysu``); a name
with a ``/`` is a preset itself. Without a base preset, each method's preset is used as is. With one
(``demo``), a run's config is the base preset's, except the sections :data:`METHOD_SECTIONS` (``method``
where the schema has it, ``loss``, ``augment``), which are the method preset's: the base gives the budget
(``data``: image size, padding, batch; ``model``: backbone, pretrained weights; ``optim`` and ``train``:
the schedule; ``eval``), the method preset gives the method (:func:`merge_method`). Overrides apply last,
to every run.

Each run trains into ``OUT/<method>-seed<S>`` (its resolved ``config.yaml`` beside its results); a run
that finished with the same config on the same store is kept (:func:`kglfr.train.multirun.finished_run`),
one stopped part-way with the same config resumes from its checkpoint, any other starts afresh. A run
that fails (an exception, a non-finite loss) becomes an outcome with its one-line reason and the others go
on. :func:`aggregate` turns the outcomes into one row per method (mean ± std over seeds), :func:`compare_table`
into Markdown; :func:`write_compare` writes ``OUT/compare.md`` and ``OUT/compare.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from kglfr.errors import KglfrError
from kglfr.eval.published import published
from kglfr.train import config as C
from kglfr.train.multirun import finished_run, fresh_folder, mean_std

log = logging.getLogger(__name__)

# The config sections a method's preset gives a run under a base preset; every other section is the base's.
METHOD_SECTIONS = ("method", "loss", "augment")
# A store's dataset -> the preset folder of its methods.
DATASET_PRESETS = {"sysu": "sysu", "regdb": "regdb", "llcm": "llcm"}
RUN_MARK = "compare_run.json"  # in a run folder once it finished: the store's identity and the run's time
TABLE_JSON, TABLE_MD, TABLE_HTML = "compare.json", "compare.md", "compare.html"
METRICS = ("rank1", "mAP", "mINP")


@dataclass
class PlannedRun:
    """One method at one seed: its preset, run folder and resolved config."""

    method: str
    seed: int
    preset: str
    folder: Path
    cfg: DictConfig


@dataclass
class Outcome:
    """What became of a run: ``state`` is ``trained``, ``kept`` (finished earlier) or ``failed`` (``reason``);
    ``metrics``: the BN feature's Rank-1, mAP and mINP under the table's protocol; ``seconds``: training
    and final evaluation, wall clock."""

    method: str
    seed: int
    preset: str
    folder: str
    state: str
    seconds: float | None = None
    metrics: dict[str, float] | None = None
    chance_rank1: float | None = None
    reason: str | None = None


def method_preset(method: str, dataset: str) -> str:
    """The preset of ``method`` for a store of ``dataset`` (``caj`` on sysu -> ``sysu/caj``); a name with a
    ``/`` is a preset already."""
    if "/" in method:
        return method
    if dataset not in DATASET_PRESETS:
        raise KglfrError(f"store holds {dataset!r}, which has no method presets ({', '.join(DATASET_PRESETS)}); "
                         "give methods as preset names or files (e.g. sysu/kglfr)")  # fmt: skip
    return f"{DATASET_PRESETS[dataset]}/{method}"


def merge_method(base: dict, method: dict) -> dict:
    """The config dict of a run: ``base``'s sections, with :data:`METHOD_SECTIONS` taken whole from ``method``."""
    return {**base, **{s: method[s] for s in METHOD_SECTIONS if s in method}}


def run_config(preset: str, base: str | None, store: str | Path, seed: int, overrides: Sequence[str]) -> DictConfig:
    """The resolved config of ``preset`` at ``seed`` on ``store``: the preset as is, or under ``base``
    (:func:`merge_method`), then ``overrides``, each checked against the schema."""
    common = [f"data.store={store}", f"train.seed={seed}", *overrides]
    if base is None:
        return C.load_config(preset, common)
    values = merge_method(C.to_dict(C.load_config(base)), C.to_dict(C.load_config(preset)))
    cfg = C.config_from_dict(values, f"preset {base} with the method of {preset}")
    for item in common:  # one at a time, so that an error names the override
        cfg = C.config_from_dict(C.deep_merge(C.to_dict(cfg), C.parse_overrides([item])), f"override {item!r}")
    return cfg


def plan_compare(methods: Sequence[str], seeds: Sequence[int], dataset: str, store: str | Path, out: str | Path,
                 base: str | None = None, overrides: Sequence[str] = ()) -> list[PlannedRun]:  # fmt: skip
    """Every method x seed with its folder ``out/<method>-seed<S>`` and config, method by method; every
    config is resolved here, so a bad method or override fails before anything trains."""
    if not methods:
        raise KglfrError("methods is empty; name at least one method (e.g. kglfr)")
    if len(set(methods)) != len(methods):
        raise KglfrError(f"methods names a method twice: {', '.join(methods)}")
    if not seeds:
        raise KglfrError("seeds must be at least 1")
    plan = []
    for m in methods:
        preset = method_preset(m, dataset)
        try:
            C.resolve_preset(preset)
        except C.ConfigError:
            raise KglfrError(f"methods: {m!r} has no preset {preset!r}; presets: {', '.join(C.presets())}") from None
        for s in seeds:
            folder = Path(out) / f"{m.replace('/', '-')}-seed{s}"
            plan.append(PlannedRun(m, s, preset, folder, run_config(preset, base, store, s, overrides)))
    return plan


def is_synthetic(store) -> bool:
    """Whether a :class:`~kglfr.data.store.Store` was prepared from the built-in synthetic dataset (its source
    root holds the ground-truth keypoint sidecar that ``kglfr synth`` writes)."""
    from kglfr.data.synth import SIDECAR_NAME

    return (store.root / SIDECAR_NAME).is_file()


def headline(summary: dict, protocol: str) -> tuple[dict[str, float], float]:
    """The BN feature's Rank-1, mAP, mINP under ``protocol`` in a run's summary, and its chance Rank-1."""
    by = summary["protocols"][protocol]
    return {k: float(by["bn"]["mean"][k]) for k in METRICS}, float(by["chance_rank1"])


def describe_error(e: BaseException) -> str:
    """One line for a failed run: a kglfr error's message, else the exception's type and first line."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text if isinstance(e, KglfrError) else f"{type(e).__name__}: {text}".rstrip(": ")


def _resumable(run: PlannedRun) -> bool:
    """The run stopped part-way with this very config: its checkpoint can carry it on."""
    import yaml

    from kglfr.train.run_folder import CHECKPOINT, CONFIG

    if not (run.folder / CHECKPOINT).is_file():
        return False
    try:
        saved = C.config_from_dict(yaml.safe_load((run.folder / CONFIG).read_text()), str(run.folder / CONFIG))
    except (OSError, ValueError, AttributeError, yaml.YAMLError, C.ConfigError):
        return False
    return not C.diff(C.to_dict(saved), C.to_dict(run.cfg))


def kept_outcome(run: PlannedRun, data: dict, protocol: str) -> Outcome | None:
    """The outcome of ``run`` when it finished earlier with its config on ``data``'s store, else None."""
    summary = finished_run(run.folder, run.cfg, data, protocol, RUN_MARK)
    if summary is None:
        return None
    out = Outcome(run.method, run.seed, run.preset, str(run.folder), "kept")
    out.seconds = json.loads((run.folder / RUN_MARK).read_text()).get("seconds")
    out.metrics, out.chance_rank1 = headline(summary, protocol)
    return out


def train_one(run: PlannedRun, data: dict, protocol: str, progress: bool = False) -> Outcome:
    """Train ``run`` (from its checkpoint when it stopped part-way with this config, else afresh) and read
    its result; a failure other than an interruption becomes a ``failed`` outcome."""
    from kglfr.io import write_json_atomic
    from kglfr.train.run_folder import Interrupted
    from kglfr.train.trainer import train

    out = Outcome(run.method, run.seed, run.preset, str(run.folder), "trained")
    resume = _resumable(run)
    if not resume:
        fresh_folder(run.folder)
    start = time.perf_counter()
    try:
        summary = train(run.cfg, run.folder, resume=resume, progress=progress).summary
        out.metrics, out.chance_rank1 = headline(summary, protocol)
    except Interrupted:
        raise
    except Exception as e:  # one run's failure must not stop the others: report it, go on
        log.debug("run %s failed", run.folder, exc_info=True)
        out.state, out.reason = "failed", describe_error(e)
    out.seconds = time.perf_counter() - start
    if out.state == "trained":
        mark = {**data, "method": run.method, "preset": run.preset, "seed": run.seed, "seconds": out.seconds}
        write_json_atomic(run.folder / RUN_MARK, mark, indent=2)
    return out


Notify = Callable[[int, int, PlannedRun, "Outcome | None"], None]  # (i, N, run, None before / outcome after)


def run_compare(plan: Sequence[PlannedRun], data: dict, protocol: str, progress: bool = False,
                notify: Notify | None = None) -> list[Outcome]:  # fmt: skip
    """Every planned run in turn: kept when it finished earlier (:func:`kept_outcome`), else trained
    (:func:`train_one`); ``notify`` is called before and after each run that trains."""
    outcomes = []
    for i, run in enumerate(plan, 1):
        out = kept_outcome(run, data, protocol)
        if out is None:
            if notify is not None:
                notify(i, len(plan), run, None)
            out = train_one(run, data, protocol, progress)
            if notify is not None:
                notify(i, len(plan), run, out)
        outcomes.append(out)
    return outcomes


def _stats(values: Sequence[float]) -> dict:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"values": list(values), "mean": float(np.mean(values)) if values else None, "std": std}


def aggregate(outcomes: Sequence[Outcome], protocol: str) -> list[dict]:
    """One row per method, in the outcomes' order: the finished seeds' metrics (values, mean, sample std),
    their time per run, the failed seeds with their reasons, and the published figures under ``protocol``."""
    rows: dict[str, dict] = {}
    for o in outcomes:
        row = rows.setdefault(o.method, {"method": o.method, "preset": o.preset, "seeds": [], "failed": [],
                                         "published": published(o.method, protocol)})  # fmt: skip
        if o.state == "failed":
            row["failed"].append({"seed": o.seed, "reason": o.reason})
        else:
            row["seeds"].append(o.seed)
    for row in rows.values():
        done = [o for o in outcomes if o.method == row["method"] and o.state != "failed"]
        for k in METRICS:
            row[k] = _stats([o.metrics[k] for o in done])
        row["seconds"] = _stats([o.seconds for o in done if o.seconds is not None])
    return list(rows.values())


def format_seconds(seconds: float | None) -> str:
    """``41 s``, ``2 min 05 s``, ``1 h 02 min``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _published_cell(p: dict | None) -> str:
    if p is None:
        return "–"
    return " / ".join("–" if p[k] is None else f"{p[k]:.2f}" for k in METRICS)


def _row_lines(row: dict, with_published: bool) -> list[str]:
    """The table lines of a method: its mean ± std over the finished seeds, then a line per failed seed."""
    tail = f" {_published_cell(row['published'])} |" if with_published else ""
    lines = []
    if row["seeds"]:
        cells = " | ".join(mean_std(row[k]["values"]) for k in METRICS)
        lines.append(f"| {row['method']} | {len(row['seeds'])} | {cells} | {format_seconds(row['seconds']['mean'])} |"
                     + tail)  # fmt: skip
    for f in row["failed"]:
        reason = str(f["reason"]).replace("|", "\\|")
        lines.append(f"| {row['method']} (seed {f['seed']}) | failed: {reason} | – | – | – | – |" + tail)
    return lines


def compare_table(table: dict) -> str:
    """The Markdown of a :func:`compare_payload` table: a caption, one row per method (a row per failed run),
    and the notes: where each run's config came from, what the time is, where the published figures are from."""
    rows, title = table["rows"], table["protocol_title"]
    with_published = any(r["published"] for r in rows)
    head, rule = "| method | runs | Rank-1 | mAP | mINP | time per run |", "| --- | --- | --- | --- | --- | --- |"
    if with_published:
        where = f"real {title}" if table["synthetic"] else title
        head, rule = head + f" published ({where}): Rank-1 / mAP / mINP |", rule + " --- |"
    lines = [f"# Methods compared: {title} on {table['store']}", "", table["caption"], "", head, rule]
    for row in rows:
        lines += _row_lines(row, with_published)
    lines += ["", *_notes(table, with_published)]
    return "\n".join(lines) + "\n"


def _notes(table: dict, with_published: bool) -> list[str]:
    base = table["base"]
    notes = [f"Configs: each method's own preset{', then the overrides' if table['overrides'] else ''}."
             if base is None else
             f"Configs: the sections {', '.join(table['method_sections'])} from each method's preset, every other "
             f"section (data, model, optim, train, eval: image size, batch, backbone, weights, schedule) from the "
             f"{base} preset{', then the overrides' if table['overrides'] else ''}.",
             "Each run's resolved config is OUT/<method>-seed<S>/config.yaml.",
             "Rank-1 / mAP / mINP: BN feature, mean ± sample std over the finished seeds. Time per run: training "
             "and final evaluation, wall clock, mean over the finished seeds."]  # fmt: skip
    if with_published:
        sources = sorted({r["published"]["source"] for r in table["rows"] if r["published"]})
        notes.append("Published: " + "; ".join(sources) + ".")
        if table["synthetic"]:
            notes.append("This store is synthetic: the published figures are the papers' on the real dataset, "
                         "not comparable with the measured columns; they show the methods' order there.")  # fmt: skip
    return notes


def compare_payload(outcomes: Sequence[Outcome], *, store: str, dataset: str, protocol: str, protocol_title: str,
                    base: str | None, overrides: Sequence[str], synthetic: bool, caption: str) -> dict:  # fmt: skip
    """The ``compare.json`` content: what was compared and how, one row per method, every run's outcome."""
    return {"store": store, "dataset": dataset, "protocol": protocol, "protocol_title": protocol_title,
            "feature": "bn", "base": base, "method_sections": list(METHOD_SECTIONS), "overrides": list(overrides),
            "synthetic": synthetic, "caption": caption, "rows": aggregate(outcomes, protocol),
            "runs": [asdict(o) for o in outcomes]}  # fmt: skip


def page_rows(table: dict) -> list[dict]:
    """The rows of the comparison page: each method with a finished seed, its metrics as (mean, std)."""
    return [{"method": r["method"], "runs": len(r["seeds"]), "published": r["published"],
             **{k: (r[k]["mean"], r[k]["std"]) for k in METRICS}}
            for r in table["rows"] if r["seeds"]]  # fmt: skip


def write_compare(out: str | Path, table: dict) -> tuple[Path, Path, str]:
    """Write ``out/compare.json``, ``out/compare.md`` and ``out/compare.html`` (the page linking each run's
    report page); returns (json, md, the Markdown)."""
    from kglfr.io import write_atomic, write_json_atomic
    from kglfr.report import write_compare_page

    text = compare_table(table)
    Path(out).mkdir(parents=True, exist_ok=True)
    js = write_json_atomic(Path(out) / TABLE_JSON, table, indent=2)
    md = write_atomic(Path(out) / TABLE_MD, lambda f: f.write(text))
    runs = [(f"{r['method']} seed {r['seed']}", r["folder"]) for r in table["runs"]]
    write_compare_page(Path(out) / TABLE_HTML, runs, page_rows(table),
                       title=f"Methods compared: {table['protocol_title']}")  # fmt: skip
    return js, md, text
