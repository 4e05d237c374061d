"""Feature files: one ``.npz`` per model and test set, readable by any codebase.

Keys (N = number of test images, every image a protocol may use as query or gallery):

- ``feats``: N x D float (float16/32/64; cosine ranking L2-normalises it)
- ``pids``: N integers, the dataset's own identity numbers
- ``cams``: N integers, the dataset's camera numbers (SYSU 1-6; RegDB 1 visible, 2 thermal;
  LLCM 1-9 in both modalities)
- ``paths``: N strings, the image path relative to the dataset root (``cam3/0001/0005.jpg``); the
  per-trial gallery draw sorts each (identity, camera)'s images by it, so it must be unique
- ``modalities`` (optional): N integers, 0 visible, 1 infrared (:class:`kglfr.data.records.Modality`);
  needed for LLCM when the paths do not start with ``vis/`` or ``nir/``
- ``amp`` (optional, written by ``kglfr extract``): a 0-d string, the precision the features were computed
  in (``off`` = float32, ``bfloat16``, ``float16``, ``int8``); readers ignore it

Files are read with ``allow_pickle=False``: ``paths`` must be a string array, not an object array.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kglfr.errors import KglfrError
from kglfr.io import file_sha256, not_a_file, write_atomic

REQUIRED_KEYS = ("feats", "pids", "cams", "paths")
OPTIONAL_KEYS = ("modalities",)


class FeatureFileError(KglfrError):
    """A features file that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class FeatureSet:
    """Validated features of every test image, with identities, cameras and paths."""

    feats: np.ndarray
    pids: np.ndarray  # int64
    cams: np.ndarray  # int64
    paths: np.ndarray  # str
    modalities: np.ndarray | None = None  # int8, 0 visible / 1 infrared
    source: str = "features"
    sha256: str | None = None  # of the file it was read from

    def __len__(self) -> int:
        return len(self.pids)


def _integers(name: str, a: np.ndarray, source: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise FeatureFileError(f"{source}: '{name}' must be one-dimensional, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    raise FeatureFileError(f"{source}: '{name}' must hold integers, got {a.dtype}")


def check_features(feats, pids, cams, paths, modalities=None, source: str = "features") -> FeatureSet:
    """Validate arrays into a :class:`FeatureSet`, with one clear message for what is wrong."""
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise FeatureFileError(f"{source}: 'feats' must be N x D, got shape {feats.shape}")
    if not np.issubdtype(feats.dtype, np.floating):
        raise FeatureFileError(f"{source}: 'feats' must be floating point, got {feats.dtype}")
    if feats.dtype == np.float16:
        feats = feats.astype(np.float32)
    n = len(feats)
    pids = _integers("pids", pids, source)
    cams = _integers("cams", cams, source)
    paths = np.asarray(paths)
    if paths.dtype.kind not in "US":
        raise FeatureFileError(f"{source}: 'paths' must be strings, got {paths.dtype}")
    if paths.ndim != 1:
        raise FeatureFileError(f"{source}: 'paths' must be one-dimensional, got shape {paths.shape}")
    paths = paths.astype(str)
    arrays = {"pids": pids, "cams": cams, "paths": paths}
    if modalities is not None:
        modalities = _integers("modalities", modalities, source)
        if len(modalities) and not np.isin(modalities, (0, 1)).all():
            raise FeatureFileError(f"{source}: 'modalities' must be 0 (visible) or 1 (infrared)")
        arrays["modalities"] = modalities
        modalities = modalities.astype(np.int8)
    bad = [f"'{k}' has {len(v)}" for k, v in arrays.items() if len(v) != n]
    if bad:
        raise FeatureFileError(f"{source}: lengths differ: 'feats' has {n} rows but {', '.join(bad)}")
    if n == 0:
        raise FeatureFileError(f"{source}: no images")
    if not np.isfinite(feats).all():
        rows = np.flatnonzero(~np.isfinite(feats).all(1))
        raise FeatureFileError(
            f"{source}: 'feats' has NaN or infinite values in {len(rows)} row(s), e.g. {paths[rows[0]]}"
        )
    uniq, counts = np.unique(paths, return_counts=True)
    if len(uniq) != n:
        raise FeatureFileError(
            f"{source}: 'paths' must be unique; {uniq[counts > 1][0]!r} appears {counts[counts > 1][0]} times"
        )
    return FeatureSet(feats, pids, cams, paths, modalities, source)


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Read and validate a features ``.npz`` (see the module docstring for its keys)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FeatureFileError(not_a_file(path, "features file"))
    if not zipfile.is_zipfile(path):
        raise FeatureFileError(f"{source} is not a readable .npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise FeatureFileError(
                    f"{source} lacks key(s) {', '.join(missing)}; a features file holds "
                    f"{', '.join(REQUIRED_KEYS)} (and optionally {', '.join(OPTIONAL_KEYS)}); "
                    f"found {', '.join(sorted(keys)) or 'no arrays'}"
                )
            arrays = {k: npz[k] for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in keys}
    except FeatureFileError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e):
            raise FeatureFileError(
                f"{source} stores an array as Python objects; save 'paths' as a string array "
                "(np.asarray(paths, dtype=str)), e.g. with kglfr.eval.save_features"
            ) from None
        raise FeatureFileError(f"{source} is not a readable .npz file: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise FeatureFileError(f"{source} is not a readable .npz file: {e}") from None
    fs = check_features(
        arrays["feats"], arrays["pids"], arrays["cams"], arrays["paths"], arrays.get("modalities"), source
    )
    return replace(fs, sha256=file_sha256(path))


def save_features(path: str | os.PathLike, feats, pids, cams, paths, modalities=None, amp: str | None = None) -> Path:
    """Write a features file that ``kglfr evaluate --features`` reads (validated first; written
    atomically). ``feats`` keeps its float dtype; ``paths`` is stored as a string array; ``amp``, the
    precision the features were computed in (``off``, ``bfloat16``, ...), is kept as the array ``amp``."""
    fs = check_features(feats, pids, cams, paths, modalities, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"feats": fs.feats, "pids": fs.pids, "cams": fs.cams, "paths": fs.paths}
    if fs.modalities is not None:
        arrays["modalities"] = fs.modalities
    if amp is not None:
        arrays["amp"] = np.asarray(amp)
    return write_atomic(path, lambda f: np.savez(f, **arrays), binary=True)
