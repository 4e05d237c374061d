"""Run by ``torchrun --nproc_per_node 2`` from test_engine.py: both ranks erase the same batch of ones and rank 0
saves every rank's erased-pixel mask to OUT. Usage: ddp_erase.py STORE OUT KEY=VALUE..."""

from __future__ import annotations

import gc
import sys

import torch

from kglfr.train import config as C
from kglfr.train.runtime import end_distributed
from kglfr.train.trainer import Trainer


def main(store: str, out: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    cfg = C.load_config("sysu/kglfr", [f"data.store={store}", *overrides, "train.device=cpu"])
    trainer = Trainer(cfg)
    trainer.begin_epoch(0)
    local = list(range(len(trainer.data.labels)))[: trainer.data.batch_size]
    batch = trainer.data.make_batch(local, 0, 0)  # the same images on both ranks
    batch.images = torch.ones_like(batch.images)
    _, images, _ = trainer.prepare(batch)
    erased = (images == 0).all(1)  # erased pixels are filled with 0
    gathered = [torch.zeros_like(erased) for _ in range(2)]
    torch.distributed.all_gather(gathered, erased)
    if trainer.rt.rank == 0:
        torch.save(gathered, out)
    del trainer  # its DDP model holds the process group: free it before the group shuts down
    gc.collect()
    end_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
