"""HRNet for top-down pose estimation (Sun et al., CVPR 2019), written for this project.

The module tree is laid out so that its ``state_dict`` has exactly the key names of the official
``pose_hrnet`` checkpoints (``conv1``, ``layer1.0.downsample.0``, ``transition1.1.0.0``,
``stage2.0.branches.0.0.conv1``, ``stage3.1.fuse_layers.2.0.0.0``, ``final_layer`` ...), so that
``pose_hrnet_w32_256x192.pth`` and friends load with strict key matching.

Layout: a stem of two stride-2 3x3 convolutions (1/4 resolution), four Bottleneck blocks (256 ch),
then stages 2, 3 and 4 with 2, 3 and 4 parallel branches of BasicBlocks at 1/4, 1/8, 1/16 and 1/32
resolution, repeatedly fused across resolutions; the last module keeps only the 1/4 branch, and a
1x1 convolution gives one heatmap per joint at 1/4 of the input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class HRNetConfig:
    """``width`` is the channel count of the highest-resolution branch (32 for W32, 48 for W48);
    branch ``i`` has ``width * 2**i`` channels."""

    width: int = 32
    num_joints: int = 17
    modules: tuple[int, int, int] = (1, 4, 3)  # HighResolutionModules in stages 2, 3, 4
    blocks: int = 4  # BasicBlocks per branch per module
    final_kernel: int = 1

    def channels(self, branches: int) -> list[int]:
        return [self.width * 2**i for i in range(branches)]


ARCHS = {"w32": HRNetConfig(width=32), "w48": HRNetConfig(width=48)}


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool, bn_momentum: float = 0.1) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout, momentum=bn_momentum),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output branch sums all inputs brought to its
    resolution (1x1 conv + nearest upsampling from lower resolutions; chains of stride-2 3x3 convs
    from higher ones). With ``multi_scale_output=False`` only the highest-resolution output is made."""

    def __init__(self, channels: list[int], blocks: int, multi_scale_output: bool = True):
        super().__init__()
        self.num_branches = n = len(channels)
        self.branches = nn.ModuleList(nn.Sequential(*(BasicBlock(c, c) for _ in range(blocks))) for c in channels)
        self.fuse_layers: nn.ModuleList | None = None
        if n == 1:
            return
        fuse = []
        for i in range(n if multi_scale_output else 1):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:  # lower resolution -> match channels, upsample
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                            nn.BatchNorm2d(channels[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    row.append(None)
                else:  # higher resolution -> (i - j) stride-2 convs; only the last changes channels
                    steps = i - j
                    row.append(
                        nn.Sequential(
                            *(
                                _conv_bn(
                                    channels[j],
                                    channels[i] if k == steps - 1 else channels[j],
                                    3,
                                    2,
                                    relu=k < steps - 1,
                                )
                                for k in range(steps)
                            )
                        )
                    )
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j != i:
                    y = y + layer(xs[j])
            out.append(self.relu(y))
        return out


def _transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    """Branches kept from the previous stage (identity, or a 3x3 conv when widths differ), plus new
    lower-resolution branches made from the previous stage's lowest-resolution output."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(None if pre[i] == c else _conv_bn(pre[i], c, 3, 1, relu=True))
        else:
            steps = i + 1 - len(pre)
            layers.append(
                nn.Sequential(
                    *(_conv_bn(pre[-1], c if k == steps - 1 else pre[-1], 3, 2, relu=True) for k in range(steps))
                )
            )
    return nn.ModuleList(layers)


class PoseHRNet(nn.Module):
    """Input B x 3 x H x W (ImageNet-normalised RGB), output B x joints x H/4 x W/4 heatmaps."""

    def __init__(self, cfg: HRNetConfig | str = "w32"):
        super().__init__()
        if isinstance(cfg, str):
            cfg = ARCHS[cfg]
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256, momentum=BN_MOMENTUM))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, downsample=down), *(Bottleneck(256, 64) for _ in range(3)))

        ch2, ch3, ch4 = cfg.channels(2), cfg.channels(3), cfg.channels(4)
        m2, m3, m4 = cfg.modules
        self.transition1 = _transition([256], ch2)
        self.stage2 = nn.Sequential(*(HighResolutionModule(ch2, cfg.blocks) for _ in range(m2)))
        self.transition2 = _transition(ch2, ch3)
        self.stage3 = nn.Sequential(*(HighResolutionModule(ch3, cfg.blocks) for _ in range(m3)))
        self.transition3 = _transition(ch3, ch4)
        self.stage4 = nn.Sequential(
            *(HighResolutionModule(ch4, cfg.blocks, multi_scale_output=i < m4 - 1) for i in range(m4))
        )
        k = cfg.final_kernel
        self.final_layer = nn.Conv2d(ch4[0], cfg.num_joints, k, 1, 1 if k == 3 else 0)

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, ys: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(transition):
            if i < len(ys):
                out.append(ys[i] if layer is None else layer(ys[i]))
            else:
                out.append(layer(ys[-1]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        ys = self.stage2(self._apply_transition(self.transition1, [x]))
        ys = self.stage3(self._apply_transition(self.transition2, ys))
        ys = self.stage4(self._apply_transition(self.transition3, ys))
        return self.final_layer(ys[0])


# mmpose (v0.x ``TopDown`` model: ``HRNet`` backbone + ``TopdownHeatmapSimpleHead`` with no deconv
# layers) keeps the official names under ``backbone.`` and the 1x1 head conv as ``keypoint_head.final_layer``.
MMPOSE_PREFIXES = {"backbone.": "", "keypoint_head.final_layer.": "final_layer."}


def is_mmpose_layout(keys: list[str]) -> bool:
    """True when every key starts with ``backbone.`` or ``keypoint_head.`` (an mmpose checkpoint)."""
    return bool(keys) and all(k.startswith(("backbone.", "keypoint_head.")) for k in keys)


def from_mmpose(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmpose top-down HRNet state dict -> this module's key names. Keys under no known prefix (e.g.
    the deconv layers of another head) are kept as they are, so that strict loading names them."""
    out = {}
    for key, value in state.items():
        for prefix, ours in MMPOSE_PREFIXES.items():
            if key.startswith(prefix):
                key = ours + key[len(prefix) :]
                break
        out[key] = value
    return out


def to_mmpose(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This module's state dict -> mmpose's key layout (the inverse of :func:`from_mmpose`)."""
    return {("keypoint_head." + k if k.startswith("final_layer.") else "backbone." + k): v for k, v in state.items()}


def width_of(state: dict[str, torch.Tensor]) -> int | None:
    """The width (32, 48, ...) of an HRNet state dict in this module's names: the output channels of the
    first block of the highest-resolution branch of stage 2; None when the key is absent."""
    probe = state.get("stage2.0.branches.0.0.conv1.weight")
    return int(probe.shape[0]) if probe is not None and probe.ndim == 4 else None
