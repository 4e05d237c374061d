"""The twelve method presets (sysu/regdb/llcm x agw/caj/kglfr/kglfr_caj) each train one step on a small store
of their dataset; the published figures in their comments agree with ``kglfr.eval.published``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from layouts import TINY_TRAIN, make_llcm, synthetic_store

from kglfr.data.datasets import load_dataset
from kglfr.data.store import prepare_store
from kglfr.data.synth import synthesize
from kglfr.eval.published import PUBLISHED, published
from kglfr.keypoints.backends.base import build_backend
from kglfr.keypoints.build import build_cache, build_pose_backend
from kglfr.train import config as C
from kglfr.train.trainer import Trainer

DATASETS = ("sysu", "regdb", "llcm")
METHODS = ("agw", "caj", "kglfr", "kglfr_caj")
TWELVE = [f"{d}/{m}" for d in DATASETS for m in METHODS]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A small store of each dataset with a keypoint cache (oracle for the synthetic ones; LLCM has no
    synthetic layout: a randomly initialised HRNet's keypoints on noise images)."""
    root = tmp_path_factory.mktemp("method-presets")
    sysu = synthetic_store(root / "sysu")[0]  # the store the demo's losses below were recorded on
    synth = synthesize(root / "regdb" / "synth", "regdb", ids=8, seed=0, images_per_camera=2, height=64, width=32)
    regdb, _ = prepare_store(load_dataset("regdb", synth.root), root / "regdb" / "store", height=64, width=32,
                             progress=False)  # fmt: skip
    build_cache(regdb, build_pose_backend("oracle", regdb), progress=False)
    src = make_llcm(root / "llcm" / "src")
    llcm, _ = prepare_store(load_dataset("llcm", src), root / "llcm" / "store", height=64, width=32, progress=False)
    build_cache(llcm, build_backend("hrnet", random_init=True, input_size=(128, 64)), progress=False)
    return {"sysu": sysu, "regdb": regdb.path, "llcm": llcm.path}


def test_there_are_twelve_method_presets_in_the_package():
    assert set(TWELVE) <= set(C.presets())


@pytest.mark.parametrize("preset", TWELVE)
def test_each_method_preset_trains_one_step_on_its_dataset(preset, stores):
    dataset, method = preset.split("/")
    cfg = C.load_config(preset, [f"data.store={stores[dataset]}", *TINY_TRAIN, "optim.lr=0.0001",
                                 "train.epochs=1", "train.iters_per_epoch=1"])  # fmt: skip
    assert cfg.method.name == method
    trainer = Trainer(cfg)
    trainer.begin_epoch(0)
    batch = next(iter(trainer.data.epoch(0, prefetch=0)))
    losses = trainer.run_step(batch)
    assert torch.isfinite(losses.total)
    assert len(batch.labels) == trainer.data.batch_size
    views = 3 if "caj" in method else 1  # CAJ: visible, visible channel-exchanged, infrared
    assert len(trainer.data.views) == views and len(batch.labels) == 3 * 2 * (2 if views == 1 else 3)  # P=3, K=2
    assert ("local" in losses.parts) == method.startswith("kglfr")
    if views == 3:  # the exchanged view shows one channel in all three; labels repeat per visible view
        exchanged = batch.images[batch.view == 1]
        assert torch.equal(exchanged[:, 0], exchanged[:, 1]) and torch.equal(exchanged[:, 1], exchanged[:, 2])
        assert torch.equal(batch.labels[batch.view == 0], batch.labels[batch.view == 1])


# The demo preset's first three steps (TINY_TRAIN, lr 1e-4, fp32) on that store, recorded on an Intel Xeon
# (avx512_bf16) before the trainer's method branches moved into kglfr.train.methods: a refactor that draws
# its random numbers in another order, or changes a loss, moves them far more than another CPU does. The
# demo's network was full width then (model.width=64, given below; the preset is half width since).
DEMO_STEPS = [
    {"id": 1.7956596612930298, "triplet": 2.18442440032959, "local": 0.7225813865661621, "loss": 3.249162435531616},
    {"id": 1.7928225994110107, "triplet": 4.635347843170166, "local": 1.548932671546936, "loss": 4.884963035583496},
    {"id": 1.7925068140029907, "triplet": 6.473719120025635, "local": 1.4049850702285767, "loss": 5.73185920715332},
]


def test_the_demo_preset_takes_the_steps_it_took_before_methods_were_modules(stores):
    cfg = C.load_config("demo", [f"data.store={stores['sysu']}", *TINY_TRAIN, "train.epochs=1", "model.width=64",
                                 "train.iters_per_epoch=3", "optim.lr=0.0001", "train.amp=off"])  # fmt: skip
    trainer = Trainer(cfg)
    trainer.begin_epoch(0)
    got = [trainer.run_step(b).parts for b in trainer.data.epoch(0, prefetch=0)]
    for step, want in zip(got, DEMO_STEPS, strict=True):
        assert {k: float(step[k]) for k in want} == pytest.approx(want, rel=1e-4)


def test_the_presets_quote_the_published_figures():
    for (method, protocol), fig in PUBLISHED.items():
        preset = {"sysu": f"sysu/{method}", "regdb": f"regdb/{method}"}[protocol.split("-")[0]]
        text = C.resolve_preset(preset).read_text()
        for key in ("rank1", "mAP", "mINP"):
            assert fig[key] is None or f"{fig[key]:.2f}" in text, (preset, protocol, key)


def _table_cells(path: Path, names: dict[str, str], columns: list[str]) -> dict[tuple[str, str], str]:
    """(method, protocol) -> the cell of a Markdown table whose first column names the method."""
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in names:
            out.update({(names[cells[0]], p): c for p, c in zip(columns, cells[2 : 2 + len(columns)], strict=True)})
    return out


def _cell(fig: dict | None) -> str:
    if fig is None:
        return ""
    return " / ".join("-" if fig[k] is None else f"{fig[k]:.2f}" for k in ("rank1", "mAP", "mINP"))


@pytest.mark.parametrize(
    ("doc", "names", "columns"),
    [
        ("docs/methods.md", {m: m for m in METHODS}, ["sysu-all", "sysu-indoor", "regdb-v2i", "regdb-i2v"]),
        ("README.md", {"AGW": "agw", "CAJ": "caj", "KGLFR": "kglfr", "KGLFR + CAJ": "kglfr_caj"},
         ["sysu-all", "regdb-v2i"]),
    ],
)  # fmt: skip
def test_the_docs_tables_agree_with_the_published_module(doc, names, columns):
    cells = _table_cells(Path(__file__).resolve().parents[2] / doc, names, columns)
    assert len(cells) == len(names) * len(columns)
    for (method, protocol), cell in cells.items():
        want = _cell(published(method, protocol))
        assert cell == want if want else not any(ch.isdigit() for ch in cell), (doc, method, protocol, cell)
