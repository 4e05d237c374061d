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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from kglfr.data.records import TRAIN, Modality
from kglfr.data.sampler import IdentitySampler
from kglfr.data.store import Store
from kglfr.data.transforms import TrainTransform, store_batch_to_tensor
from kglfr.data.views import ALL_IMAGES, View
from kglfr.errors import KglfrError
from kglfr.keypoints.cache import KeypointCache

STREAM_TRANSFORM = 11
STREAM_ERASING = 12
STREAM_KEYPOINT = 13
STREAM_VIEW = 14  # the augmentation of view i draws from stream STREAM_VIEW * 100 + i


def view_stream(stream: int, view: int) -> int:
    """The random stream of ``view`` (view 0 keeps ``stream`` itself, so a one-view batch draws as before)."""
    return stream if view == 0 else stream * 100 + view


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
    """A training batch: its views one after the other (``view``: each row's view index). ``to`` and
    ``pin_memory`` move every tensor it holds."""

    images: torch.Tensor  # B x 3 x H x W, normalised float
    labels: torch.Tensor  # B, 0..num_classes-1
    pids: torch.Tensor  # B, the dataset's identities
    modalities: torch.Tensor  # B, Modality values
    heatmaps: torch.Tensor | None  # B x 13 x h x w at the model's feature-map size
    parts: torch.Tensor | None  # B x 11 x 2, in transformed-image pixels
    part_valid: torch.Tensor | None  # B x 11 bool
    step: int
    view: torch.Tensor | None = None  # B, index into the method's views

    def _map(self, fn) -> Batch:
        moved = {f.name: fn(v) for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def pin_memory(self) -> Batch:
        """The batch in page-locked host memory, so that ``to(cuda)`` copies asynchronously."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))


class TrainData:
    """The training split of a store (and its keypoint cache), as batches of the ``views`` of P x (K vis + K ir)
    drawn images (default: one view of all of them).

    ``cache`` may be None when no keypoints are used. ``heatmap_size``: the model's layer4 size, at which the
    transform samples the KMLFR heatmaps.
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
        views: Sequence[View] = (ALL_IMAGES,),
    ) -> None:
        self.store, self.cache, self.seed, self.rank = store, cache, seed, rank
        self.views = tuple(views)
        if not self.views:
            raise KglfrError("a training batch needs at least one view")
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
            message = str(e).replace("num_ids", "data.ids_per_batch")
            raise KglfrError(
                f"store {store.path}, training split{f' of trial {trial}' if trial else ''}: {message}"
            ) from None
        self.transform = TrainTransform(size, pad=pad, flip_prob=flip_prob, heatmap_size=heatmap_size)

    @property
    def batch_size(self) -> int:
        """Images in one batch of this process: the views' images (the one place that counts them)."""
        drawn = self.sampler.num_ids * self.sampler.k
        return sum(2 * drawn if v.modality is None else drawn for v in self.views)

    @property
    def num_classes(self) -> int:
        return len(self.label_pids)

    def __len__(self) -> int:
        return len(self.sampler)

    def make_batch(self, local: list[int], epoch: int, step: int) -> Batch:
        """Read one batch (``local``: indices into the training split) and make its views."""
        local_a = np.asarray(local)
        rows = self.indices[local_a]
        images = store_batch_to_tensor(self.store.read_batch(rows))
        kp = None if self.cache is None else {k: torch.from_numpy(v) for k, v in self.cache.read_batch(rows).items()}
        labels, pids = torch.from_numpy(self.labels[local_a]), torch.from_numpy(self.store.pids[rows])
        modalities = torch.from_numpy(self.modalities[local_a])
        views = []
        for i, view in enumerate(self.views):
            sel = view.rows(self.modalities[local_a])
            views.append(self._make_view(i, view, sel, images, kp, (labels, pids, modalities), epoch, step))
        if len(views) == 1:
            return replace(views[0], step=step)
        return Batch(*(None if vals[0] is None else torch.cat(vals) for vals in _columns(views, 7)), step=step,
                     view=torch.cat([v.view for v in views]))  # fmt: skip

    def _make_view(self, i: int, view: View, sel: np.ndarray | None, images: torch.Tensor, kp: dict | None,
                   meta: tuple, epoch: int, step: int) -> Batch:  # fmt: skip
        """View ``i``: the drawn images at ``sel`` (None: all), transformed with the view's own draws."""

        def pick(t):
            return t if t is None or sel is None else t[torch.from_numpy(sel)]

        gen = step_generator(self.seed, epoch, step, view_stream(STREAM_TRANSFORM, i), rank=self.rank)
        out = self.transform(pick(images), heatmaps=pick(kp and kp["heatmaps"]), parts=pick(kp and kp["parts"]),
                             part_valid=pick(kp and kp["part_valid"]), generator=gen)  # fmt: skip
        x = out["images"]
        if view.augment is not None:
            x = view.augment(x, step_generator(self.seed, epoch, step, view_stream(STREAM_VIEW, i), rank=self.rank))
        labels, pids, modalities = (pick(t) for t in meta)
        return Batch(x, labels, pids, modalities, out["heatmaps"], out["parts"], out["part_valid"], step,
                     view=torch.full((len(labels),), i, dtype=torch.int64))  # fmt: skip

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


def _columns(batches: list[Batch], n: int) -> list[list]:
    """The first ``n`` fields of each batch, field by field."""
    names = [f.name for f in fields(Batch)][:n]
    return [[getattr(b, name) for b in batches] for name in names]


def modality_counts(store: Store, indices: np.ndarray) -> dict[str, int]:
    return {m.short: int((store.modalities[indices] == int(m)).sum()) for m in Modality}


def size_note(store_hw: tuple[int, int], train_hw: tuple[int, int]) -> tuple[int, str] | None:
    """(log level, message) when a store's images are not at the training size ``data.height`` x
    ``data.width``: a warning when training would upsample them, a note when it shrinks them; None when equal."""
    if tuple(store_hw) == tuple(train_hw):
        return None
    (sh, sw), (th, tw) = store_hw, train_hw
    up = th > sh or tw > sw
    how = "upsampled" if up else "resized"
    message = (f"the store's images are {sh}x{sw}; training at {th}x{tw} (data.height x data.width) gets them "
               f"{how}, and the model is exported at {th}x{tw}. To train at the store's size add "
               f"data.height={sh} data.width={sw}; to keep the detail, prepare the store at {th}x{tw}")  # fmt: skip
    return (logging.WARNING if up else logging.INFO), message
