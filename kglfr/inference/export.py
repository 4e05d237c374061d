"""The inference model as ONNX: one graph per modality (the stems differ), dynamic batch, written atomically.

Each graph has one input "images" (B x 3 x H x W float32, ImageNet-normalised, at the checkpoint's input
size) and one output "features" (B x D, the L2-normalised BN feature). The graph is built in memory,
checked and given its metadata there, then written to a temporary file renamed onto the destination:
a full disk leaves an existing file at that path as it was.
"""

from __future__ import annotations

import errno
import io
import warnings
from pathlib import Path

import torch

from kglfr.errors import DiskFullError, KglfrError
from kglfr.model.quantize import float_model

DEFAULT_OPSET = 17
MODALITIES = ("visible", "infrared")


def opset_range() -> tuple[int, int]:
    """The opsets the TorchScript exporter of this torch writes (7..20 on torch 2.x)."""
    from torch.onnx import _constants as c

    return int(c.ONNX_MIN_OPSET), int(getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", c.ONNX_MAX_OPSET))


def export_paths(out: str | Path, modality: str, option: str = "out") -> dict[str, Path]:
    """The file of each modality: ``out`` itself for one, ``<stem>_visible.onnx`` and ``_infrared`` for both."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".onnx":
        raise KglfrError(f"{option} must end in .onnx, got {out}")
    if out.is_dir():
        raise KglfrError(f"{option} {out} is a folder; give a file name ending in .onnx")
    if modality != "both":
        return {modality: out}
    return {m: out.with_name(f"{out.stem}_{m}.onnx") for m in MODALITIES}


def check_opset(opset: int, option: str = "opset") -> int:
    lo, hi = opset_range()
    if not lo <= opset <= hi:
        raise KglfrError(f"{option} {opset} is not one this torch exports; use {lo} to {hi} (default {DEFAULT_OPSET})")
    return opset


class _Embed(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, modality: int) -> None:
        super().__init__()
        self.net, self.modality = net, modality

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract(images, self.modality, which="bn", normalise=True)


def onnx_bytes(model, modality, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialized ONNX graph of a :class:`kglfr.api.ReIDModel`-like ``model`` for one modality, with
    its metadata (checked with the ``onnx`` package when it is installed)."""
    from kglfr.eval.extract import parse_modality

    m = parse_modality(modality)
    check_opset(opset)
    net = _Embed(float_model(model.model), int(m)).eval().cpu()
    h, w = model.input_size
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(net, (torch.zeros(2, 3, h, w),), buf, input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=opset,
                              dynamo=False)  # fmt: skip
        except Exception as e:  # an op this opset lacks: name the opset, not the exporter's internals
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KglfrError(f"cannot export at opset {opset} ({first}); use opset {DEFAULT_OPSET}") from None
    data = buf.getvalue()
    try:
        import onnx
    except ImportError:
        return data
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    meta = {"kglfr_modality": m.name.lower(), "input_size": f"{h},{w}", "feature_dim": str(model.feature_dim),
            "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225", "output": "L2-normalised BN feature"}  # fmt: skip
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return proto.SerializeToString()


def export_onnx(model, out: str | Path, modality, opset: int = DEFAULT_OPSET) -> Path:
    """Write the ONNX graph of ``model`` for one modality to ``out`` atomically; returns the path. A full
    disk raises :class:`~kglfr.errors.DiskFullError` naming the file; what was at ``out`` stays."""
    from kglfr.io import write_atomic

    data = onnx_bytes(model, modality, opset)
    out = Path(out).expanduser()
    try:
        return write_atomic(out, lambda f: f.write(data), binary=True)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            size = f"{len(data) / 2**20:.1f} MB"
            raise DiskFullError(
                f"not enough disk space to write {out} ({size}); free some space or choose another file; "
                "any file already there is unchanged"
            ) from None
        raise KglfrError(f"cannot write {out}: {e.strerror or e}") from None
