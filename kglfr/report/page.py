"""Render the report page (Jinja2 templates in ``templates/``) and write it with its pictures, atomically.

The page is ``NAME.html`` with a folder ``NAME_files/`` beside it holding every picture it shows (relative
links, no network). The folder is built under a temporary name and swapped in before the page is written,
so an open page never sees half of a new folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kglfr.io import write_atomic
from kglfr.report import assets
from kglfr.report.data import camera_pair_rank1, mean_cmc, query_rows, results_table, used_images

log = logging.getLogger(__name__)

FEATURE_LABELS = {"bn": "BN", "pool": "pooled"}


@dataclass
class PageInputs:
    """What a page is made of. ``evaluation``: a :class:`kglfr.eval.model_eval.Evaluation` with its features;
    ``info``: the run section's (label, value) rows; ``published``: a function (protocol) -> the published
    figures in percent (``rank1`` .. ``mINP``, ``source``) or None; ``model``/``input_size``: for Grad-CAM;
    ``run_folder``: a run folder whose ``metrics.jsonl`` gives the training curves."""

    title: str
    store: object
    evaluation: object
    info: list[tuple[str, str]] = field(default_factory=list)
    published: Callable[[str], dict | None] = lambda protocol: None
    model: object = None
    input_size: tuple[int, int] | None = None
    device: str = "cpu"
    run_folder: Path | None = None
    feature: str = "bn"
    worst: int = 5
    keypoints: int = 8


def _environment():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("kglfr.report", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    env.filters["heat"] = heat_colour
    return env


def heat_colour(rank1: float) -> str:
    """A cell colour from red (0 %) through yellow (50 %) to green (100 %), light enough for black text."""
    x = min(max(rank1 / 100.0, 0.0), 1.0)
    r, g = (255, int(140 + 230 * x)) if x < 0.5 else (int(255 - 250 * (x - 0.5)), 255)
    return f"rgb({r}, {min(g, 255)}, 150)"


def _protocol_entry(name: str, by: dict, chance: float, published: dict | None) -> dict:
    from kglfr.eval.report import result_to_dict

    first = next(iter(by.values()))
    kinds = [{"name": kind, "label": FEATURE_LABELS.get(kind, kind),
              "table": results_table(result_to_dict(r), published if kind == "bn" else None)}
             for kind, r in by.items()]  # fmt: skip
    n = len(first.trials)
    draw = f", {first.gallery_draw} gallery draw" if first.gallery_draw else ""
    return {"name": name, "title": first.protocol.title, "chance": chance, "kinds": kinds,
            "setting": f"{first.shot_name}, {n} trial{'s' if n != 1 else ''}{draw}, {first.distance} distance",
            "published_source": (published or {}).get("source", "published")}  # fmt: skip


def _pairs(ranking, fs) -> dict:
    from kglfr.eval.metrics import REMOVAL_RULES
    from kglfr.eval.protocols import PROTOCOLS

    q, g = ranking.q, ranking.g
    sim = fs.feats[q] @ fs.feats[g].T
    removed = REMOVAL_RULES[PROTOCOLS[ranking.protocol].rule](fs.pids[q], fs.cams[q], fs.pids[g], fs.cams[g])
    return camera_pair_rank1(sim, fs.pids[q], fs.pids[g], fs.cams[q], fs.cams[g], removed)


def _cam_model(inputs: PageInputs):
    if inputs.model is None or inputs.input_size is None:
        return None
    return assets.CamModel(inputs.model, inputs.input_size, inputs.device)


def _pictures(inputs: PageInputs, protocols: list[dict], rankings: list, folder: Path) -> dict:
    """Every picture of the page into ``folder``; returns the template's names for them."""
    ev, fs = inputs.evaluation, inputs.evaluation.features[inputs.feature]
    curves = {f"{p['name']} {FEATURE_LABELS.get(k, k)}": mean_cmc([t.metrics.cmc for t in r.trials])
              for p in protocols for k, r in ev.results[p["name"]].items()}  # fmt: skip
    assets.cmc_figure(curves, folder / "cmc.png", {p["name"]: p["chance"] for p in protocols})
    cam_model = _cam_model(inputs)
    for p, ranking in zip(protocols, rankings):
        p["pairs"] = _pairs(ranking, fs)
        order = ranking.worst(inputs.worst)
        p["worst"] = assets.worst_rows(inputs.store, ranking, order, fs, folder, f"worst_{p['name']}", cam_model)
    out = {"curves": None, "curves_missing": "no run folder with metrics.jsonl (an evaluation of a checkpoint alone)"}
    metrics = None if inputs.run_folder is None else Path(inputs.run_folder) / "metrics.jsonl"
    if metrics is not None and metrics.is_file():
        from kglfr.errors import KglfrError
        from kglfr.viz.curves import loss_curves

        try:
            out["curves"] = loss_curves(inputs.run_folder, folder / "curves.png").name
        except KglfrError as e:
            out["curves_missing"] = str(e)
    kp = assets.keypoint_overlays(inputs.store, folder / "keypoints.jpg", inputs.keypoints)
    out["keypoints"] = None if kp is None else kp.name
    out["has_cams"] = cam_model is not None
    out["cams_missing"] = "no model given (a page of saved features)"
    return out


def _query_data(inputs: PageInputs, protocols: list[dict], rankings: list, folder: Path, files: str) -> tuple:
    """The thumbnail sheets and the query lists (the page's JSON)."""
    fs, store = inputs.evaluation.features[inputs.feature], inputs.store
    used = used_images(rankings)
    index = {rel: k for k, rel in enumerate(store.relpaths)}
    sheets = assets.thumbnail_sheets(store, np.asarray([index[str(fs.paths[i])] for i in used]), folder)
    thumb_of = {int(i): t for t, i in enumerate(used)}
    data = {"files": files, "sheets": sheets.__dict__,
            "protocols": [{"name": p["name"], "rows": query_rows(r, fs, thumb_of)}
                          for p, r in zip(protocols, rankings)]}  # fmt: skip
    return sheets, json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def _headline(protocols: list[dict], feature: str) -> dict | None:
    if not protocols:
        return None
    p = protocols[0]
    kind = next((k for k in p["kinds"] if k["name"] == feature), p["kinds"][0])
    mean = dict(zip(kind["table"]["keys"], kind["table"]["mean"]))
    return {**mean, "chance": p["chance"], "what": f"{p['title']}, {kind['label']} feature, mean over the trials"}


SECTIONS = (("run", "Run"), ("results", "Results"), ("cameras", "Camera pairs"), ("worst", "Worst queries"),
            ("keypoints", "Keypoints"), ("queries", "All queries"))  # fmt: skip


def write_page(out_dir: str | Path, inputs: PageInputs, name: str = "report") -> Path:
    """Write ``out_dir/NAME.html`` and ``out_dir/NAME_files/`` for ``inputs``; returns the page's path."""
    from kglfr import __version__
    from kglfr.inference.failures import rank_queries

    t0 = time.perf_counter()
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    files, tmp = f"{name}_files", out_dir / f".{name}_files.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ev = inputs.evaluation
    protocols = [_protocol_entry(p, by, ev.chance_rank1[p], inputs.published(p)) for p, by in ev.results.items()]
    rankings = [rank_queries(ev.features[inputs.feature], p["name"]) for p in protocols]
    pictures = _pictures(inputs, protocols, rankings, tmp)
    sheets, data_json = _query_data(inputs, protocols, rankings, tmp, files)
    html = _environment().get_template("report.html.j2").render(
        title=inputs.title, subtitle=f"{inputs.store.dataset} test split · {len(ev.features[inputs.feature])} images",
        headline=_headline(protocols, inputs.feature), sections=SECTIONS, info=inputs.info, protocols=protocols,
        published_note=_published_note(protocols), files=files, sheets=sheets, data_json=data_json,
        feature_label=FEATURE_LABELS.get(inputs.feature, inputs.feature), version=__version__,
        written=time.strftime("%Y-%m-%d %H:%M %Z"), **pictures,
    )  # fmt: skip
    _swap(tmp, out_dir / files)
    page = write_atomic(out_dir / f"{name}.html", lambda f: f.write(html))
    log.info("report page %s written in %.1f s", page, time.perf_counter() - t0)
    return page


def _published_note(protocols: list[dict]) -> str:
    if any(k["table"]["published"] for p in protocols for k in p["kinds"]):
        return "The shaded row: the published figures of the method (where a paper gives them)."
    return "No published figures for this method and protocol."


def _swap(new: Path, dest: Path) -> None:
    """Put the folder ``new`` at ``dest``, replacing the old one."""
    old = dest.with_name(f".{dest.name}.old.tmp")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def write_compare_page(out: str | Path, runs: Sequence[tuple[str, str | Path]], rows: Sequence[dict],
                       title: str = "Comparison") -> Path:  # fmt: skip
    """``out`` (an .html file): a table of ``rows`` (each ``{"method", "runs", "rank1", "mAP", "mINP"}``, the
    metrics as (mean, std) in percent, optionally ``"published"``: {metric: value}) and a link to the report
    page of each (label, run folder) in ``runs`` (its ``report.html``, relative to ``out``)."""
    import os

    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    links = []
    for label, folder in runs:
        page = Path(folder) / "report.html"
        links.append({"label": label, "href": os.path.relpath(page, out.parent), "exists": page.is_file()})
    written = time.strftime("%Y-%m-%d %H:%M %Z")
    html = _environment().get_template("compare.html.j2").render(title=title, rows=list(rows), links=links,
                                                                 written=written)  # fmt: skip
    return write_atomic(out, lambda f: f.write(html))
