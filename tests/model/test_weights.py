"""model.pretrained=imagenet: the hub cache, else a download checked against the name's sha256 prefix.

A small HTTP server on 127.0.0.1 stands in for download.pytorch.org (KGLFR_WEIGHTS_URL); no test goes online.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
import torch
from layouts import free_port

from kglfr.model import AGWNet, resnet18
from kglfr.model import weights as W


@pytest.fixture
def hub(tmp_path, monkeypatch):
    folder = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(folder))
    return folder / "checkpoints"


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A ResNet-18 weights file named as torchvision names its files, served over HTTP; (folder, name, state)."""
    folder = tmp_path / "www"
    folder.mkdir()
    torch.manual_seed(3)
    state = resnet18().state_dict()
    torch.save(state, folder / "tmp.pth")
    name = f"resnet18-{hashlib.sha256((folder / 'tmp.pth').read_bytes()).hexdigest()[:8]}.pth"
    (folder / "tmp.pth").rename(folder / name)
    monkeypatch.setitem(W.IMAGENET_FILES, "resnet18", (name,))
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(W.URL_ENV, f"http://127.0.0.1:{server.server_port}/")
    yield folder, name, state
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_download_into_the_hub_cache_then_use_the_cache(hub, served, monkeypatch):
    folder, name, state = served
    net = AGWNet(5, arch="resnet18", pretrained="imagenet")
    assert (hub / name).is_file() and sorted(p.name for p in hub.iterdir()) == [name]  # no partial file left
    assert net.weights.source == "imagenet" and net.weights.file == str(hub / name)
    assert net.weights.sha256 == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert torch.equal(net.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    monkeypatch.setenv(W.URL_ENV, "http://127.0.0.1:9/")  # the cache is used: no server needed any more
    assert AGWNet(5, arch="resnet18", pretrained="imagenet").weights == net.weights


def test_a_download_whose_hash_does_not_match_its_name_is_refused(hub, served):
    folder, name, _ = served
    (folder / name).write_bytes((folder / name).read_bytes() + b"tampered")
    with pytest.raises(W.WeightsError) as exc:
        AGWNet(5, arch="resnet18", pretrained="imagenet")
    msg = str(exc.value)
    assert "\n" not in msg and "sha256" in msg and f"/{name}" in msg and str(hub / name) in msg
    assert not hub.exists() or list(hub.iterdir()) == []


def test_offline_is_one_line_with_the_url_and_where_to_put_the_file(hub, monkeypatch):
    port = free_port()
    monkeypatch.setenv(W.URL_ENV, f"http://127.0.0.1:{port}/models/")
    with pytest.raises(W.WeightsError) as exc:
        AGWNet(5, arch="resnet50", pretrained="imagenet")
    msg = str(exc.value)
    assert "\n" not in msg and f"http://127.0.0.1:{port}/models/resnet50-0676ba61.pth" in msg
    assert str(hub / "resnet50-0676ba61.pth") in msg and "none" in msg
    assert not hub.exists() or list(hub.iterdir()) == []


def test_a_damaged_cached_file_or_a_truncated_file_is_one_line_naming_it(hub, tmp_path):
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(b"junk")
    with pytest.raises(W.WeightsError, match=r"resnet18-f37072fd.pth has sha256 .*not the f37072fd"):
        AGWNet(5, arch="resnet18", pretrained="imagenet")
    good = tmp_path / "r18.pth"
    torch.save(resnet18().state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(W.WeightsError) as exc:
        AGWNet(5, arch="resnet18", pretrained=str(cut))
    assert "\n" not in str(exc.value) and str(cut) in str(exc.value)
    info = AGWNet(5, arch="resnet18", pretrained=str(good)).weights
    assert info.source == "file" and info.sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
