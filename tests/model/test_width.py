"""model.width: a narrower ResNet (base channels other than 64), trained from random initialisation; the
head in float32 under autocast."""

from __future__ import annotations

import pytest
import torch

from kglfr.errors import KglfrError
from kglfr.model import AGWNet
from kglfr.model.layers import NonLocal
from kglfr.model.resnet import resnet18, resnet50
from kglfr.train import config as C


def test_width_sets_every_layers_channels_and_the_feature_size():
    net = resnet18(width=32)
    assert [net.layer1[0].conv1.out_channels, net.layer2[0].conv1.out_channels, net.layer3[0].conv1.out_channels,
            net.layer4[0].conv1.out_channels] == [32, 64, 128, 256]  # fmt: skip
    assert net.feature_dim == 256 and net.fc.in_features == 256
    assert resnet50(width=16).feature_dim == 16 * 8 * 4
    narrow, full = (sum(p.numel() for p in resnet18(width=w).parameters()) for w in (32, 64))
    assert 0.2 < narrow / full < 0.3  # convolutions scale with width squared


def test_a_narrow_agw_net_trains_its_non_local_blocks_fit_and_the_config_round_trips():
    net = AGWNet(5, arch="resnet18", width=16, non_local=True, pretrained="none")
    assert {m.in_channels for m in net.modules() if isinstance(m, NonLocal)} == {32, 64}
    out = net.train()(torch.randn(4, 3, 64, 32), torch.tensor([0, 0, 1, 1]))
    assert out["global"].shape == (4, 128) and torch.isfinite(out["logits"]).all()
    assert net.config()["width"] == 16 and AGWNet(**net.config()).config() == net.config()
    assert "width" not in AGWNet(5, arch="resnet18", pretrained="none").config()  # old checkpoints unchanged


def test_pretrained_weights_need_the_published_width():
    with pytest.raises(ValueError, match="width=32: pretrained weights exist only for width 64"):
        AGWNet(5, arch="resnet18", width=32, pretrained="imagenet")
    with pytest.raises(ValueError, match="multiple of 8"):
        resnet18(width=12)


def test_the_config_refuses_a_width_with_imagenet_weights_naming_the_override():
    with pytest.raises(KglfrError, match=r"override 'model.width=32': model.width is 32: .*model.pretrained=none"):
        C.load_config("sysu/kglfr", ["model.width=32"])
    with pytest.raises(KglfrError, match="model.width must be a multiple of 8, got 20"):
        C.load_config("demo", ["model.width=20"])
    assert C.load_config("sysu/kglfr", ["model.width=32", "model.pretrained=none"]).model.width == 32


def test_the_head_runs_in_float32_under_autocast():
    """GeM's cube and root and the BN statistics in bf16 cost the demo accuracy: the head stays float32."""
    net = AGWNet(5, arch="resnet18", width=16, non_local=False, pretrained="none").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(4, 3, 64, 32), torch.tensor([0, 0, 1, 1]))
        test = net.eval()(torch.randn(2, 3, 64, 32), 1)
    assert out["feature_map"].dtype == torch.bfloat16  # the backbone runs in bf16
    assert {out[k].dtype for k in ("global", "bn", "logits")} == {torch.float32}
    assert test.dtype == torch.float32
