"""Where the pose models' weight files live, and fetching the offline BlazePose model.

Files are looked up in this order: an explicit path (``--weights``); the kglfr home folder
(``$KGLFR_HOME``, default ``~/.cache/kglfr``); for BlazePose, an installed ``mediapipe`` package.
Nothing is downloaded implicitly: ``fetch_blazepose_model`` (``kglfr keypoints --fetch-model``) and
``fetch_hrnet_model`` (``--fetch-model hrnet``: mmpose's HRNet-W32 file, sha256-checked) are the steps
that use the network, once, at set-up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from kglfr.download import ChecksumError, DownloadError, download, sha256_prefix
from kglfr.errors import KglfrError
from kglfr.io import file_sha256, write_atomic

log = logging.getLogger(__name__)

# --- HRNet (official COCO checkpoints of deep-high-resolution-net.pytorch) -----------------------
HRNET_ZOO = (
    "the official HRNet model zoo (github.com/leoxiaobin/deep-high-resolution-net.pytorch, "
    "'pose_coco' folder of its pretrained models)"
)


# mmpose's HRNet-W32 COCO 256x192 (AP 0.746 in its model zoo): a stable address, no cloud drive. The
# "-c78dce93_" in the name is the start of the file's sha256, checked after the download.
HRNET_URL = "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w32_coco_256x192-c78dce93_20200708.pth"
HRNET_URL_ENV = "KGLFR_HRNET_URL"


def hrnet_weights_name(arch: str = "w32", train_size: str = "256x192") -> str:
    """File name of an official COCO checkpoint, e.g. ``pose_hrnet_w32_256x192.pth``."""
    return f"pose_hrnet_{arch}_{train_size}.pth"


# --- BlazePose full landmark model, taken from the mediapipe 0.10.21 wheel (Apache-2.0) ----------
BLAZEPOSE_FILE = "pose_landmark_full.tflite"
BLAZEPOSE_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
BLAZEPOSE_SHA256 = "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
BLAZEPOSE_SIZE = 6_440_512
MEDIAPIPE_VERSION = "0.10.21"
# The file is the same in every platform's wheel (checked: linux x86_64 cp311, macOS universal2 cp310,
# win_amd64 cp312); one wheel is pinned so the download works from any Python version and platform.
MEDIAPIPE_WHEEL_PLATFORM = ("manylinux_2_28_x86_64", "3.11")

BLAZEPOSE_MISSING = (
    "blazepose model not found; run `kglfr keypoints --fetch-model` (downloads the mediapipe "
    f"{MEDIAPIPE_VERSION} wheel from PyPI) or pass weights=FILE"
)


def kglfr_home() -> Path:
    """The folder for downloaded model files: ``$KGLFR_HOME`` or ``~/.cache/kglfr``."""
    env = os.environ.get("KGLFR_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kglfr"


def _explicit(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise KglfrError(f"{what} weights file not found: {p}; {hint}")
    return p


def hrnet_weights_path(weights: str | Path | None = None, arch: str = "w32", train_size: str = "256x192") -> Path:
    """The HRNet checkpoint to load: ``weights`` if given, else ``<kglfr home>/pose_hrnet_<arch>_<size>.pth``."""
    name = hrnet_weights_name(arch, train_size)
    hint = f"run `kglfr keypoints --fetch-model hrnet` (mmpose's W32), or download the official {name} from {HRNET_ZOO}"
    if weights is not None:
        return _explicit(weights, "hrnet", hint)
    p = kglfr_home() / name
    if p.is_file():
        return p
    raise KglfrError(f"hrnet weights not found: pass weights={name} or put it at {p}; {hint}")


def _installed_mediapipe_model() -> Path | None:
    try:
        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "modules" / "pose_landmark" / BLAZEPOSE_FILE
        if p.is_file():
            return p
    return None


def blazepose_model_path(weights: str | Path | None = None) -> Path:
    """The BlazePose landmark model: ``weights`` if given; else ``<kglfr home>/pose_landmark_full.tflite``;
    else the file inside an installed ``mediapipe`` package. Raises ``KglfrError`` saying how to fetch it."""
    if weights is not None:
        return _explicit(weights, "blazepose", BLAZEPOSE_MISSING.split("; ", 1)[1])
    p = kglfr_home() / BLAZEPOSE_FILE
    if p.is_file():
        return p
    p = _installed_mediapipe_model()
    if p is not None:
        return p
    raise KglfrError(BLAZEPOSE_MISSING)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_blazepose_model(wheel: str | Path, dest_dir: str | Path) -> Path:
    """Take the landmark model out of a mediapipe wheel, check its size and SHA-256, write it atomically."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(BLAZEPOSE_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise KglfrError(f"{wheel} is not a mediapipe {MEDIAPIPE_VERSION} wheel with {BLAZEPOSE_MEMBER}: {e}") from e
    if len(data) != BLAZEPOSE_SIZE or _sha256_bytes(data) != BLAZEPOSE_SHA256:
        raise KglfrError(
            f"{BLAZEPOSE_MEMBER} in {wheel.name} is not the expected file "
            f"(size {len(data)}, sha256 {_sha256_bytes(data)[:16]}; expected {BLAZEPOSE_SIZE}, {BLAZEPOSE_SHA256[:16]})"
        )
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / BLAZEPOSE_FILE
    return write_atomic(out, lambda f: f.write(data), binary=True)


def fetch_blazepose_model(dest_dir: str | Path | None = None, python: str | None = None) -> Path:
    """Download the mediapipe 0.10.21 wheel from the package index with ``pip download --no-deps`` (nothing
    is installed), extract ``pose_landmark_full.tflite`` into ``dest_dir`` (default: the kglfr home) and
    verify it. Returns the model's path; a file already there and intact is kept without downloading."""
    dest_dir = Path(dest_dir).expanduser() if dest_dir is not None else kglfr_home()
    out = dest_dir / BLAZEPOSE_FILE
    if out.is_file() and out.stat().st_size == BLAZEPOSE_SIZE and _sha256_bytes(out.read_bytes()) == BLAZEPOSE_SHA256:
        log.info("blazepose model already at %s", out)
        return out
    platform, pyver = MEDIAPIPE_WHEEL_PLATFORM
    tmp = Path(tempfile.mkdtemp(prefix="kglfr-mediapipe-"))
    try:
        cmd = [
            python or sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--platform", platform, "--python-version", pyver, "--implementation", "cp",
            f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(tmp), "--disable-pip-version-check", "--quiet",
        ]  # fmt: skip
        log.info("downloading the mediapipe %s wheel (about 35 MB): %s", MEDIAPIPE_VERSION, " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise KglfrError(f"could not run pip to download mediapipe=={MEDIAPIPE_VERSION}: {e}") from e
        wheels = sorted(tmp.glob("mediapipe-*.whl"))
        if proc.returncode != 0 or not wheels:
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            last = lines[-1] if lines else f"exit code {proc.returncode}"
            raise KglfrError(
                f"pip download mediapipe=={MEDIAPIPE_VERSION} failed ({last}); on an offline machine, copy "
                f"{BLAZEPOSE_FILE} (sha256 {BLAZEPOSE_SHA256[:16]}...) to {out} or pass weights=FILE"
            )
        path = extract_blazepose_model(wheels[0], dest_dir)
        log.info("blazepose model written to %s", path)
        return path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_hrnet_model(url: str | None = None, dest_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Download mmpose's HRNet-W32 COCO checkpoint (``url``, else ``$KGLFR_HRNET_URL``, else
    :data:`HRNET_URL`) into ``dest_dir`` (default: the kglfr home) as ``pose_hrnet_w32_256x192.pth``, the
    name the ``hrnet`` backend looks for. The file's sha256 must start with the 8 hex digits in the URL's
    file name (mmpose's naming). A file already there with that prefix is kept without downloading."""
    url = url or os.environ.get(HRNET_URL_ENV) or HRNET_URL
    prefix = sha256_prefix(url)
    if prefix is None:
        raise KglfrError(f"url={url} has no sha256 prefix in its file name (mmpose names files like "
                         f"NAME-c78dce93_DATE.pth); give the URL of an mmpose-named file")  # fmt: skip
    out = (Path(dest_dir).expanduser() if dest_dir is not None else kglfr_home()) / hrnet_weights_name("w32", "256x192")
    if out.is_file() and file_sha256(out).startswith(prefix):
        log.info("hrnet weights already at %s", out)
        return out
    log.info("downloading HRNet-W32 weights: %s -> %s", url, out)
    try:
        download(url, out, sha256=prefix, progress=progress)
    except ChecksumError as e:
        raise KglfrError(
            f"{url}: expected sha256 {e.expected}..., received {e.received[:16]}... (a damaged or wrong file; "
            f"nothing was written); try again, or another mirror in {HRNET_URL_ENV}"
        ) from None
    except DownloadError as e:
        raise KglfrError(
            f"cannot download the HRNet weights from {url} ({e.reason}); set {HRNET_URL_ENV} to a mirror, "
            f"or copy the file to {out}"
        ) from None
    return out
