"""``kglfr export``: the inference model as ONNX, one graph per modality."""

from __future__ import annotations

import argparse

from kglfr.cli import add_command

EXAMPLES = """
  kglfr export --checkpoint runs/sysu-kglfr/checkpoint.pt --out model.onnx   # model_{visible,infrared}.onnx
  kglfr export --checkpoint ckpt.pt --out ir.onnx --modality infrared           # exactly ir.onnx

Each graph has one input "images": B x 3 x H x W float32, RGB scaled to [0, 1] then ImageNet-normalised
((x - mean) / std, mean 0.485 0.456 0.406, std 0.229 0.224 0.225) at the checkpoint's input size (H x W
is in the model's metadata, key input_size), any batch size; one output "features": B x D, the
L2-normalised BN feature (what kglfr evaluate scores). The two modalities differ only in their stem, so
there is one file per modality (no modality input). Opset 17 by default; each file is written to a
temporary file and renamed, so a full disk never leaves a half-written file nor destroys an existing one.
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


def run(args: argparse.Namespace) -> int:
    from kglfr.api import load
    from kglfr.inference.export import check_opset, export_onnx, export_paths
    from kglfr.io import check_writable

    paths = export_paths(args.out, args.modality, option="--out")
    check_opset(args.opset, option="--opset")
    for path in paths.values():
        check_writable(path, option="--out")
    model = load(args.checkpoint, "cpu")
    for m, path in paths.items():
        print(f"wrote {export_onnx(model, path, m, args.opset)} ({m}; input B x 3 x {model.input_size[0]} x "
              f"{model.input_size[1]} normalised float32, output B x {model.feature_dim})")  # fmt: skip
    return 0
