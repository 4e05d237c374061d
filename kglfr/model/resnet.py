"""ResNet-18/34/50 in plain torch, with torchvision's state-dict layout and a configurable last stride.

The modules and parameter names match ``torchvision.models.resnet`` exactly (``conv1``, ``bn1``,
``layer1``..``layer4`` with ``downsample.0``/``downsample.1``, ``fc``), so the official ImageNet files
load unchanged (:mod:`kglfr.model.weights` finds, downloads and loads them). Builders register
themselves in :data:`BUILDERS`, the registry behind ``model.arch``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Args:
        inplanes: input channels.
        planes: output channels (``expansion`` is 1).
        stride: stride of the first convolution.
        downsample: module applied to the input for the residual when shapes differ, or None.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision: no new map per block (the values are the same)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 bottleneck with a residual connection (ResNet-50); the stride sits on the 3x3.

    Args:
        inplanes: input channels.
        planes: inner width; the output has ``planes * 4`` channels.
        stride: stride of the 3x3 convolution (torchvision's "ResNet v1.5" placement).
        downsample: module applied to the input for the residual when shapes differ, or None.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision: no new map per block (the values are the same)
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet with torchvision's module names and initialisation.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks in layer1..layer4, e.g. ``[3, 4, 6, 3]``.
        last_stride: stride of layer4's first block (torchvision: 2; re-ID: 1, doubling the map size).
        num_classes: outputs of ``fc`` (1000 for the ImageNet files).
        width: channels of the stem and layer1, doubling in each later layer (64: the published networks;
            ImageNet weights exist only for 64).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int] | tuple[int, int, int, int],
        last_stride: int = 1,
        num_classes: int = 1000,
        width: int = 64,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must have 4 entries, got {layers}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if width < 8 or width % 8:
            raise ValueError(f"width must be a positive multiple of 8, got {width}")
        self.block = block
        self.last_stride = last_stride
        self.width = width
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=last_stride)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @property
    def feature_dim(self) -> int:
        """Channels of the layer4 output (512 for ResNet-18/34, 2048 for ResNet-50, at width 64)."""
        return 8 * self.width * self.block.expansion

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward_features(self, x: Tensor) -> Tensor:
        """Layer4 feature map (B x C x h x w)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


Arch = Literal["resnet18", "resnet34", "resnet50"]
"""The backbone names: ``model.arch`` in configs, keys of :data:`BUILDERS`."""

BUILDERS: dict[str, Callable[..., ResNet]] = {}


def register(fn: Callable[..., ResNet]) -> Callable[..., ResNet]:
    """Add a backbone builder to :data:`BUILDERS` under its function name."""
    BUILDERS[fn.__name__] = fn
    return fn


@register
def resnet18(last_stride: int = 1, width: int = 64) -> ResNet:
    """ResNet-18 (11,689,512 parameters with fc)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], last_stride=last_stride, width=width)


@register
def resnet34(last_stride: int = 1, width: int = 64) -> ResNet:
    """ResNet-34 (21,797,672 parameters with fc)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], last_stride=last_stride, width=width)


@register
def resnet50(last_stride: int = 1, width: int = 64) -> ResNet:
    """ResNet-50 (25,557,032 parameters with fc)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], last_stride=last_stride, width=width)


ARCHS: tuple[str, ...] = tuple(BUILDERS)  # equal to get_args(Arch); tests/model checks it
