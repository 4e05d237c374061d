"""Using a trained model: feature extraction in PyTorch and onnxruntime; search latency on a large gallery.

    python benchmarks/bench_use.py                      # ResNet-50 AGW at 288x144, 100,000-image galleries
    python benchmarks/bench_use.py --arch resnet18 --gallery 20000 --quick

Extraction: the BN feature of batches of ``--batch`` random images (random weights: speed does not
depend on them) in PyTorch (``torch.no_grad``), with ``--amp int8``, and in onnxruntime on the graph
``kglfr export`` writes.
Search: one query (and a batch of 100) against a gallery of random L2-normalised 512-d and 2048-d
features, exact (numpy matrix product + argpartition, as ``kglfr search``) and with faiss (flat inner
product index; IVF index as ``kglfr search`` builds above 50,000 images, on 512-d); faiss IVF
recall@10 against exact, on uniform random features (the hard case: no cluster structure) and on
clustered ones (5,000 identity centres + noise, closer to re-ID features).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import peak_rss_mib, record, timeit  # noqa: E402

from kglfr.api import ReIDModel  # noqa: E402
from kglfr.inference.search import build_faiss_index, exact_top_k, have_faiss  # noqa: E402
from kglfr.model import AGWNet  # noqa: E402


def normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def both_features(net, x: torch.Tensor, repeat: int, tag: str) -> dict:
    """Images/s for the BN and the pooled feature of a batch: the one extractor (one backbone pass, as
    evaluation runs now) against two ``extract`` calls (the evaluation before the extractor)."""
    from kglfr.eval.extract import embed_batch

    with torch.no_grad():
        t_one = timeit(lambda: embed_batch(net, x, 0), repeat=repeat)
        t_two = timeit(lambda: (net.extract(x, 0, which="bn"), net.extract(x, 0, which="pool")), repeat=repeat)
    return {f"both_features_{tag}_one_pass_img_per_s": len(x) / t_one,
            f"both_features_{tag}_two_passes_img_per_s": len(x) / t_two}  # fmt: skip


def int8_extraction(net, x: torch.Tensor, size: tuple[int, int], repeat: int, tag: str) -> dict:
    """``--amp int8`` (kglfr.model.quantize), calibrated on the batch: images/s of the one extractor beside
    float32's in the same run, and the BN features' cosine to float32's."""
    from kglfr.eval.extract import embed_batch
    from kglfr.runtime import int8_engine

    if int8_engine() is None:
        return {}
    int8 = ReIDModel(copy.deepcopy(net), {"input_size": list(size)}, amp="int8")
    t0 = time.perf_counter()
    int8.calibrate(x, "visible")
    calibration = time.perf_counter() - t0
    with torch.no_grad():
        t_fp32 = timeit(lambda: embed_batch(net, x, 0), repeat=repeat)
        t_int8 = timeit(lambda: embed_batch(int8.model, x, 0), repeat=repeat)
        a, b = (torch.nn.functional.normalize(embed_batch(m, x, 0)["bn"], dim=1) for m in (net, int8.model))
    return {f"extract_{tag}_int8_img_per_s": len(x) / t_int8, f"extract_{tag}_int8_over_fp32": t_fp32 / t_int8,
            f"extract_{tag}_int8_calibration_s": calibration,
            f"extract_{tag}_int8_bn_cosine_min": float((a * b).sum(1).min())}  # fmt: skip


def extraction(arch: str, size: tuple[int, int], batch: int, repeat: int) -> dict:
    from kglfr.inference.export import export_onnx

    net = AGWNet(100, arch=arch, pretrained=None).eval()
    model = ReIDModel(net, {"input_size": list(size)})
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        t_torch = timeit(lambda: net.extract(x, 0, which="bn"), repeat=repeat)
    out = {f"extract_{arch}_{size[0]}x{size[1]}_torch_img_per_s": batch / t_torch}
    out.update(both_features(net, x, repeat, f"{arch}_{size[0]}x{size[1]}"))
    out.update(int8_extraction(net, x, size, repeat, f"{arch}_{size[0]}x{size[1]}"))
    try:
        import onnxruntime as ort
    except ImportError:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "m.onnx", "visible")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        t_ort = timeit(lambda: sess.run(None, {"images": xn}), repeat=repeat)
        with torch.no_grad():
            diff = float(np.abs(sess.run(None, {"images": xn})[0] - net.extract(x, 0, which="bn").numpy()).max())
    out[f"extract_{arch}_{size[0]}x{size[1]}_onnxruntime_img_per_s"] = batch / t_ort
    out["onnx_vs_torch_max_abs_diff"] = diff
    return out


def search(n: int, dim: int, rng, ivf: bool, label: str, gallery: np.ndarray | None = None) -> dict:
    g = normalised(rng.standard_normal((n, dim), dtype=np.float32)) if gallery is None else gallery
    q = normalised(g[:100] + 0.3 * rng.standard_normal((100, dim), dtype=np.float32) / np.sqrt(dim) * 10)
    out = {}
    t = timeit(lambda: exact_top_k(q[:1], g, 10), repeat=5)
    out[f"search_{label}_exact_1query_ms"] = 1000 * t
    t = timeit(lambda: exact_top_k(q, g, 10), repeat=3)
    out[f"search_{label}_exact_100queries_ms"] = 1000 * t
    _, exact = exact_top_k(q, g, 10)
    if not have_faiss():
        return out
    flat = build_faiss_index(g)
    out[f"search_{label}_faiss_flat_1query_ms"] = 1000 * timeit(lambda: flat.search(q[:1], 10), repeat=5)
    out[f"search_{label}_faiss_flat_100queries_ms"] = 1000 * timeit(lambda: flat.search(q, 10), repeat=3)
    _, fi = flat.search(q, 10)
    out[f"search_{label}_faiss_flat_recall@10"] = recall(fi, exact)
    if ivf:
        t0 = time.perf_counter()
        index = build_faiss_index(g, ivf=True)
        out[f"search_{label}_faiss_ivf_build_s"] = time.perf_counter() - t0
        out[f"search_{label}_faiss_ivf_1query_ms"] = 1000 * timeit(lambda: index.search(q[:1], 10), repeat=5)
        out[f"search_{label}_faiss_ivf_100queries_ms"] = 1000 * timeit(lambda: index.search(q, 10), repeat=3)
        _, ii = index.search(q, 10)
        out[f"search_{label}_faiss_ivf_recall@10"] = recall(ii, exact)
    return out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--width", type=int, default=144)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no 2048-d search")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    figures: dict = {"torch_threads": torch.get_num_threads(), "gallery_size": args.gallery,
                     "faiss": have_faiss()}  # fmt: skip
    figures.update(extraction(args.arch, (args.height, args.width), args.batch, 1 if args.quick else 3))
    figures.update(search(args.gallery, 512, rng, ivf=True, label="512d_random"))
    centres = normalised(rng.standard_normal((5000, 512), dtype=np.float32))
    clustered = normalised(centres[rng.integers(0, 5000, args.gallery)]
                           + 0.02 * rng.standard_normal((args.gallery, 512), dtype=np.float32))  # fmt: skip
    figures.update(search(args.gallery, 512, rng, ivf=True, label="512d_clustered", gallery=clustered))
    del clustered
    if not args.quick:
        figures.update(search(args.gallery, 2048, rng, ivf=False, label="2048d_random"))
    figures["peak_rss_mib"] = peak_rss_mib()
    record("bench_use", figures)


if __name__ == "__main__":
    main()
