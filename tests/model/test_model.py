"""kglfr.model: ResNet layout parity with torchvision, weight loading, AGWNet routing/outputs/groups."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from kglfr.data.records import Modality
from kglfr.errors import KglfrError
from kglfr.model import AGWNet, GeM, NonLocal, build_model, load_imagenet, resnet18, resnet34, resnet50

VIS, IR = int(Modality.VISIBLE), int(Modality.INFRARED)


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """Point the torch hub cache at an empty folder so no test sees real downloaded weights."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture(scope="module")
def net50():
    return AGWNet(7, arch="resnet50", pretrained="none")


def small_net(**kwargs) -> AGWNet:
    torch.manual_seed(0)
    return AGWNet(5, arch="resnet18", pretrained="none", **kwargs)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def saved_resnet18(path, mutate=None):
    """Save a random torchvision-layout ResNet-18 state dict (non-default BN stats) and return it."""
    torch.manual_seed(1)
    sd = resnet18().state_dict()
    sd["bn1.running_mean"] = torch.randn(64)
    sd["layer3.1.bn2.running_var"] = torch.rand(256) + 0.5
    if mutate is not None:
        sd = mutate(sd)
    torch.save(sd, path)
    return sd


# --- ResNet layout -----------------------------------------------------------------------------------


def test_param_counts_and_state_dict_sizes_match_torchvision():
    assert n_params(resnet18()) == 11_689_512
    assert len(resnet18().state_dict()) == 122
    assert n_params(resnet34()) == 21_797_672
    r50 = resnet50()
    assert n_params(r50) == 25_557_032
    assert len(r50.state_dict()) == 320


def test_resnet50_named_keys_and_shapes():
    sd = resnet50().state_dict()
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.weight": (256,),
        "layer3.5.conv3.weight": (1024, 256, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "layer4.2.bn3.num_batches_tracked": (),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert "layer1.1.downsample.0.weight" not in sd
    assert {k.split(".")[0] for k in sd} == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}


def test_last_stride_placement():
    r50 = resnet50(last_stride=2)
    assert r50.layer4[0].conv2.stride == (2, 2) and r50.layer4[0].conv1.stride == (1, 1)
    assert resnet50(last_stride=1).layer4[0].conv2.stride == (1, 1)
    r18 = resnet18(last_stride=1)
    assert r18.layer4[0].conv1.stride == (1, 1)
    assert r18.layer4[0].downsample[0].weight.shape == (512, 256, 1, 1)  # still there: channels change
    bn = resnet18().layer1[0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_feature_map_size_matches_forward(net50):
    assert net50.feature_map_size((288, 144)) == (18, 9)
    net = small_net()
    net.eval()
    with torch.no_grad():
        for hw in ((64, 32), (70, 30)):
            fmap = net.forward_features(torch.randn(1, 3, *hw), Modality.VISIBLE)
            assert tuple(fmap.shape[2:]) == net.feature_map_size(hw)
    assert net.feature_map_size((64, 32)) == (4, 2)
    assert net.feature_map_size((70, 30)) == (5, 2)
    assert small_net(last_stride=2).feature_map_size((288, 144)) == (9, 5)


def test_resnet50_tiny_forward(net50):
    net50.eval()
    with torch.no_grad():
        out = net50(torch.randn(2, 3, 32, 16), torch.tensor([VIS, IR]))
    assert out.shape == (2, 2048)
    assert net50.feature_dim == 2048 and small_net().feature_dim == 512


# --- Weight loading ----------------------------------------------------------------------------------


def test_load_file_into_agwnet_round_trips(tmp_path):
    path = tmp_path / "r18.pth"
    sd = saved_resnet18(path)
    net = AGWNet(5, arch="resnet18", pretrained=path)
    assert net.weights.file == str(path) and net.weights.source == "file"
    for stem in net.stems:
        assert torch.equal(stem.conv1.weight, sd["conv1.weight"])
        assert torch.equal(stem.bn1.running_mean, sd["bn1.running_mean"])
        assert torch.equal(stem.bn1.weight, sd["bn1.weight"])
    assert net.stems[0].conv1.weight.data_ptr() != net.stems[1].conv1.weight.data_ptr()  # copies, not shared
    own = net.state_dict()
    for k, v in sd.items():
        if k.startswith("layer"):
            assert torch.equal(own[k], v), k


def test_load_imagenet_module_prefix_state_dict_wrapper_and_old_files(tmp_path):
    sd = saved_resnet18(tmp_path / "plain.pth")
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}}
    wrapped["state_dict"] = {k: v for k, v in wrapped["state_dict"].items() if not k.startswith("module.fc.")}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    model = resnet18()
    assert load_imagenet(model, str(tmp_path / "wrapped.pth"), "resnet18") == tmp_path / "wrapped.pth"
    assert torch.equal(model.layer3[1].bn2.running_var, sd["layer3.1.bn2.running_var"])
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])


def test_none_is_random_initialisation_without_a_word(caplog):
    with caplog.at_level(logging.INFO):
        torch.manual_seed(0)
        a = AGWNet(5, arch="resnet18", pretrained="none")
        torch.manual_seed(0)
        b = AGWNet(5, arch="resnet18")  # a checkpoint's rebuild: no weights looked for, nothing logged
    assert a.weights.to_dict() == b.weights.to_dict() == {"source": "none", "file": None, "sha256": None}
    assert caplog.text == ""
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_mismatched_files_raise_one_line_naming_keys(tmp_path):
    path = tmp_path / "r18.pth"
    saved_resnet18(path)
    with pytest.raises(KglfrError) as exc:
        load_imagenet(resnet50(), path, "resnet50")
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and "resnet50" in msg
    assert "missing keys" in msg and "layer1.0.conv3.weight" in msg and "shape mismatches" in msg

    def drop_and_add(sd):
        del sd["layer2.1.bn2.weight"]
        sd["extra.weight"] = torch.zeros(1)
        return sd

    saved_resnet18(path, drop_and_add)
    with pytest.raises(
        KglfrError, match=r"1 missing keys \(layer2\.1\.bn2\.weight\).*1 unexpected keys \(extra\.weight\)"
    ):
        AGWNet(5, arch="resnet18", pretrained=path)


def test_unreadable_or_absent_files_raise(tmp_path):
    with pytest.raises(KglfrError, match="not found"):
        load_imagenet(resnet18(), tmp_path / "nope.pth", "resnet18")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(KglfrError, match="cannot read"):
        load_imagenet(resnet18(), tmp_path / "junk.pth", "resnet18")
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(KglfrError, match="state dict"):
        load_imagenet(resnet18(), tmp_path / "meta.pth", "resnet18")


# --- Layers ------------------------------------------------------------------------------------------


def test_non_local_starts_as_identity_and_width():
    nl = NonLocal(16)
    assert nl.theta.out_channels == nl.phi.out_channels == nl.g.out_channels == 8
    assert NonLocal(16, reduction=4).theta.out_channels == 4
    x = torch.randn(2, 16, 5, 3)
    for train in (True, False):
        nl.train(train)
        assert torch.equal(nl(x), x)
    with torch.no_grad():
        nl.W[1].weight.fill_(1.0)
    nl.eval()
    assert not torch.allclose(nl(x), x)


def test_gem_limits():
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.5
    assert torch.allclose(GeM(p=1.0)(x), x.mean(dim=(2, 3)))
    assert torch.allclose(GeM(p=200.0)(x), x.amax(dim=(2, 3)), rtol=0.02)
    assert GeM()(x).shape == (2, 3)
    learned = GeM(learn_p=True)
    assert isinstance(learned.p, torch.nn.Parameter) and len(list(GeM().parameters())) == 0


def test_non_local_placement(net50):
    assert sorted(net50.nl_layer2) == ["2", "3"] and sorted(net50.nl_layer3) == ["3", "4", "5"]
    assert net50.nl_layer2["2"].theta.out_channels == 256  # layer2 has 512 channels
    assert net50.nl_layer3["5"].theta.out_channels == 512
    net = small_net(nl_reduction=4)
    assert sorted(net.nl_layer2) == ["0", "1"] and sorted(net.nl_layer3) == ["0", "1"]
    assert net.nl_layer3["1"].theta.out_channels == 64
    assert len(small_net(non_local=False).nl_layer2) == 0


# --- AGWNet ------------------------------------------------------------------------------------------


def test_modality_routing_and_order():
    net = small_net()
    with torch.no_grad():
        net.stems[IR].conv1.weight.mul_(-1.5)
    net.eval()
    x = torch.randn(4, 3, 32, 16)
    mods = torch.tensor([VIS, IR, IR, VIS])
    with torch.no_grad():
        mixed = net.forward_features(x, mods)
        vis = net.forward_features(x[[0, 3]], Modality.VISIBLE)
        ir = net.forward_features(x[[1, 2]], torch.tensor([IR, IR]))
        all_vis = net.forward_features(x, VIS)
    assert torch.allclose(mixed[[0, 3]], vis, atol=1e-5)
    assert torch.allclose(mixed[[1, 2]], ir, atol=1e-5)
    assert torch.allclose(all_vis[[0, 3]], vis, atol=1e-5)
    assert not torch.allclose(all_vis[[1, 2]], ir, atol=1e-3)  # the stems really differ
    with pytest.raises(ValueError, match="modalities"):
        net(x, torch.tensor([VIS, IR, 2, VIS]))


def test_a_batch_sorted_by_modality_takes_views_and_gives_the_same_maps():
    net = small_net()
    with torch.no_grad():
        net.stems[IR].conv1.weight.mul_(-1.5)
    x = torch.randn(6, 3, 32, 16)
    mods = torch.tensor([VIS, IR, VIS, IR, IR, VIS])
    order = torch.argsort(mods, stable=True)  # visible first, as AGW's cat(x1, x2)
    for mode in (net.eval, net.train):
        mode()
        torch.manual_seed(0)
        mixed = net.forward_features(x, mods)
        torch.manual_seed(0)
        sorted_ = net.forward_features(x[order], mods[order])
        assert torch.allclose(mixed[order], sorted_, atol=1e-5)
    net.eval()
    calls = []
    net.stems[VIS].register_forward_pre_hook(lambda m, a: calls.append(a[0].untyped_storage().data_ptr()))
    with torch.no_grad():
        xs = x[order]
        net.forward_features(xs, mods[order])
    assert calls == [xs.untyped_storage().data_ptr()]  # a view of the batch, not a gathered copy


def test_train_outputs_and_gradients_reach_every_parameter():
    net = small_net()
    net.train()
    x = torch.randn(4, 3, 32, 16)
    out = net(x, torch.tensor([VIS, IR, VIS, IR]))
    assert set(out) == {"global", "bn", "logits", "feature_map"}
    assert out["global"].shape == (4, 512) and out["bn"].shape == (4, 512)
    assert out["logits"].shape == (4, 5) and out["feature_map"].shape == (4, 512, 2, 1)
    loss = F.cross_entropy(out["logits"], torch.tensor([0, 1, 2, 3])) + out["global"].pow(2).mean()
    loss.backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert net.stems[VIS].conv1.weight.grad.abs().sum() > 0 and net.stems[IR].conv1.weight.grad.abs().sum() > 0
    assert not net.bnneck.bias.requires_grad and torch.all(net.bnneck.bias == 0)


def test_eval_output_is_normalised_bn_feature():
    net = small_net()
    net.eval()
    x = torch.randn(3, 3, 32, 16)
    mods = torch.tensor([IR, VIS, IR])
    with torch.no_grad():
        out = net(x, mods)
        pooled = net.extract(x, mods, which="pool", normalise=False)
        raw_bn = net.extract(x, mods, normalise=False)
    assert out.shape == (3, 512)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out, F.normalize(raw_bn, dim=1), atol=1e-6)
    assert torch.allclose(raw_bn, net.bnneck(pooled), atol=1e-5)
    assert torch.allclose(net.extract(x, mods, which="pool"), F.normalize(pooled, dim=1), atol=1e-6)


def test_param_groups_cover_every_trainable_parameter_once(net50):
    groups = net50.param_groups(lr=3.5e-4, backbone_lr_mult=0.1, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in net50.parameters() if p.requires_grad}
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == pytest.approx(3.5e-4) and by_name["backbone"]["lr"] == pytest.approx(3.5e-5)
    assert {id(p) for p in by_name["head"]["params"]} == {id(net50.bnneck.weight), id(net50.classifier.weight)}
    assert all(g["weight_decay"] == 5e-4 and "initial_lr" not in g for g in groups)
    torch.optim.SGD(groups, lr=1.0)  # accepted as-is


def test_config_rebuilds_the_model(net50):
    # ResNet-50 without fc 23,508,032 + second stem 9,536 + 5 non-local blocks + BNNeck 4,096 + 7 x 2048 classifier
    assert n_params(net50) == 30_894_464
    net = small_net(nl_reduction=4, gem_p=4.0)
    cfg = net.config()
    assert "pretrained" not in cfg and "pretrained_search_hub" not in cfg
    rebuilt = build_model(**cfg)
    assert AGWNet(**cfg, pretrained_search_hub=False).config() == cfg  # checkpoints that name it still rebuild
    with pytest.raises(KglfrError, match="unknown model arch 'vgg16'; valid: resnet18, resnet34, resnet50"):
        build_model("vgg16", 5)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    assert rebuilt.config() == cfg and rebuilt.arch == "resnet18"
