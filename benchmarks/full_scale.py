"""The full-size rehearsal: SYSU-MM01's shape, every stage of the paper's path, measured.

Synthesises a dataset shaped like SYSU-MM01 (491 identities, 395 train + 96 test; cameras 1, 2, 4, 5
visible and 3, 6 infrared; per-camera image counts from the published split sizes; image sizes varying
like the real crops), then runs each stage as its own process of the ``kglfr`` CLI: prepare, keypoints
(oracle for the whole store), HRNet on a sample (timed and extrapolated; the fetched weights when
present, random weights otherwise), a few ``sysu/kglfr`` training steps at the preset's batch size
(optim.lr=0.0001) with the end-of-run evaluation, and one ``kglfr evaluate`` of the same checkpoint
(SYSU all-search, 10 trials). Per stage: wall time, images/s, peak RSS and peak anonymous memory
(RssAnon of the process tree, sampled from /proc; a memory-mapped store's pages are file pages, not
the process's own), and the disk the stage wrote. Writes ``full_scale.json`` and ``full_scale.md``.

    python benchmarks/full_scale.py --out /tmp/fs            # full size: ~46,000 images, tens of minutes
    python benchmarks/full_scale.py --small --out /tmp/fs    # 1/20 of the identities, about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# SYSU-MM01 (Wu et al. 2017; the paper's section 4.1): 395 training identities with 22,285 visible and
# 11,909 infrared images; 96 test identities with 3,803 infrared queries and the visible gallery pool.
# Per (test identity?, camera) images per camera that saw the identity; with 10% of cameras missing an
# identity (as in the real data) these give about 22,700 / 12,100 training and 8,000 / 3,800 test images.
SYSU_IDS, SYSU_TEST_IDS = 491, 96
COUNTS = {(False, c): 16 for c in (1, 2, 4, 5)} | {(False, c): 17 for c in (3, 6)}
COUNTS |= {(True, c): 21 for c in (1, 2, 4, 5)} | {(True, c): 22 for c in (3, 6)}
SIZE = (288, 144)  # the largest synthetic crop; size jitter shrinks each by up to 45 %, as real crops vary
JITTER = 0.45
MB = 1024 * 1024


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out = dict.fromkeys(keys, 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in out:
                    out[name] = int(rest.split()[0])
    except OSError:
        pass
    return out


def disk_bytes(folder: Path) -> int:
    """Bytes allocated under ``folder`` (blocks, so sparse files count what they hold)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def run_stage(name: str, cmd: list[str], work: Path, images: int, log: Path, every: float = 0.5) -> dict:
    """Run ``cmd``, sampling the process tree's VmRSS and RssAnon; the stage's figures as a dict."""
    before = disk_bytes(work)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        peak_rss = peak_anon = hwm = samples = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:  # ended: its own peak RSS from the kernel, which a stage shorter than a sample still has
                proc.returncode = os.waitstatus_to_exitcode(status)
                hwm = max(hwm, usage.ru_maxrss)
                break
            stats = [_status_kib(p, ("VmRSS", "RssAnon", "VmHWM")) for p in _tree(proc.pid)]
            peak_rss = max(peak_rss, sum(s["VmRSS"] for s in stats))
            peak_anon = max(peak_anon, sum(s["RssAnon"] for s in stats))
            hwm = max([hwm, *(s["VmHWM"] for s in stats[:1])])
            samples += 1
            time.sleep(min(every, 0.05 * samples))  # densely at first: a short stage still gets samples
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise SystemExit(f"stage {name} failed (exit {proc.returncode}): {' | '.join(tail)}; log: {log}")
    return {
        "stage": name,
        "command": " ".join(cmd),
        "wall_s": round(wall, 2),
        "images": images,
        "images_per_s": round(images / wall, 2) if wall > 0 else None,
        "peak_rss_mb": round(max(peak_rss, hwm) / 1024, 1),
        "peak_anon_mb": round(peak_anon / 1024, 1),
        "disk_written_mb": round((disk_bytes(work) - before) / MB, 1),
    }


def _kglfr(*args: str) -> list[str]:
    return [sys.executable, "-m", "kglfr", *args]


def _self(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def synth_stage(data: Path, ids: int, test_ids: int, per_camera: int = 0) -> None:
    """(A stage's process) the SYSU-shaped synthetic dataset, with the real per-camera counts (or
    ``per_camera`` images per camera, for the tests)."""
    from kglfr.data.synth import synthesize

    counts = {k: per_camera for k in COUNTS} if per_camera else COUNTS
    s = synthesize(data, "sysu", ids=ids, seed=0, images_per_camera=max(counts.values()), height=SIZE[0],
                   width=SIZE[1], size_jitter=JITTER, test_ids=test_ids, per_camera_counts=counts)  # fmt: skip
    print(s.line())


def hrnet_stage(store_path: Path, n: int, out: Path, batch: int = 16) -> None:
    """(A stage's process) HRNet-W32 on ``n`` evenly spaced images of the store, as ``kglfr keypoints``
    feeds it (the original image resized to 320 x 160); the fetched weights when present, else random."""
    import numpy as np

    from kglfr.data.store import Store
    from kglfr.keypoints.backends.hrnet import HRNetBackend
    from kglfr.keypoints.build import source_image
    from kglfr.keypoints.weights import hrnet_weights_name, kglfr_home

    store = Store.open(store_path)
    fetched = kglfr_home() / hrnet_weights_name("w32", "256x192")
    backend = HRNetBackend(weights=fetched) if fetched.is_file() else HRNetBackend(random_init=True)
    idx = np.linspace(0, len(store) - 1, num=min(n, len(store))).round().astype(int)
    t0 = time.perf_counter()
    for i in range(0, len(idx), batch):
        images = np.stack([source_image(store, int(j), backend.input_size) for j in idx[i : i + batch]])
        backend.predict(images)
    seconds = time.perf_counter() - t0
    weights = f"fetched {fetched}" if fetched.is_file() else "random (no fetched weights in the kglfr home)"
    out.write_text(json.dumps({"images": len(idx), "seconds": seconds, "weights": weights}))


def split_counts(store_path: Path) -> dict[str, int]:
    """Images of the store: all, train, test."""
    from kglfr.data.store import Store

    records = Store.open(store_path).records()
    return {"all": len(records), "train": sum(r.split == "train" for r in records),
            "test": sum(r.split == "test" for r in records)}  # fmt: skip


def cpu_model() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["cpu"] = value.strip()
        elif key.strip() == "flags":
            wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")
            info["flags"] = [f for f in wanted if f in value.split()]
            break
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    info["memory_gb"] = round(int(mem[1]) / 1024 / 1024, 1)
    return info


def plan(args: argparse.Namespace) -> dict:
    ids = args.ids or (25 if args.small else SYSU_IDS)
    arch = args.arch or ("resnet18" if args.small else "resnet50")
    test_ids = max(2, round(ids * SYSU_TEST_IDS / SYSU_IDS))
    steps = args.train_steps or 2
    sample = args.hrnet_sample or (16 if args.small else 300)
    return {
        "ids": ids,
        "test_ids": test_ids,
        "train_steps": steps,
        "hrnet_sample": sample,
        "arch": arch,
        "per_camera": args.images_per_camera or 0,
    }


class Saved(list):
    """The stages done so far; the report is written after each, so an interrupted run keeps them."""

    def __init__(self, report: dict, work: Path) -> None:
        super().__init__()
        self.report, self.work = report, work
        report["stages"] = self

    def append(self, row: dict) -> None:
        super().append(row)
        self.save()

    def save(self) -> None:
        (self.work / "full_scale.json").write_text(json.dumps(self.report, indent=2) + "\n")
        (self.work / "full_scale.md").write_text(table(self.report))


def stages(p: dict, work: Path, done: Saved) -> None:
    data, store, run = work / "data", work / "store", work / "run"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    synth = _self("_synth", str(data), str(p["ids"]), str(p["test_ids"]), str(p["per_camera"]))
    done.append(run_stage("synth", synth, work, 0, logs / "synth.log"))
    n_total = sum(1 for _ in data.glob("cam*/*/*.jpg"))
    done[0].update(images=n_total, images_per_s=round(n_total / done[0]["wall_s"], 2))
    done.save()
    cmd = _kglfr("prepare", "--dataset", "sysu", "--root", str(data), "--out", str(store))
    done.append(run_stage("prepare", cmd, work, n_total, logs / "prepare.log"))
    counts = split_counts(store)
    cmd = _kglfr("keypoints", "--store", str(store), "--backend", "oracle", "--no-progress")
    done.append(run_stage("keypoints-oracle", cmd, work, counts["all"], logs / "keypoints.log"))
    hr = work / "hrnet_sample.json"
    cmd = _self("_hrnet", str(store), str(p["hrnet_sample"]), str(hr))
    done.append(run_stage("keypoints-hrnet-sample", cmd, work, p["hrnet_sample"], logs / "hrnet.log"))
    h = json.loads(hr.read_text())
    done[-1]["hrnet"] = {**h, "images_per_s": round(h["images"] / h["seconds"], 3),
                         "extrapolated_store_s": round(counts["all"] * h["seconds"] / h["images"], 1)}  # fmt: skip
    done.save()
    done.append(train_stage(p, store, run, work, logs, counts["test"]))
    cmd = _kglfr("evaluate", "--checkpoint", str(run), "--store", str(store), "--protocol", "sysu-all",
                 "--out", str(work / "evaluate.json"))  # fmt: skip
    done.append(run_stage("evaluate", cmd, work, counts["test"], logs / "evaluate.log"))


def train_stage(p: dict, store: Path, run: Path, work: Path, logs: Path, n_test: int) -> dict:
    """``sysu/kglfr`` for a few steps at the preset's batch size, then its end-of-run evaluation."""
    cmd = _kglfr("train", "--config", "sysu/kglfr", "--out", str(run), "--no-progress", f"data.store={store}",
                 "model.pretrained=none", f"model.arch={p['arch']}", "optim.lr=0.0001", "train.epochs=1",
                 f"train.iters_per_epoch={p['train_steps']}", "train.eval_every=0", "train.tensorboard=false",
                 "eval.protocols=[sysu-all]")  # fmt: skip
    batch = 8 * (4 + 4)  # the preset's P x (K + K): 8 identities, 4 visible + 4 infrared each
    row = run_stage("train+end-eval", cmd, work, p["train_steps"] * batch + n_test, logs / "train.log")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps_s = sum(r.get("seconds", 0.0) for r in epochs if r.get("type", "epoch") == "epoch")
    row["train_steps_s"] = round(steps_s, 2)
    row["end_eval_s_upper"] = round(row["wall_s"] - steps_s, 2)  # the rest: start-up + the evaluation
    return row


def table(report: dict) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gb', '?')} GB; flags: "
             f"{', '.join(m['flags']) or '-'}; shared with other jobs: {report['shared_machine']}", "",
             "| stage | images | wall s | images/s | peak RSS MB | peak anon MB | disk written MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for s in report["stages"]:
        lines.append(f"| {s['stage']} | {s['images']:,} | {s['wall_s']:.1f} | {s['images_per_s']:.1f} | "
                     f"{s['peak_rss_mb']:,.0f} | {s['peak_anon_mb']:,.0f} | {s['disk_written_mb']:,.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_synth", "_hrnet"):  # a stage's own process
        a = sys.argv[2:]
        return (
            synth_stage(Path(a[0]), int(a[1]), int(a[2]), int(a[3]))
            if sys.argv[1] == "_synth"
            else hrnet_stage(Path(a[0]), int(a[1]), Path(a[2]))
        )
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="work folder (dataset, store, run) and the JSON / Markdown")
    ap.add_argument("--small", action="store_true", help="1/20 of the identities (about a minute)")
    ap.add_argument("--ids", type=int, default=None, help="identities (default 491; --small 25)")
    ap.add_argument("--arch", default=None, help="training backbone (default resnet50; --small resnet18)")
    ap.add_argument("--train-steps", type=int, default=None, help="training steps (default 2)")
    ap.add_argument("--hrnet-sample", type=int, default=None, help="images HRNet runs on (default 300; --small 16)")
    ap.add_argument(
        "--images-per-camera",
        type=int,
        default=None,
        help="the same count for every camera (default: SYSU-MM01's per-camera counts; for tests)",
    )
    ap.add_argument("--shared", action="store_true", help="label the figures as taken on a shared machine")
    args = ap.parse_args()
    work = Path(args.out).expanduser()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"--out {work} is not empty; give a new folder")
    work.mkdir(parents=True, exist_ok=True)
    p = plan(args)
    t0 = time.perf_counter()
    report = {"size": "small" if args.small else "full", "plan": p, "machine": cpu_model(),
              "shared_machine": args.shared}  # fmt: skip
    done = Saved(report, work)
    stages(p, work, done)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    report["store_mb"] = round(disk_bytes(work / "store") / MB, 1)
    done.save()
    print(table(report))
    print(f"total {report['total_s']} s; {work / 'full_scale.json'}")


if __name__ == "__main__":
    main()
