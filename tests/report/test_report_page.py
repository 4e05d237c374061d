"""The report page: its figures equal the results JSON, every picture it names is beside it, it opens offline in a
real browser (skipped without one), and training and ``kglfr evaluate --report`` leave it."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from layouts import TINY_TRAIN, eval_net, synthetic_store

from kglfr.cli import main
from kglfr.data.store import Store
from kglfr.eval.model_eval import evaluate_model
from kglfr.eval.report import result_to_dict
from kglfr.inference.failures import rank_queries
from kglfr.report import write_compare_page
from kglfr.train import config as C
from kglfr.train.report_page import write_run_page
from kglfr.train.run_folder import _foreign

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
NO_BROWSER = "no Chromium installed (apt-get install -y chromium; pip install playwright for the full check)"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store.open(synthetic_store(tmp_path_factory.mktemp("report"))[0])


@pytest.fixture(scope="module")
def page(store, tmp_path_factory):
    """(page path, evaluation): a random ResNet-18 network's page on the synthetic store's sysu-all."""
    net = eval_net()
    ev = evaluate_model(net, store, ["sysu-all"], size=(64, 32), trials=2)
    cfg = C.load_config("demo", [f"data.store={store.path}"])
    out = tmp_path_factory.mktemp("page")
    path = write_run_page(out, cfg, store, ev, model=net, size=(64, 32), weights="none (random initialisation)",
                          stages={"evaluation": 1.0})  # fmt: skip
    return path, ev


def cells(text: str) -> dict[tuple[str, str, str, str], str]:
    pattern = r'data-protocol="([^"]+)" data-kind="([^"]+)" data-trial="([^"]+)" data-key="([^"]+)">([0-9.]+)'
    return {m[:4]: m[4] for m in re.findall(pattern, text)}


def page_data(text: str) -> dict:
    raw = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S)[1]
    return json.loads(raw.replace("<\\/", "</"))


def test_the_page_shows_the_figures_of_the_results_json(page):
    path, ev = page
    text = path.read_text()
    shown = cells(text)
    for kind, result in ev.results["sysu-all"].items():
        js = json.loads(json.dumps(result_to_dict(result)))  # what results/sysu-all_<kind>.json holds
        for tid, trial in zip(js["trial_ids"], js["trials"]):
            for key, value in trial.items():
                assert shown[("sysu-all", kind, str(tid), key)] == f"{value:.2f}"
        for key, value in js["mean"].items():
            assert shown[("sysu-all", kind, "mean", key)] == f"{value:.2f}"
    headline = re.search(r'id="headline-rank1" class="value">([0-9.]+)%', text)[1]
    assert headline == f"{ev.results['sysu-all']['bn'].mean()['rank1']:.2f}"
    # the demo preset is KGLFR: the paper's SYSU all-search figures beside, from kglfr.eval.published
    assert "KGLFR-Net, Table 1" in text and "70.44" in text and "67.59" in text


def test_every_picture_the_page_names_is_beside_it(page):
    path, _ = page
    text = path.read_text()
    sources = [html.unescape(s) for s in re.findall(r'src="([^"]+)"', text)]
    data = page_data(text)
    sources += [f"{data['files']}/{f}" for f in data["sheets"]["files"]]
    assert sources and all((path.parent / s).is_file() for s in sources), sources
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing from the network
    names = {Path(s).name for s in sources}
    assert {"cmc.png", "keypoints.jpg"} <= names and any(n.endswith("_cam.png") for n in names)  # Grad-CAM drawn


def test_the_query_list_holds_every_query_with_its_top_10(page, store):
    path, ev = page
    data = page_data(path.read_text())
    ranking = rank_queries(ev.features["bn"], "sysu-all")
    rows = data["protocols"][0]["rows"]
    assert len(rows) == len(ranking.q) and all(len(r[6]) == min(10, len(ranking.g)) for r in rows)
    ap = [None if not v else round(100 * a, 2) for a, v in zip(ranking.ap, ranking.valid)]
    assert [r[4] for r in rows] == ap
    sheets = data["sheets"]
    assert max(max(r[0], *r[6]) for r in rows) < len(sheets["files"]) * sheets["per_sheet"]


def test_the_compare_page_links_each_run(page, tmp_path):
    path, _ = page
    rows = [{"method": "KGLFR", "runs": 2, "rank1": (30.0, 1.25), "mAP": (31.5, 0.5), "mINP": (20.0, 0.0),
             "published": {"rank1": 70.44, "mAP": 67.59}}]  # fmt: skip
    out = write_compare_page(tmp_path / "cmp" / "compare.html", [("seed 0", path.parent), ("seed 1", tmp_path)], rows)
    text = out.read_text()
    href = re.search(r'<a href="([^"]+)">seed 0</a>', text)[1]
    assert (out.parent / href).resolve() == path.resolve()
    assert "seed 1 <span" in text and "no report.html yet" in text
    assert 'data-key="rank1">30.00 <span class="std">± 1.25' in text and "70.44 / 67.59" in text


def _playwright_check(path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        errors, requests = [], []
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.route("**/*", lambda r: (requests.append(r.request.url), r.continue_() if r.request.url.startswith(
            "file:") else r.abort()))  # fmt: skip
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
        rank1 = page.inner_text("#headline-rank1")
        page.click("#q-table tbody tr:first-child")
        shown = page.locator("#q-detail .thumb").count()
        page.fill("#q-search", "cam:6")
        listed = page.locator("#q-table tbody tr").count()
        browser.close()
    assert not errors and not broken, (errors, broken)
    assert all(u.startswith("file:") for u in requests), requests
    assert re.fullmatch(r"[0-9.]+%", rank1) and shown == 11 and listed > 0


def test_the_page_opens_offline_in_a_browser(page):
    if CHROMIUM is None:
        pytest.skip(NO_BROWSER)
    path, ev = page
    try:
        import playwright  # noqa: F401
    except ImportError:  # the binary alone: the script ran to its end and the figure is there
        run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert 'data-queries-ready="1"' in run.stdout, run.stderr[-2000:]
        assert f"{ev.results['sysu-all']['bn'].mean()['rank1']:.2f}%" in run.stdout
        return
    _playwright_check(path)


def test_train_and_evaluate_leave_the_page(store, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--config", "sysu/baseline", "--out", str(run), "--no-progress", f"data.store={store.path}",
            *TINY_TRAIN, "model.non_local=false", "train.epochs=1", "train.iters_per_epoch=1", "eval.trials=1",
            "eval.protocols=[sysu-all]", "eval.report_page=true"]  # fmt: skip
    assert main(args) == 0
    assert (run / "report.html").is_file() and (run / "report_files" / "curves.png").is_file()
    assert _foreign(run) == []  # the page and its folder are a run's own files (--out, --resume accept them)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run), "--store", str(store.path), "--protocol", "sysu-all",
                 "--trials", "1", "--report", str(out)]) == 0  # fmt: skip
    assert f"report page written to {out / 'report.html'}" in capsys.readouterr().out
    text = (out / "report.html").read_text()
    assert "curves.png" in text and "weights evaluated" in text  # the run folder's curves, the checkpoint named
    saved = json.loads((run / "results" / "sysu-all_bn.json").read_text())["mean"]["rank1"]
    assert np.isclose(float(cells(text)[("sysu-all", "bn", "mean", "rank1")]), saved, atol=0.006)


def test_report_needs_a_checkpoint(tmp_path, capsys):
    assert main(["evaluate", "--features", str(tmp_path / "f.npz"), "--protocol", "sysu-all",
                 "--report", str(tmp_path)]) == 2  # fmt: skip
    assert "--report DIR needs --checkpoint" in capsys.readouterr().err
