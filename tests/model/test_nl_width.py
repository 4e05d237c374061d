"""AGW's published non-local block has an inner width of one channel: model.nl_width=1 builds it."""

from __future__ import annotations

import pytest
import torch

from kglfr.model import AGWNet
from kglfr.model.layers import NonLocal


def test_a_fixed_width_overrides_the_reduction_and_round_trips_through_the_config():
    net = AGWNet(4, arch="resnet18", nl_width=1)
    widths = {m.inter_channels for m in net.modules() if isinstance(m, NonLocal)}
    assert widths == {1}
    assert net.config()["nl_width"] == 1 and AGWNet(**net.config()).config() == net.config()
    assert "nl_width" not in AGWNet(4, arch="resnet18").config()  # checkpoints of C/2 models stay as they were
    out = net.train()(torch.randn(4, 3, 64, 32), torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(out["global"]).all()


def test_a_width_wider_than_the_block_is_refused():
    with pytest.raises(ValueError, match="non-local width 300 does not fit 256 channels"):
        NonLocal(256, width=300)
