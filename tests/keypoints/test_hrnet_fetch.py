"""``kglfr keypoints --fetch-model hrnet``: mmpose's HRNet-W32 checkpoint fetched, checked, mapped, loaded.

A server on 127.0.0.1, started here, stands in for download.openmmlab.com: it serves a checkpoint built
in mmpose's layout (``state_dict`` with ``backbone.`` / ``keypoint_head.final_layer.`` keys, next to a
``meta`` entry) from our own randomly initialised HRNet. No test goes online.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from layouts import free_port

from kglfr import download as D
from kglfr.cli import main
from kglfr.keypoints.backends.hrnet import HRNetBackend
from kglfr.keypoints.hrnet_arch import PoseHRNet, to_mmpose
from kglfr.keypoints.weights import HRNET_URL, HRNET_URL_ENV, hrnet_weights_name

WANTED = hrnet_weights_name("w32", "256x192")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/cut/NAME`` promises NAME's full length but closes after half of it, and so
    does ``/resumable/NAME``, which then serves the rest to a Range request."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        prefix, _, name = self.path.lstrip("/").partition("/")
        if prefix not in ("cut", "resumable"):
            return super().do_GET()
        data = (Path(self.directory) / name).read_bytes()
        start = int(self.headers.get("Range", "bytes=0-")[len("bytes=") :].rstrip("-"))
        if prefix == "resumable" and start:  # honour the Range: the rest, as 206
            self.send_response(206)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        self.send_response(200)  # promise the whole file, send half of it and hang up
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


def _mmpose_named(folder: Path, data: bytes, stem: str = "hrnet_w32_coco_256x192") -> str:
    name = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}_20200708.pth"
    (folder / name).write_bytes(data)
    return name


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(folder served, mmpose-named W32 checkpoint, the model it was made from, a small file's name)."""
    folder = tmp_path_factory.mktemp("www")
    torch.manual_seed(5)
    model = PoseHRNet("w32").eval()
    for m in model.modules():  # BatchNorm statistics unlike the defaults, so that a mix-up would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    meta = {"epoch": 210, "mmcv_version": "1.0.5", "time": "Wed Jul  8 2020", "config": "model = dict(...)"}
    tmp = folder / "tmp.pth"
    torch.save({"meta": meta, "state_dict": to_mmpose(model.state_dict())}, tmp)
    name = _mmpose_named(folder, tmp.read_bytes())
    tmp.unlink()
    small = _mmpose_named(folder, b"x" * 300_000, "small")
    return folder, name, model, small


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up early (the full-disk test) is expected here


@pytest.fixture(scope="module")
def server(source):
    handler = functools.partial(Handler, directory=str(source[0]))
    srv = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KGLFR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(HRNET_URL_ENV, raising=False)
    return tmp_path / "home"


def _fetch(capsys, *extra: str) -> tuple[int, str, str]:
    rc = main(["keypoints", "--fetch-model", "hrnet", "--no-progress", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def test_fetched_mmpose_weights_map_and_give_the_source_models_heatmaps(source, server, home, capsys, monkeypatch):
    folder, name, model, _ = source
    monkeypatch.setenv(HRNET_URL_ENV, f"{server}/{name}")
    rc, out, err = _fetch(capsys)
    assert rc == 0, err
    assert sorted(p.name for p in home.iterdir()) == [WANTED]  # no partial file beside it
    assert (home / WANTED).read_bytes() == (folder / name).read_bytes()
    backend = HRNetBackend()  # no weights, no arch: the fetched file in the kglfr home, its width read
    assert backend.arch == "w32" and backend.weights_path == home / WANTED
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x).numpy()
    np.testing.assert_array_equal(backend.heatmaps(x), expected)
    rc, out, _ = _fetch(capsys, "--url", "http://127.0.0.1:9/" + name)  # already there: nothing to fetch
    assert rc == 0 and str(home / WANTED) in out


def test_the_default_url_is_mmposes_and_its_prefix_is_read_from_the_name():
    assert HRNET_URL.startswith("https://download.openmmlab.com/mmpose/top_down/hrnet/")
    assert D.sha256_prefix(HRNET_URL) == "c78dce93"
    assert D.sha256_prefix("http://mirror/x/resnet50-0676ba61.pth") == "0676ba61"
    assert D.sha256_prefix("http://mirror/x/weights.pth") is None


def _one_line_and_nothing_left(rc: int, err: str, home: Path, *words: str) -> None:
    assert rc != 0
    line = err.strip()
    assert "\n" not in line and line.startswith("kglfr keypoints: error:"), err
    for word in words:
        assert word in line, (word, line)
    assert not home.exists() or list(home.iterdir()) == []


def test_a_wrong_hash_is_refused_naming_expected_and_received(source, server, home, capsys):
    folder, _, _, small = source
    wrong = "small-0badbeef_20200708.pth"
    (folder / wrong).write_bytes((folder / small).read_bytes())
    received = hashlib.sha256((folder / small).read_bytes()).hexdigest()[:16]
    rc, _, err = _fetch(capsys, "--url", f"{server}/{wrong}")
    _one_line_and_nothing_left(rc, err, home, "expected sha256 0badbeef", f"received {received}")


def test_a_truncated_download_is_retried_then_refused(source, server, home, capsys):
    rc, _, err = _fetch(capsys, "--url", f"{server}/cut/{source[3]}")
    _one_line_and_nothing_left(rc, err, home, "truncated", "150000 of 300000", HRNET_URL_ENV)


def test_a_dropped_connection_resumes_with_a_range_request(source, server, tmp_path):
    folder, _, _, small = source
    digest = D.download(
        f"{server}/resumable/{small}", tmp_path / "f.pth", sha256=D.sha256_prefix(small), progress=False
    )
    assert (tmp_path / "f.pth").read_bytes() == (folder / small).read_bytes()
    assert digest == hashlib.sha256((folder / small).read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pth"]


def test_a_missing_file_is_one_line_with_the_status(server, home, capsys):
    rc, _, err = _fetch(capsys, "--url", f"{server}/nothere-12345678_1.pth")
    _one_line_and_nothing_left(rc, err, home, "HTTP 404", f"{server}/nothere-12345678_1.pth")


def test_offline_names_the_url_and_the_variable(home, capsys, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/hrnet_w32_coco_256x192-c78dce93_20200708.pth"
    monkeypatch.setenv(HRNET_URL_ENV, url)
    rc, _, err = _fetch(capsys)
    _one_line_and_nothing_left(rc, err, home, url, HRNET_URL_ENV)


def test_a_full_disk_is_one_line_and_no_file(source, server, home, capsys, monkeypatch):
    real_write, written = D.os.write, []

    def write(fd: int, data) -> int:  # the OS boundary: the disk fills after the first megabyte
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(D.os, "write", write)
    rc, _, err = _fetch(capsys, "--url", f"{server}/{source[1]}")
    _one_line_and_nothing_left(rc, err, home, "disk full", str(home))


def test_a_url_without_a_hash_prefix_and_url_without_hrnet_are_refused(home, capsys):
    rc, _, err = _fetch(capsys, "--url", "http://127.0.0.1:9/weights.pth")
    _one_line_and_nothing_left(rc, err, home, "--url http://127.0.0.1:9/weights.pth", "sha256 prefix")
    assert main(["keypoints", "--fetch-model", "blazepose", "--url", "http://x/y-12345678_1.pth"]) != 0
    assert "--url goes with --fetch-model hrnet" in capsys.readouterr().err
