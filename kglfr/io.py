"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kglfr.errors import DiskFullError, KglfrError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse to start writing ``needed`` bytes into ``folder`` when its filesystem has less free space."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskFullError(
            f"not enough disk space for {what} in {folder}: it needs {human_bytes(needed)}, "
            f"{human_bytes(free)} are free; free some space or choose another folder"
        )


def allocate(path: str | os.PathLike, nbytes: int, what: str) -> Path:
    """Create ``path`` holding ``nbytes`` zero bytes whose disk blocks are reserved up front, so that
    writing it later through a memory map cannot die of a full disk (SIGBUS). A full disk raises
    ``DiskFullError`` saying how much is needed; the file is removed then."""
    path = Path(path)
    check_free_space(path.parent, nbytes, what)
    with open(path, "wb") as f:
        try:
            if nbytes:
                os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                f.close()
                path.unlink(missing_ok=True)
                free = shutil.disk_usage(path.parent).free
                raise DiskFullError(
                    f"not enough disk space for {what} in {path.parent}: it needs {human_bytes(nbytes)}, "
                    f"{human_bytes(free)} are free; free some space or choose another folder"
                ) from None
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            f.truncate(nbytes)  # the filesystem cannot reserve blocks: the free-space check above must do
    return path


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside ``path``; on success it is flushed, fsynced and renamed onto
    ``path``; on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes the file 0600; honour the umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file and move it onto ``path`` when it succeeds."""
    with atomic_open(path, "wb" if binary else "w") as f:
        write(f)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: object, indent: int | None = None) -> Path:
    return write_atomic(path, lambda f: (json.dump(obj, f, indent=indent), f.write("\n")))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_writable(path: str | os.PathLike, option: str = "path") -> Path:
    """Check, before any work, that a file can be written at ``path`` (its folder may not exist yet:
    the nearest existing one must be writable); raises ``KglfrError`` naming ``path``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise KglfrError(f"{option} {path} is a folder; give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise KglfrError(f"cannot write {option} {path}: {folder} is a file, not a folder; choose another {option}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise KglfrError(
            f"cannot write {option} {path}: {folder} is not writable ({e.strerror}); choose another {option}"
        ) from None
    return path


LOCK_FILE = ".kglfr.lock"


class LockedError(KglfrError):
    """Another process holds the lock of a folder this one was about to change."""


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str):
    """Hold an exclusive, non-blocking lock on ``folder`` (a ``.kglfr.lock`` file in it, created when
    absent) for as long as the block runs. A second process gets :class:`LockedError` naming ``what``
    and the holder's pid at once, instead of both writing into the folder. The lock dies with its
    process (``flock``), so a killed run never leaves the folder locked."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(
                f"{what} {folder} is in use by another kglfr process (pid {holder}); wait for it to finish "
                "or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


class TorchLoadError(Exception):
    """``torch.load`` refused or failed on a file; ``reason`` in our words (never torch's advice to load it
    unsafely, never the unpickler's opcodes), ``unsafe`` when the file refers to code."""

    def __init__(self, reason: str, unsafe: bool) -> None:
        super().__init__(reason)
        self.reason, self.unsafe = reason, unsafe


def torch_load_safe(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, nothing in the file runs.
    Raises :class:`TorchLoadError` with a reason fit for a user (torch's own message suggests loading the
    file with ``weights_only=False``, which would run whatever code it holds: never repeat that)."""
    import pickle
    import re
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: not a user's concern
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)|global[: ]+'?([\w.]+)", str(e))
        if found:
            name = found.group(1) or found.group(2)
            raise TorchLoadError(f"it refers to code ({name}); refused without running it", True) from None
        raise TorchLoadError("it holds objects other than tensors and plain data, or is damaged; refused without "
                             "running anything", True) from None  # fmt: skip
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, AttributeError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0]
        first = "" if "weights_only" in first else first
        why = f"{type(e).__name__}: {first}" if len(first) > 12 else f"{type(e).__name__} {first}".strip()
        raise TorchLoadError(f"truncated or damaged: {why[:160]}", False) from None


def not_a_file(path: str | os.PathLike, what: str) -> str:
    """Why ``path`` cannot be read as the file ``what`` names: a folder, something other than a file, or
    missing (for the one-line errors of every command that takes a file)."""
    path = Path(path)
    if path.is_dir():
        return f"{what} {path} is a folder; give the file itself"
    if path.exists():
        return f"{what} {path} is not a regular file"
    return f"{what} {path} does not exist"


class NotUtf8(ValueError):
    """Bytes that are not UTF-8 text: ``line`` (1-based) and ``byte`` of the first bad byte."""

    def __init__(self, line: int, byte: int) -> None:
        super().__init__(f"byte 0x{byte:02x} on line {line} is not UTF-8")
        self.line, self.byte = line, byte


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8 text, a leading byte-order mark dropped; :class:`NotUtf8` naming the first bad byte."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotUtf8(data[: e.start].count(b"\n") + 1, data[e.start]) from None
