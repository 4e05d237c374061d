"""The report page (``report.html``): the time to build it, its size, and how fast a browser opens it.

    python benchmarks/bench_report.py                                   # synthetic SYSU-size query list
    python benchmarks/bench_report.py --run runs/demo/train --store runs/demo/store   # also a real run's page

Synthetic case: a SYSU-MM01-layout dataset with 96 test identities and ``--per-camera`` images per identity
and camera (23: 3,864 infrared queries, SYSU-MM01 has 3,803), prepared at 64x32, identity-structured random
features (a centre per identity + noise), sysu-all over 10 gallery draws, a random ResNet-18 for Grad-CAM.
The page is built twice (the second is timed: the first warms the imports). With Playwright and Chromium
installed, the time from opening the page to its query list being drawn, and to a filter's result.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import peak_rss_mib, record  # noqa: E402


def synthetic_case(root: Path, per_camera: int):
    """(store, evaluation, network): the synthetic SYSU-size case."""
    from kglfr.data.datasets import load_dataset
    from kglfr.data.records import TEST
    from kglfr.data.store import prepare_store
    from kglfr.data.synth import synthesize
    from kglfr.eval.extract import feature_sets_of
    from kglfr.eval.model_eval import Evaluation
    from kglfr.eval.protocols import evaluate_protocol
    from kglfr.model import AGWNet

    synth = synthesize(root / "synth", "sysu", ids=100, test_ids=96, seed=0, images_per_camera=per_camera,
                       height=64, width=32, progress=False)  # fmt: skip
    store, _ = prepare_store(load_dataset("sysu", synth.root), root / "store", height=64, width=32, progress=False)
    idx = store.indices(TEST)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((int(store.pids.max()) + 1, 256))
    feats = centres[store.pids[idx]] + 1.2 * rng.standard_normal((len(idx), 256))
    feats = (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    fs = feature_sets_of(store, {"bn": feats}, idx)["bn"]
    result = evaluate_protocol(fs, "sysu-all", trials=10)
    gallery_ids = np.unique(store.pids[idx][store.modalities[idx] == 0])
    ev = Evaluation({"sysu-all": {"bn": result}}, {"sysu-all": 100.0 / len(gallery_ids)}, {"bn": fs})
    net = AGWNet(4, arch="resnet18", non_local=False).eval()
    return store, ev, net


def build(out: Path, store, ev, net, size, run_folder=None, cfg=None) -> tuple[float, Path]:
    from kglfr.train.report_page import write_run_page

    t0 = time.perf_counter()
    page = write_run_page(out, cfg, store, ev, model=net, size=size, run_folder=run_folder)
    return time.perf_counter() - t0, page


def sizes(page: Path) -> dict:
    files = list((page.parent / "report_files").iterdir())
    return {"html_kib": page.stat().st_size / 1024, "pictures": len(files),
            "pictures_kib": sum(f.stat().st_size for f in files) / 1024,
            "thumbnail_sheets": sum(f.name.startswith("thumbs_") for f in files)}  # fmt: skip


def browser_times(page: Path) -> dict:
    """Seconds from opening the page to its query list drawn, and for a filter; {} without a browser."""
    import shutil

    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}
    if chromium is None:
        return {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page()
        t0 = time.perf_counter()
        tab.goto(page.as_uri())
        tab.wait_for_selector("body[data-queries-ready='1']")
        ready = time.perf_counter() - t0
        before = tab.inner_text("#q-count")
        t0 = time.perf_counter()
        tab.fill("#q-search", "cam:6")
        tab.wait_for_function(f"document.getElementById('q-count').textContent !== {json.dumps(before)}")
        filtered = time.perf_counter() - t0
        browser.close()
    return {"browser_open_to_query_list_s": ready, "browser_filter_s": filtered}


def real_run(run: Path, store_path: str, out: Path) -> dict:
    from kglfr.data.store import Store
    from kglfr.eval.model_eval import evaluate_model
    from kglfr.train import config as C
    from kglfr.train.checkpoint import load_model

    store = Store.open(store_path)
    model, data = load_model(run / "checkpoint.pt", "cpu")
    cfg = C.config_from_dict(dict(data["config"]))
    size = tuple(data.get("input_size", store.size))
    t0 = time.perf_counter()
    ev = evaluate_model(model, store, ["sysu-all", "sysu-indoor"], size=size, trials=10)
    evaluation = time.perf_counter() - t0
    build(out, store, ev, model, size, run, cfg)
    seconds, page = build(out, store, ev, model, size, run, cfg)
    return {"run_evaluation_s": evaluation, "run_page_s": seconds, **{f"run_{k}": v for k, v in sizes(page).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-camera", type=int, default=23, help="images per identity and camera (default 23)")
    ap.add_argument("--run", type=Path, default=None, help="a run folder of kglfr train (e.g. the demo's)")
    ap.add_argument("--store", default=None, help="with --run: its store")
    args = ap.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.run is not None:
            figures.update(real_run(args.run, args.store, tmp / "run_page"))
        t0 = time.perf_counter()
        store, ev, net = synthetic_case(tmp, args.per_camera)
        figures["synthetic_setup_s"] = time.perf_counter() - t0
        figures["synthetic_queries"] = int(ev.results["sysu-all"]["bn"].trials[0].num_query)
        build(tmp / "page", store, ev, net, (64, 32))
        figures["synthetic_page_s"], page = build(tmp / "page", store, ev, net, (64, 32))
        figures.update({f"synthetic_{k}": v for k, v in sizes(page).items()})
        figures.update(browser_times(page))
    figures["peak_rss_mib"] = peak_rss_mib()
    record("bench_report", figures)


if __name__ == "__main__":
    main()
