"""The Table 2 ablation of the paper on any prepared store: train each row, resume by finished run, tabulate.

Rows (:data:`TABLE2`): baseline, +KMLFR, +Random Erasing, +KEGFR, KEGFR+KMLFR, and a control row
(:data:`CONTROL_ROWS`: Random Erasing at global triplet weight 0.5, so that Random Erasing against
KEGFR changes one thing), trained when its preset exists. ``base=None`` trains each row's own preset
(the paper's setting, for SYSU-MM01); a ``base`` preset (``demo``) takes only each row's method (its
``loss`` and ``augment`` keys, :func:`method_overrides`) at that preset's scale. A run that finished with
the same config on the same data is kept (:func:`finished_run`), so an interrupted ablation resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kglfr.errors import KglfrError
from kglfr.train.multirun import finished_run, fresh_folder, mean_std, store_identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One row of the table: its preset, the method switches, the paper's figures (SYSU all-search)."""

    idx: int | str
    preset: str
    random_erasing: bool
    kegfr: bool
    kmlfr: bool
    paper: tuple[float, float] | None = None  # (Rank-1, mAP) in percent
    control: bool = False


TABLE2 = (
    Row(1, "sysu/baseline", False, False, False, (52.88, 51.45)),
    Row(2, "sysu/kmlfr", False, False, True, (54.40, 54.33)),
    Row(3, "sysu/random_erasing", True, False, False, (64.87, 63.15)),
    Row(4, "sysu/kegfr", False, True, False, (67.10, 65.17)),
    Row(5, "sysu/kglfr", False, True, True, (70.44, 67.59)),
)
# Random Erasing at global triplet weight 0.5 (row 4's weight): one variable away from row 4.
CONTROL_ROWS = (Row("3b", "sysu/random_erasing_w05", True, False, False, None, control=True),)
ABLATION_MARK = "ablation.json"


@dataclass
class RowResult:
    row: Row
    rank1: list[float] = field(default_factory=list)
    mAP: list[float] = field(default_factory=list)
    chance_rank1: float | None = None


def method_overrides(preset: str, reference: str = "sysu/kglfr") -> list[str]:
    """The ``loss`` and ``augment`` keys in which a Table 2 preset differs from ``reference``: its method,
    without its scale (backbone, input size, epochs), so it can be trained at another preset's scale."""
    from kglfr.train import config as C

    row, full = C.to_dict(C.load_config(preset)), C.to_dict(C.load_config(reference))
    out = []
    for key in C.diff(row, full):
        section, name = key.split(".", 1)
        if section in ("loss", "augment"):
            out.append(f"{key}={row[section][name]}")
    return out


def available_rows(controls: bool = True) -> list[Row]:
    """Table 2's rows, then the control rows whose preset exists (when ``controls``)."""
    from kglfr.train import config as C

    rows = list(TABLE2)
    for row in CONTROL_ROWS if controls else ():
        try:
            C.load_config(row.preset)
        except C.ConfigError:
            log.info("control row %s skipped: no preset %s", row.idx, row.preset)
            continue
        rows.append(row)
    return rows


def row_config(row: Row, store: str | Path, seed: int, base: str | None, overrides: Sequence[str]):
    """The config of ``row`` at ``seed`` on ``store``: its own preset, or ``base`` with its method."""
    from kglfr.train import config as C

    common = [f"data.store={store}", f"train.seed={seed}", *overrides]
    if base is None:
        return C.load_config(row.preset, common)
    return C.load_config(base, [*method_overrides(row.preset), *common])


Notify = Callable[[Row, int, Path, bool], None]  # (row, seed, run folder, kept) before each run


def run_ablation(store: str | Path, out: str | Path, *, seeds: int = 1, seed: int = 0, base: str | None = None,
                 overrides: Sequence[str] = (), data: dict | None = None, protocol: str = "sysu-all",
                 controls: bool = True, progress: bool = False,
                 notify: Notify | None = None) -> list[RowResult]:  # fmt: skip
    """Train every row ``seeds`` times (seeds ``seed``..) into ``out/<preset name>-seed<s>``, keeping
    finished runs; return the BN feature's Rank-1 and mAP under ``protocol`` per row. ``data``: what the
    runs' data depends on (default: :func:`store_identity`)."""
    from kglfr.io import write_json_atomic
    from kglfr.train.trainer import train

    if seeds < 1:
        raise KglfrError(f"seeds must be at least 1, got {seeds}")
    data = store_identity(store) if data is None else data
    results = []
    for row in available_rows(controls):
        res = RowResult(row)
        for s in range(seed, seed + seeds):
            cfg = row_config(row, store, s, base, overrides)
            run_dir = Path(out) / f"{row.preset.split('/')[-1]}-seed{s}"
            summary = finished_run(run_dir, cfg, data, protocol, ABLATION_MARK)
            if notify is not None:
                notify(row, s, run_dir, summary is not None)
            if summary is None:
                fresh_folder(run_dir)
                summary = train(cfg, run_dir, progress=progress).summary
                write_json_atomic(run_dir / ABLATION_MARK, data, indent=2)
            by = summary["protocols"][protocol]
            res.rank1.append(by["bn"]["mean"]["rank1"])
            res.mAP.append(by["bn"]["mean"]["mAP"])
            res.chance_rank1 = by["chance_rank1"]
        results.append(res)
    return results


def ablation_table(results: Sequence[RowResult], seeds: int, caption: str, paper: bool = False) -> str:
    """Markdown table of the rows (mean ± std over seeds); ``paper``: the paper's Table 2 figures beside."""
    mark = {True: "✓", False: ""}
    head = "| idx | Random erasing | KEGFR | KMLFR | R-1 | mAP |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    if paper:
        head, rule = head + " paper R-1 | paper mAP |", rule + " --- | --- |"
    lines = [caption, "", head, rule]
    for r in results:
        w = r.row
        idx = f"{w.idx} (control: triplet weight 0.5)" if w.control else str(w.idx)
        line = (f"| {idx} | {mark[w.random_erasing]} | {mark[w.kegfr]} | {mark[w.kmlfr]} | {mean_std(r.rank1)} | "
                f"{mean_std(r.mAP)} |")  # fmt: skip
        if paper:
            line += " – | – |" if w.paper is None else f" {w.paper[0]:.2f} | {w.paper[1]:.2f} |"
        lines.append(line)
    if paper:
        lines += ["", "Paper: Table 2 of the KGLFR-Net paper (SYSU-MM01 all-search, single-shot, Rank-1 / mAP %)."]
    return "\n".join(lines) + "\n"


def write_ablation(folder: str | Path, results: Sequence[RowResult], seeds: int, caption: str,
                   paper: bool = False) -> tuple[Path, Path, str]:  # fmt: skip
    """Write ``ablation.json`` and ``ablation.md`` into ``folder``; returns (json, md, the table)."""
    from kglfr.io import write_atomic, write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        row = {k: v for k, v in asdict(r.row).items() if k not in ("paper", "control")}
        row.update(rank1=r.rank1, mAP=r.mAP, chance_rank1=r.chance_rank1)
        if r.row.control:
            row["control"] = True
        if paper:
            row["paper"] = None if r.row.paper is None else {"rank1": r.row.paper[0], "mAP": r.row.paper[1]}
        rows.append(row)
    js = write_json_atomic(folder / "ablation.json", {"seeds": seeds, "feature": "bn", "rows": rows}, indent=2)
    text = ablation_table(results, seeds, caption, paper)
    md = write_atomic(folder / "ablation.md", lambda f: f.write(text))
    return js, md, text
