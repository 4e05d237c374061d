"""``kglfr export``: the inference model as ONNX, one graph per modality."""

from __future__ import annotations

import argparse

from kglfr.cli import add_command
from kglfr.errors import KglfrError

EXAMPLES = """
  kglfr export --checkpoint runs/sysu-kglfr/checkpoint.pt --out model.onnx   # model_{visible,infrared}.onnx
  kglfr export --checkpoint ckpt.pt --out ir.onnx --modality infrared           # exactly ir.onnx

Each graph has one input "images": B x 3 x H x W float32, RGB scaled to [0, 1] then ImageNet-normalised
((x - mean) / std, mean 0.485 0.456 0.406, std 0.229 0.224 0.225) at the checkpoint's input size (H x W
is in the model's metadata, key input_size), any batch size; one output "features": B x D, the
L2-normalised BN feature (what kglfr evaluate scores). The two modalities differ only in their stem, so
there is one file per modality (no modality input). Opset 17; needs the onnx extra to check the file.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", "Export a trained model to ONNX (one graph per modality, dynamic batch).",
                    EXAMPLES)  # fmt: skip
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="kglfr train checkpoint (file or run folder)")
    p.add_argument(
        "--out",
        required=True,
        metavar="MODEL.onnx",
        help="file to write; with --modality both, MODEL_visible.onnx and MODEL_infrared.onnx",
    )
    p.add_argument(
        "--modality", choices=("visible", "infrared", "both"), default="both", help="which stem's graph (default both)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.set_defaults(func=run)


def export_paths(out, modality: str):
    from pathlib import Path

    out = Path(out).expanduser()
    if out.suffix.lower() != ".onnx":
        raise KglfrError(f"--out must end in .onnx, got {out}")
    if modality != "both":
        return {modality: out}
    return {m: out.with_name(f"{out.stem}_{m}.onnx") for m in ("visible", "infrared")}


def export_onnx(model, out, modality, opset: int = 17):
    """Write the ONNX graph of ``model`` (a :class:`kglfr.api.ReIDModel`) for one modality; returns the path."""
    import torch

    from kglfr.api import parse_modality

    m = parse_modality(modality)

    class Embed(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            return self.net.extract(images, m, which="bn", normalise=True)

    net = Embed(model.model).eval().cpu()
    h, w = model.input_size
    dummy = torch.zeros(2, 3, h, w)
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(net, (dummy,), str(out), input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=opset,
                          dynamo=False)  # fmt: skip
    try:
        import onnx
    except ImportError:
        return out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    meta = {"kglfr_modality": m.name.lower(), "input_size": f"{h},{w}", "feature_dim": str(model.feature_dim),
            "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225", "output": "L2-normalised BN feature"}  # fmt: skip
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(out))
    return out


def run(args: argparse.Namespace) -> int:
    from kglfr.api import load

    paths = export_paths(args.out, args.modality)
    model = load(args.checkpoint, "cpu")
    for m, path in paths.items():
        print(f"wrote {export_onnx(model, path, m, args.opset)} ({m}; input B x 3 x {model.input_size[0]} x "
              f"{model.input_size[1]} normalised float32, output B x {model.feature_dim})")  # fmt: skip
    return 0
