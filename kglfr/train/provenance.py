"""What a run trained on: its store and keypoint cache, recorded in ``RUN/data.json`` when the run starts
and checked by ``--resume``, which refuses a run whose store or keypoint cache is no longer the one it
started on (a store prepared again from other data, ``data.store`` pointing elsewhere, a keypoint cache
rebuilt by another backend or with other settings)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kglfr.data.store import Store
from kglfr.io import write_json_atomic
from kglfr.keypoints.cache import KeypointCache, store_key
from kglfr.train.run_folder import TrainingError

log = logging.getLogger(__name__)

DATA = "data.json"


def data_identity(store: Store, cache: KeypointCache | None) -> dict:
    """The store (its path and key: source fingerprint, image list, size) and the keypoint cache (backend,
    identity, settings, checksum) a run reads."""
    kp = None
    if cache is not None:
        kp = {"backend": cache.backend, "identity": cache.identity, "heatmap_hw": list(cache.heatmap_size),
              "threshold": cache.threshold, "checksum": cache.meta.get("checksum"),
              "path": str(cache.path)}  # fmt: skip
    return {"store": str(store.path), "store_key": store_key(store), "dataset": store.dataset, "images": len(store),
            "image_hw": list(store.size), "keypoints": kp}  # fmt: skip


def _describe(ident: dict) -> str:
    kp = ident.get("keypoints")
    cache = "no keypoint cache" if not kp else f"keypoint cache {kp['backend']} ({kp['identity']})"
    return f"store {ident['store']} ({ident['dataset']}, {ident['images']} images), {cache}"


def changed(saved: dict, now: dict) -> str | None:
    """What differs between the data a run started on and the data it would resume on, or None."""
    if saved.get("store_key") != now["store_key"]:
        return (f"the store is not the one the run started on (it was {saved.get('store')}, "
                f"{saved.get('images')} images; data.store now reads {now['store']}, "
                f"{now['images']} images)")  # fmt: skip
    old, new = saved.get("keypoints"), now["keypoints"]
    keys = ("backend", "identity", "heatmap_hw", "threshold", "checksum")
    if (old is None) != (new is None) or (old and any(old.get(k) != new.get(k) for k in keys)):
        was = "none" if not old else f"{old.get('backend')} ({old.get('identity')}, checksum {old.get('checksum')})"
        is_ = "none" if not new else f"{new['backend']} ({new['identity']}, checksum {new['checksum']})"
        return f"the keypoint cache changed since the run started (was {was}, now {is_})"
    return None


def record_or_check(folder: Path, store: Store, cache: KeypointCache | None, resume: bool) -> None:
    """Log the data the run trains on; a new run records it, a resumed one is refused if it changed."""
    now = data_identity(store, cache)
    path = folder / DATA
    if resume and path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise TrainingError(f"--resume {folder}: {path} is damaged ({e}); the data the run started on is "
                                "unknown: start a new run") from None  # fmt: skip
        why = changed(saved, now)
        if why:
            raise TrainingError(f"--resume {folder}: {why}; resume on the data it started on, or start a new "
                                "run")  # fmt: skip
    elif resume:
        log.warning("run %s records no data.json (made by an older kglfr): its data cannot be checked", folder)
    log.info("training data: %s", _describe(now))
    write_json_atomic(path, now, indent=2)
