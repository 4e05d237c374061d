"""int8 inference on the CPU: an :class:`~kglfr.model.agw.AGWNet` whose backbones run in int8 up to layer3.

Post-training static quantization (PyTorch's FX graph mode, x86/fbgemm kernels): each modality's path
up to layer3 (its stem, layer1-3 and the non-local blocks) becomes one int8 graph, convolutions fused
with their BatchNorm and ReLU, weights quantized per channel, activations per tensor with ranges
observed on calibration images of that modality. layer4 and the head (GeM and the BN neck) stay
float32: the BN neck divides by the spread of each pooled channel, which is tiny for the channels a
trained model rarely fires, so 8-bit steps in layer4's output become large errors there (the demo's
trained model: BN-feature cosine to float32 0.78 mean with layer4 in int8, 0.9994 with it in float32).

With layer4 in float32, extraction ran 1.8x faster than float32 for ResNet-50 at 288x144 and 1.4x for
the demo's ResNet-18 at 64x32 on a 2-core CPU with AVX512-VNNI (``benchmarks/bench_runtime.py``). The
features approximate float32's (``docs/using-a-model.md``), so int8 is asked for (``--amp int8``,
``kglfr.load(..., amp="int8")``), never picked by ``auto``.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import Tensor, nn

from kglfr.data.records import Modality
from kglfr.errors import KglfrError
from kglfr.runtime import cpu_has_vnni, int8_engine

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 128  # per modality: a few hundred images is the usual size of a calibration set


class ModalityPath(nn.Module):
    """The backbone of one modality up to layer3 as a plain chain of modules (FX can trace it): stem,
    layer1-3 and the non-local blocks after their residual blocks, as :meth:`AGWNet.forward_features`
    runs them."""

    def __init__(self, net: nn.Module, modality: Modality | int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [net.stems[int(modality)], *net.layer1]
        for layer, nl in ((net.layer2, net.nl_layer2), (net.layer3, net.nl_layer3)):
            for idx, block in enumerate(layer):
                blocks.append(block)
                if str(idx) in nl:
                    blocks.append(nl[str(idx)])
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


def qconfig_mapping(engine: str):
    """PyTorch's default int8 configuration for ``engine`` (per-channel weights, histogram-observed
    activations), with 8-bit activations where the CPU has VNNI: the default's 7 bits guard against an
    overflow only CPUs without VNNI have (quantizing layer4 too, the demo's model kept a BN-feature cosine
    of 0.54 with 7 bits and 0.78 with 8)."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, default_per_channel_weight_observer

    mapping = get_default_qconfig_mapping(engine)
    if cpu_has_vnni():
        mapping.set_global(QConfig(activation=HistogramObserver.with_args(reduce_range=False),
                                   weight=default_per_channel_weight_observer))  # fmt: skip
    return mapping


def quantize_path(net: nn.Module, modality: Modality | int, calibration: Tensor) -> nn.Module:
    """An int8 copy of ``net``'s backbone up to layer3 for ``modality`` (``net`` is left as it is),
    activation ranges observed on ``calibration`` (a preprocessed B x 3 x H x W batch of that modality)."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = int8_engine()
    if engine is None:
        raise RuntimeError("this PyTorch has no int8 CPU engine (x86 or fbgemm)")
    torch.backends.quantized.engine = engine
    path = ModalityPath(copy.deepcopy(net).cpu().float(), modality).eval()
    x = calibration.detach().cpu().float().contiguous()
    with warnings.catch_warnings():  # FX quantization warns that it moves to torchao; it works as it is
        warnings.simplefilter("ignore")
        prepared = prepare_fx(path, qconfig_mapping(engine), example_inputs=(x[:1],))
        with torch.no_grad():
            for chunk in x.split(32):
                if not torch.isfinite(prepared(chunk)).all():
                    raise KglfrError("int8 calibration: the model's activations are not finite (a diverged "
                                     "model?); its float32 features will not be finite either")  # fmt: skip
        return convert_fx(prepared)


class Int8Model(nn.Module):
    """``model`` for inference with int8 backbones, one per modality, each calibrated on the first images
    of its modality that :meth:`calibrate` (or else the first :meth:`forward_features`) sees. Evaluation
    only: no gradients, no training mode. ``float_model`` is the float32 model (the head runs on it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.float_model = model.eval()
        self.paths = nn.ModuleDict()
        super().train(False)

    @property
    def feature_dim(self) -> int:
        return int(self.float_model.feature_dim)

    def train(self, mode: bool = True) -> Int8Model:
        if mode:
            raise RuntimeError("an int8 model runs inference only; train the float32 model")
        return super().train(False)

    def calibrated(self, modality: Modality | int) -> bool:
        return str(int(modality)) in self.paths

    def calibrate(self, modality: Modality | int, images: Tensor) -> None:
        """Quantize the backbone of ``modality`` with activation ranges observed on ``images``."""
        log.info("int8: calibrating the %s backbone on %d images", Modality(int(modality)).name.lower(), len(images))
        self.paths[str(int(modality))] = quantize_path(self.float_model, modality, images)

    def forward_features(self, images: Tensor, modalities: Tensor | Modality | int) -> Tensor:
        """The float32 layer4 map: the int8 path of the batch's modality up to layer3, then layer4."""
        if isinstance(modalities, Tensor):
            values = modalities.unique().tolist()
            if len(values) != 1:
                raise ValueError("an int8 model embeds one modality per batch")
            modalities = values[0]
        if not self.calibrated(modalities):
            self.calibrate(modalities, images[:CALIBRATION_IMAGES])
        x = self.paths[str(int(modalities))](images.cpu().float().contiguous())
        return self.float_model.layer4(x)

    def forward_head(self, feature_map: Tensor) -> tuple[Tensor, Tensor]:
        return self.float_model.forward_head(feature_map)

    def forward(self, images: Tensor, modalities: Tensor | Modality | int) -> Tensor:
        """The L2-normalised BN feature (the float model's eval-mode output)."""
        _, bn = self.forward_head(self.forward_features(images, modalities))
        return nn.functional.normalize(bn, dim=1)


def float_model(model: nn.Module) -> nn.Module:
    """The float32 model behind an :class:`Int8Model` (what Grad-CAM, ONNX export and weight hashes use),
    else ``model`` itself."""
    return model.float_model if isinstance(model, Int8Model) else model
