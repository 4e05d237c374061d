"""The AGW baseline with a two-stream stem: modality-specific conv1/bn1, shared ResNet stages 1-4.

Layout of the parameters (state-dict names):

- ``stems.0`` (visible) and ``stems.1`` (infrared), indexed by ``int(Modality)``: each a ``Stem`` with
  ``conv1``, ``bn1`` (plus relu and maxpool), both copied from the same ImageNet stem when pretrained.
- ``layer1``..``layer4``: the ResNet stages, shared by both modalities (no ``fc``).
- ``nl_layer2``/``nl_layer3``: non-local blocks keyed by the index of the block they follow. AGW puts
  2 after the last two blocks of layer2 and 3 after the last three of layer3 (ResNet-50: layer2 blocks
  2, 3; layer3 blocks 3, 4, 5). ResNet-18 has 2 blocks in each, so it gets one after each of them
  (2 + 2); ResNet-34 has 4 and 6, as ResNet-50.
- ``pool`` (GeM), ``bnneck`` (BatchNorm1d, bias frozen at 0), ``classifier`` (Linear, no bias).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kglfr.data.records import Modality
from kglfr.model.layers import GeM, NonLocal
from kglfr.model.resnet import ARCHS, BUILDERS, ResNet
from kglfr.model.weights import WeightsInfo, load_pretrained

log = logging.getLogger(__name__)

Arch = Literal["resnet18", "resnet34", "resnet50"]

# AGW's non_layers=[0, 2, 3, 0]: non-local blocks after the last n blocks of layer1..layer4.
NON_LOCAL_COUNTS = (0, 2, 3, 0)


class Stem(nn.Module):
    """ResNet stem: conv1 (7x7, stride 2) + bn1 + relu + maxpool (3x3, stride 2).

    Args:
        conv1: the 7x7 convolution (taken over, not copied).
        bn1: its BatchNorm (taken over, not copied).
    """

    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


def _conv_out(size: int, stride: int) -> int:
    # Every strided op in a ResNet (7x7 p3, 3x3 p1, 1x1 p0, maxpool 3x3 p1) maps n to (n - 1) // s + 1.
    return (size - 1) // stride + 1


class AGWNet(nn.Module):
    """AGW re-ID network: two-stream stem, shared ResNet, non-local blocks, GeM, BNNeck, classifier.

    Args:
        num_classes: training identities (classifier outputs).
        arch: "resnet18", "resnet34" or "resnet50".
        last_stride: stride of layer4 (1 gives an 18x9 map for a 288x144 input).
        non_local: add the non-local blocks in layer2 and layer3.
        nl_reduction: non-local inner width is channels // nl_reduction.
        nl_width: a fixed non-local inner width instead (1: the published AGW code's width, a known bug).
        width: the backbone's base width (64, the published ResNets; less makes a narrower, faster network
            trained from random initialisation: there are no pretrained weights for it).
        gem_p: GeM exponent (fixed).
        pretrained: "imagenet" (torchvision's file: hub cache or download), a weights file in torchvision's
            layout, or "none"/None for random initialisation (a checkpoint's weights follow).
        pretrained_search_hub: ignored; accepted so checkpoints that name it still rebuild.
    """

    def __init__(
        self,
        num_classes: int,
        arch: Arch = "resnet50",
        last_stride: int = 1,
        non_local: bool = True,
        nl_reduction: int = 2,
        gem_p: float = 3.0,
        pretrained: str | Path | None = None,
        nl_width: int | None = None,
        pretrained_search_hub: bool = False,
        width: int = 64,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.arch = arch
        self.last_stride = last_stride
        self.non_local = non_local
        self.nl_reduction = nl_reduction
        self.nl_width = nl_width
        self.gem_p = gem_p
        self.width = width
        if width != 64 and pretrained not in (None, "none"):
            raise ValueError(f"width={width}: pretrained weights exist only for width 64; use pretrained='none'")

        resnet: ResNet = BUILDERS[arch](last_stride=last_stride, width=width)
        self.weights: WeightsInfo = load_pretrained(resnet, pretrained, arch)

        self.stems = nn.ModuleList([Stem(copy.deepcopy(resnet.conv1), copy.deepcopy(resnet.bn1)) for _ in Modality])
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        self._feature_dim = resnet.feature_dim

        self.nl_layer2 = nn.ModuleDict()
        self.nl_layer3 = nn.ModuleDict()
        if non_local:
            expansion = resnet.block.expansion
            for layer, nl, count, channels in (
                (self.layer2, self.nl_layer2, NON_LOCAL_COUNTS[1], 2 * width * expansion),
                (self.layer3, self.nl_layer3, NON_LOCAL_COUNTS[2], 4 * width * expansion),
            ):
                for idx in range(max(0, len(layer) - count), len(layer)):
                    nl[str(idx)] = NonLocal(channels, reduction=nl_reduction, width=nl_width)

        self.pool = GeM(p=gem_p)
        self.bnneck = nn.BatchNorm1d(self._feature_dim)
        nn.init.constant_(self.bnneck.weight, 1.0)
        nn.init.constant_(self.bnneck.bias, 0.0)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(self._feature_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    @property
    def feature_dim(self) -> int:
        """Channels of the layer4 map and of the pooled/BN features (2048 for ResNet-50, 512 for 18/34)."""
        return self._feature_dim

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture: ``AGWNet(**model.config())``.

        The initial weights are left out: a rebuilt model gets its weights from the checkpoint.
        """
        return {
            "num_classes": self.num_classes,
            "arch": self.arch,
            "last_stride": self.last_stride,
            "non_local": self.non_local,
            "nl_reduction": self.nl_reduction,
            "gem_p": self.gem_p,
            **({} if self.nl_width is None else {"nl_width": self.nl_width}),
            **({} if self.width == 64 else {"width": self.width}),
        }

    def feature_map_size(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Height and width of the layer4 map for an input of ``input_hw`` (288x144 -> 18x9 at last stride 1)."""
        strides = (2, 2, 2, 2, self.last_stride)  # conv1, maxpool, layer2, layer3, layer4
        h, w = input_hw
        for s in strides:
            h, w = _conv_out(h, s), _conv_out(w, s)
        return h, w

    def _stem(self, images: Tensor, modalities: Tensor | Modality | int) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be B x 3 x H x W, got {tuple(images.shape)}")
        if not isinstance(modalities, Tensor):
            return self.stems[int(Modality(modalities))](images)
        if modalities.shape != (images.shape[0],):
            raise ValueError(f"modalities must have shape ({images.shape[0]},), got {tuple(modalities.shape)}")
        modalities = modalities.to(images.device)
        valid = [int(m) for m in Modality]
        if not torch.isin(modalities, torch.tensor(valid, device=modalities.device)).all():
            raise ValueError(f"modalities must be {valid}, got {modalities.unique().tolist()}")
        if modalities.numel() > 1 and bool((modalities[1:] >= modalities[:-1]).all()):
            return self._sorted_stems(images, modalities)
        parts, order = [], []
        for m in Modality:
            idx = torch.nonzero(modalities == int(m), as_tuple=True)[0]
            if idx.numel():
                parts.append(self.stems[int(m)](images.index_select(0, idx)))
                order.append(idx)
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts).index_select(0, torch.argsort(torch.cat(order)))

    def _sorted_stems(self, images: Tensor, modalities: Tensor) -> Tensor:
        """A batch whose modalities are sorted (visible first, as AGW's ``cat(x1, x2)``): each stem on a view
        of its rows, no gather of the images and no reorder of the stems' maps."""
        counts = torch.bincount(modalities, minlength=len(Modality)).tolist()
        parts, start = [], 0
        for m, n in zip(Modality, counts, strict=True):
            if n:
                parts.append(self.stems[int(m)](images.narrow(0, start, n)))
                start += n
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def _run_layer(layer: nn.Sequential, nl: nn.ModuleDict, x: Tensor) -> Tensor:
        for idx, block in enumerate(layer):
            x = block(x)
            if str(idx) in nl:
                x = nl[str(idx)](x)
        return x

    def forward_features(self, images: Tensor, modalities: Tensor | Modality | int) -> Tensor:
        """Layer4 map (B x C x h x w).

        Args:
            images: B x 3 x H x W.
            modalities: B ``Modality`` values (long tensor), or one ``Modality`` for the whole batch.

        Each stem runs only on its own samples and the results go back in the input order. A batch of
        one modality leaves the other stem out of the graph (under DDP that needs find_unused_parameters).
        """
        x = self._stem(images, modalities)
        x = self.layer1(x)
        x = self._run_layer(self.layer2, self.nl_layer2, x)
        x = self._run_layer(self.layer3, self.nl_layer3, x)
        return self.layer4(x)

    def forward(self, images: Tensor, modalities: Tensor | Modality | int) -> dict[str, Tensor] | Tensor:
        """Training mode: dict of "global" (pooled, B x C), "bn" (B x C), "logits" (B x num_classes) and
        "feature_map" (B x C x h x w). Eval mode: the L2-normalised BN feature (B x C)."""
        fmap = self.forward_features(images, modalities)
        pooled, bn = self.forward_head(fmap)
        if not self.training:
            return F.normalize(bn, dim=1)
        with torch.autocast(bn.device.type, enabled=False):
            logits = self.classifier(bn)
        return {"global": pooled, "bn": bn, "logits": logits, "feature_map": fmap}

    def forward_head(self, feature_map: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled, BN) features (B x C each, not normalised) of a layer4 map from :meth:`forward_features`,
        so one backbone pass gives both test-time features (as timm's ``forward_head``).

        Under autocast the head runs in float32: GeM's cube and cube root and the BN statistics are where
        bfloat16's 8-bit mantissa loses most, and the head is a small part of the work. (It did not close the
        demo's bf16-against-float32 gap: docs/benchmarks.md.)"""
        with torch.autocast(feature_map.device.type, enabled=False):
            pooled = self.pool(feature_map.float())
            return pooled, self.bnneck(pooled)

    def extract(
        self,
        images: Tensor,
        modalities: Tensor | Modality | int,
        which: Literal["bn", "pool"] = "bn",
        normalise: bool = True,
    ) -> Tensor:
        """Test-time feature (B x C): the BN feature (headline) or the pooled one, L2-normalised by default.

        Uses the module's current mode (call ``eval()`` first) and does not disable autograd.
        """
        if which not in ("bn", "pool"):
            raise ValueError(f"which must be 'bn' or 'pool', got {which!r}")
        feat = self.pool(self.forward_features(images, modalities))
        if which == "bn":
            feat = self.bnneck(feat)
        return F.normalize(feat, dim=1) if normalise else feat

    def param_groups(
        self, lr: float, backbone_lr_mult: float = 0.1, weight_decay: float = 5e-4
    ) -> list[dict[str, Any]]:
        """Optimizer groups: "backbone" (stems, layers, non-local, GeM) at ``lr * backbone_lr_mult`` and
        "head" (BNNeck, classifier) at ``lr``; only trainable parameters, each in exactly one group."""
        head_ids = {id(p) for p in (*self.bnneck.parameters(), *self.classifier.parameters())}
        head, backbone = [], []
        for p in self.parameters():
            if p.requires_grad:
                (head if id(p) in head_ids else backbone).append(p)
        return [
            {"name": "backbone", "params": backbone, "lr": lr * backbone_lr_mult, "weight_decay": weight_decay},
            {"name": "head", "params": head, "lr": lr, "weight_decay": weight_decay},
        ]
