"""Training batches: identity sampler -> store pixels + keypoint cache -> joint transform, prefetched.

Every step's random draws (crop, flip, erasing, the KMLFR keypoint) come from generators seeded by
(seed, epoch, step), so a step is the same whether the run was resumed or not, and a run resumed
mid-epoch skips the steps it already took without reading their data.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from kglfr.data.records import TRAIN, Modality
from kglfr.data.sampler import IdentitySampler
from kglfr.data.store import Store
from kglfr.data.transforms import TrainTransform, store_batch_to_tensor
from kglfr.errors import KglfrError
from kglfr.keypoints.cache import KeypointCache

STREAM_TRANSFORM = 11
STREAM_ERASING = 12
STREAM_KEYPOINT = 13

log = logging.getLogger(__name__)


def step_generator(
    seed: int, epoch: int, step: int, stream: int, device: str | torch.device = "cpu", rank: int = 0
) -> torch.Generator:
    """A generator that depends only on (seed, epoch, step, stream) and, under DDP, the process's rank:
    rank 0 (and a single process) draws from the streams of (seed, epoch, step, stream), every other rank
    from a stream of its own, so that the ranks do not crop, flip and erase alike."""
    entropy = [seed, epoch, step, stream] + ([rank] if rank else [])
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1))
    return g


@dataclass
class Batch:
    images: torch.Tensor  # B x 3 x H x W, normalised float
    labels: torch.Tensor  # B, 0..num_classes-1
    pids: torch.Tensor  # B, the dataset's identities
    modalities: torch.Tensor  # B, Modality values
    heatmaps: torch.Tensor | None  # B x 13 x h x w at the model's feature-map size
    parts: torch.Tensor | None  # B x 11 x 2, in transformed-image pixels
    part_valid: torch.Tensor | None  # B x 11 bool
    step: int

    def pin_memory(self) -> Batch:
        """The batch in page-locked host memory, so that ``to(cuda)`` copies asynchronously."""

        def pin(t):
            return None if t is None else t.pin_memory()

        return Batch(pin(self.images), pin(self.labels), pin(self.pids), pin(self.modalities), pin(self.heatmaps),
                     pin(self.parts), pin(self.part_valid), self.step)  # fmt: skip

    def to(self, device: torch.device) -> Batch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.images), move(self.labels), move(self.pids), move(self.modalities),
                     move(self.heatmaps), move(self.parts), move(self.part_valid), self.step)  # fmt: skip


class TrainData:
    """The training split of a store (and its keypoint cache), as batches of P x (K vis + K ir).

    ``cache`` may be None when neither KEGFR nor KMLFR is used. ``heatmap_size``: the model's layer4
    size, at which the transform samples the KMLFR heatmaps.
    """

    def __init__(
        self,
        store: Store,
        cache: KeypointCache | None,
        *,
        trial: int | None = None,
        size: tuple[int, int] = (288, 144),
        pad: int = 10,
        flip_prob: float = 0.5,
        heatmap_size: tuple[int, int] | None = None,
        ids_per_batch: int = 8,
        per_modality: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        iters_per_epoch: int | None = None,
    ) -> None:
        self.store, self.cache, self.seed, self.rank = store, cache, seed, rank
        self.indices = store.indices(TRAIN, trial)
        if not len(self.indices):
            raise KglfrError(f"store {store.path} has no training images (trial {trial})")
        pids = store.pids[self.indices]
        self.label_pids = np.unique(pids)  # label i <-> identity label_pids[i]
        self.labels = np.searchsorted(self.label_pids, pids)
        self.modalities = store.modalities[self.indices]
        try:
            self.sampler = IdentitySampler(pids, self.modalities, ids_per_batch, per_modality, seed, rank,
                                           world_size, iters_per_epoch)  # fmt: skip
        except ValueError as e:
            raise KglfrError(f"store {store.path}: {e}") from None
        self.transform = TrainTransform(size, pad=pad, flip_prob=flip_prob, heatmap_size=heatmap_size)
        if tuple(int(v) for v in size) != tuple(store.size):
            log.warning("store %s holds %d x %d images and the config trains at %d x %d (data.height, data.width): "
                        "every batch is resized; prepare the store at that size to train on it as is",
                        store.path, *store.size, *size)  # fmt: skip

    @property
    def num_classes(self) -> int:
        return len(self.label_pids)

    def __len__(self) -> int:
        return len(self.sampler)

    def make_batch(self, local: list[int], epoch: int, step: int) -> Batch:
        """Read and transform one batch (``local``: indices into the training split)."""
        rows = self.indices[np.asarray(local)]
        images = store_batch_to_tensor(self.store.read_batch(rows))
        gen = step_generator(self.seed, epoch, step, STREAM_TRANSFORM, rank=self.rank)
        kp = None
        if self.cache is not None:
            kp = self.cache.read_batch(rows)
        out = self.transform(
            images,
            heatmaps=None if kp is None else torch.from_numpy(kp["heatmaps"]),
            parts=None if kp is None else torch.from_numpy(kp["parts"]),
            part_valid=None if kp is None else torch.from_numpy(kp["part_valid"]),
            generator=gen,
        )
        return Batch(
            images=out["images"],
            labels=torch.from_numpy(self.labels[local]),
            pids=torch.from_numpy(self.store.pids[rows]),
            modalities=torch.from_numpy(self.modalities[local]),
            heatmaps=out["heatmaps"],
            parts=out["parts"],
            part_valid=out["part_valid"],
            step=step,
        )

    def epoch(self, epoch: int, start_step: int = 0, prefetch: int = 2, pin: bool = False,
              workers: int = 1) -> Iterator[Batch]:  # fmt: skip
        """The batches of ``epoch`` from ``start_step`` on, read one or two ahead in a thread while the
        current step runs (``pin``: in page-locked memory, for non-blocking copies to a GPU; ``workers`` > 1:
        that many threads make batches, handed over in step order: the same batches as one thread)."""
        self.sampler.set_epoch(epoch)
        plan = [(s, b) for s, b in enumerate(self.sampler) if s >= start_step]
        if prefetch <= 0:
            for s, b in plan:
                yield self.make_batch(b, epoch, s)
            return
        if workers > 1:
            yield from self._parallel(plan, epoch, workers, prefetch, pin)
            return
        q: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for s, b in plan:
                    if stop.is_set():
                        return
                    batch = self.make_batch(b, epoch, s)
                    q.put(batch.pin_memory() if pin else batch)
                q.put(None)
            except BaseException as e:  # handed to the consumer
                q.put(e)

        t = threading.Thread(target=work, daemon=True, name="kglfr-batches")
        t.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while t.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.05)

    def _parallel(self, plan: list, epoch: int, workers: int, ahead: int, pin: bool) -> Iterator[Batch]:
        """``workers`` threads make the batches of ``plan`` (each depends only on its step's generators), at
        most ``workers + ahead`` in flight, yielded in step order."""

        def make(s: int, b: list[int]) -> Batch:
            batch = self.make_batch(b, epoch, s)
            return batch.pin_memory() if pin else batch

        todo = iter(plan)
        pending: deque = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="kglfr-batches") as pool:
            try:
                for s, b in itertools.islice(todo, workers + ahead):
                    pending.append(pool.submit(make, s, b))
                while pending:
                    batch = pending.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append(pool.submit(make, *nxt))
                    yield batch
            finally:
                for f in pending:
                    f.cancel()


def modality_counts(store: Store, indices: np.ndarray) -> dict[str, int]:
    return {m.short: int((store.modalities[indices] == int(m)).sum()) for m in Modality}
