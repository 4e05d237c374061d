"""Building blocks of the AGW baseline: the non-local block and generalized-mean pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NonLocal(nn.Module):
    """AGW's non-local block (dot-product form): ``z = W(y) + x`` with ``y = (theta^T phi / N) g``.

    ``W`` is a 1x1 convolution followed by BatchNorm whose weight and bias start at 0, so the block is
    the identity at initialisation. The reference AGW code computes the inner width as
    ``reduc_ratio // reduc_ratio`` (always 1); here it is ``in_channels // reduction`` unless ``width`` is
    given (``width=1`` is the reference code's block).

    Args:
        in_channels: channels of the input and output.
        reduction: the inner width is ``in_channels // reduction`` (2 gives C/2).
        width: a fixed inner width instead (1: AGW's published code).
    """

    def __init__(self, in_channels: int, reduction: int = 2, width: int | None = None) -> None:
        super().__init__()
        if reduction < 1 or in_channels // reduction < 1:
            raise ValueError(f"reduction {reduction} does not fit {in_channels} channels")
        if width is not None and not 1 <= width <= in_channels:
            raise ValueError(f"non-local width {width} does not fit {in_channels} channels")
        self.in_channels = in_channels
        self.inter_channels = in_channels // reduction if width is None else width
        self.g = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.theta = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.W = nn.Sequential(
            nn.Conv2d(self.inter_channels, in_channels, kernel_size=1),
            nn.BatchNorm2d(in_channels),
        )
        nn.init.constant_(self.W[1].weight, 0.0)
        nn.init.constant_(self.W[1].bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        g_x = self.g(x).flatten(2).transpose(1, 2)  # B x N x C'
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # B x N x C'
        phi_x = self.phi(x).flatten(2)  # B x C' x N
        f = torch.matmul(theta_x, phi_x) / phi_x.shape[-1]  # B x N x N
        # sizes read off x.shape one by one (not unpacked), so FX can trace the block (int8 inference)
        y = torch.matmul(f, g_x).transpose(1, 2).contiguous()
        # contiguous: the transposed view has channels_last strides, so W and every later convolution of a
        # contiguous model would run channels_last and copy their weights to match, forward and backward
        y = y.reshape(x.shape[0], self.inter_channels, x.shape[2], x.shape[3])
        return self.W(y) + x


class GeM(nn.Module):
    """Generalized-mean pooling over the spatial dimensions: ``mean(x.clamp(eps) ** p) ** (1 / p)``.

    p = 1 is average pooling; large p approaches max pooling. Returns B x C.

    Args:
        p: the exponent (AGW: 3, fixed).
        eps: lower clamp of the input, keeping the power and root finite.
        learn_p: make ``p`` a trainable parameter instead of a constant.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = False) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        self.eps = eps
        self.learn_p = learn_p
        if learn_p:
            self.p = nn.Parameter(torch.tensor(float(p)))
        else:
            self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        p = self.p
        pooled = F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(p), 1).flatten(1)
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        p = self.p.item() if isinstance(self.p, Tensor) else self.p
        return f"p={p:.4g}, eps={self.eps}, learn_p={self.learn_p}"
