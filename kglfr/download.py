"""Downloading a model file once, checked and atomic: the one helper behind every ``--fetch-model``
and ``model.pretrained=imagenet``.

The bytes go to a temporary file beside the destination and are hashed as they arrive; only a
complete file whose SHA-256 starts with the expected prefix is renamed onto the destination. A dropped
connection is retried, resuming with an HTTP ``Range`` request when the server honours it (else from
the start); whatever fails, the temporary file is removed, so no partial file is ever left.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from kglfr.errors import DiskFullError, KglfrError
from kglfr.io import human_bytes

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# torchvision's resnet50-0676ba61.pth and mmpose's hrnet_w32_coco_256x192-c78dce93_20200708.pth
_PREFIX = re.compile(r"-([0-9a-f]{8})(?=[_.])")


class DownloadError(KglfrError):
    """A download that failed (network, server, truncated): ``reason`` says why, in a few words."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot download {url} ({reason})")
        self.url, self.reason = url, reason


class ChecksumError(KglfrError):
    """A downloaded file whose SHA-256 does not start with the prefix its name promises."""

    def __init__(self, url: str, expected: str, received: str) -> None:
        super().__init__(f"{url} has sha256 {received[:8]}..., not the {expected}... its name promises")
        self.url, self.expected, self.received = url, expected, received


def sha256_prefix(url_or_name: str) -> str | None:
    """The 8 hex digits of SHA-256 a file name carries after a ``-`` (torchvision's and mmpose's naming),
    read from the last path component of a URL or path; None when the name has none."""
    name = url_or_name.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    found = _PREFIX.findall(name)
    return found[-1] if found else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Partial:
    """The temporary file being written and the hash of what it holds."""

    def __init__(self, fd: int) -> None:
        self.fd, self.size, self.hash = fd, 0, hashlib.sha256()

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.size, self.hash = 0, hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        _write_all(self.fd, chunk)
        self.hash.update(chunk)
        self.size += len(chunk)


def _attempt(url: str, part: _Partial, timeout: float, bar: tqdm) -> None:
    """One request: append the rest of ``url`` to ``part`` (a Range request when it holds bytes already)."""
    headers = {"Range": f"bytes={part.size}-"} if part.size else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        if part.size and resp.status != 206:  # the server ignored the Range: start again
            part.restart()
            bar.reset()
        length = resp.headers.get("Content-Length")
        total = part.size + int(length) if length else None
        if bar.total is None and total:
            bar.total = total
            bar.refresh()
        while chunk := resp.read(CHUNK):
            part.add(chunk)
            bar.update(len(chunk))
    if total is not None and part.size < total:
        raise ConnectionError(f"truncated: {part.size} of {total} bytes arrived")


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", None) or str(e) or type(e).__name__
    return str(reason)


def _fetch(url: str, part: _Partial, timeout: float, retries: int, bar: tqdm) -> None:
    for attempt in range(retries + 1):
        try:
            return _attempt(url, part, timeout, bar)
        except urllib.error.HTTPError as e:  # 404, 403 ...: retrying will not help
            raise DownloadError(url, _reason(e)) from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            last = _reason(e)
        except (http.client.HTTPException, ValueError) as e:
            last = _reason(e)
        if attempt < retries:
            log.warning("download of %s interrupted (%s); retrying from byte %d", url, last, part.size)
    raise DownloadError(url, last)


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    retries: int = 2,
) -> str:
    """Download ``url`` to ``dest`` atomically and return the file's hex SHA-256.

    ``sha256`` is the expected digest or a prefix of it (e.g. the 8 digits of :func:`sha256_prefix`).
    ``timeout`` bounds each wait for the server; a dropped or stalled connection is retried ``retries``
    times, resuming when the server allows.

    Raises:
        DownloadError: offline, an HTTP error, or a connection that kept failing (names the URL).
        ChecksumError: the file arrived whole but is not the one expected (names both digests).
        DiskFullError: the disk filled up (names the folder).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        part = _Partial(fd)
        with tqdm(total=None, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
            _fetch(url, part, timeout, retries, bar)
        digest = part.hash.hexdigest()
        if sha256 and not digest.startswith(sha256.lower()):
            raise ChecksumError(url, sha256.lower(), digest)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, dest)
        return digest
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = human_bytes(shutil.disk_usage(dest.parent).free)
            raise DiskFullError(
                f"disk full while downloading {url} into {dest.parent} ({free} free); free some space or "
                "choose another folder"
            ) from None
        raise DownloadError(url, _reason(e)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
