"""Cross-modality identity sampler: batches of P identities x (K visible + K infrared) images.

Deterministic for (seed, epoch). Under DDP every step draws P x world_size distinct identities and
rank r takes the r-th block of P, so ranks never share an identity within a step and together see
the same global batch a single process would see with P x world_size identities.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kglfr.data.records import Modality


class IdentitySampler:
    """Yield batches of indices into the arrays ``pids`` / ``modalities``.

    Each batch lists, for each of ``num_ids`` identities, ``num_per_modality`` visible indices then
    ``num_per_modality`` infrared ones. Identities are visited in a fresh random order each epoch;
    an identity with fewer than K images of a modality is sampled with replacement. Identities with
    images in one modality only are left out (the dataset reader already warned about them).
    An epoch has ``iters_per_epoch`` steps; by default (visible images) / (P x K x world_size), the
    AGW convention.
    """

    def __init__(
        self,
        pids: np.ndarray,
        modalities: np.ndarray,
        num_ids: int = 8,
        num_per_modality: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        iters_per_epoch: int | None = None,
    ) -> None:
        pids = np.asarray(pids)
        modalities = np.asarray(modalities)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.pool: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for pid in np.unique(pids):
            vis = np.flatnonzero((pids == pid) & (modalities == int(Modality.VISIBLE)))
            ir = np.flatnonzero((pids == pid) & (modalities == int(Modality.INFRARED)))
            if len(vis) and len(ir):
                self.pool[int(pid)] = (vis, ir)
        self.ids = np.array(sorted(self.pool), dtype=np.int64)
        per_step = num_ids * world_size
        if len(self.ids) < per_step:
            raise ValueError(
                f"a step needs {per_step} identities with both modalities (num_ids {num_ids} x {world_size} "
                f"ranks), but only {len(self.ids)} exist; lower num_ids to at most {len(self.ids) // world_size}"
            )
        self.num_ids, self.k = num_ids, num_per_modality
        self.seed, self.rank, self.world_size = seed, rank, world_size
        n_visible = int(sum(len(v) for v, _ in self.pool.values()))
        self.iters_per_epoch = iters_per_epoch or max(1, n_visible // (num_ids * num_per_modality * world_size))
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return self.num_ids * 2 * self.k

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iters_per_epoch

    def _draw(self, rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray:
        replace = len(candidates) < self.k
        return rng.choice(candidates, size=self.k, replace=replace)

    def step_identities(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Identities of each global step: distinct within a step, every identity once per pass."""
        per_step = self.num_ids * self.world_size
        queue = rng.permutation(self.ids)
        while True:
            if len(queue) < per_step:
                # Top up with a new pass, skipping identities still waiting in the queue.
                fresh = rng.permutation(self.ids)
                queue = np.concatenate([queue, fresh[~np.isin(fresh, queue)]])
            yield queue[:per_step]
            queue = queue[per_step:]

    def __iter__(self) -> Iterator[list[int]]:
        # All ranks draw the same global identities; only the index draws use the rank's block.
        rng = np.random.default_rng([self.seed, self.epoch])
        steps = self.step_identities(rng)
        for _ in range(self.iters_per_epoch):
            ids = next(steps)
            batch: list[int] = []
            for pid in ids:  # draw for every rank so the stream does not depend on the rank
                vis, ir = self.pool[int(pid)]
                batch.extend(self._draw(rng, vis).tolist())
                batch.extend(self._draw(rng, ir).tolist())
            block = 2 * self.k * self.num_ids
            yield batch[self.rank * block : (self.rank + 1) * block]
