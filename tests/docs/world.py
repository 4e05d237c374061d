"""The tiny world the docs' commands run in: what their example paths name, made once a session.

``home/data/SYSU-MM01`` and ``home/data/RegDB`` (the docs' ``~/data/...``) are tiny synthetic datasets;
``stores/sysu`` and ``stores/regdb`` their stores with oracle keypoints; ``runs/sysu-kglfr`` a model
trained for two steps; ``feats.npz`` (SYSU), ``t1.npz``, ``t2.npz``
(RegDB trials 1, 2), ``llcm_test.npz`` features files; ``stores/llcm`` a tiny LLCM store; ``probes/``, ``gallery/`` and
friends image folders in the custom layout; ``pose_hrnet_w32_256x192.pth`` random HRNet weights.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from layouts import TINY_TRAIN, make_llcm

from kglfr.cli import main

# Appended to every command that trains: any preset trains two steps at 64x32 in seconds.
TRAIN_OVERRIDES = (*TINY_TRAIN, "train.epochs=1", "train.iters_per_epoch=2", "optim.lr=0.0001", "train.threads=2")
# Large image folders a block may write into (a search cache) are copied; stores and runs are linked.
LINKED = ("stores", "runs", "home")


@contextmanager
def cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def kglfr(*argv: str) -> None:
    rc = main([str(a) for a in argv])
    if rc:
        raise RuntimeError(f"kglfr {' '.join(map(str, argv))}: exit {rc}")


def build_world(root: Path) -> Path:
    """Make the world under ``root`` (about half a minute on 2 cores)."""
    root.mkdir(parents=True, exist_ok=True)
    with cwd(root):
        kglfr("synth", "--layout", "sysu", "--out", "home/data/SYSU-MM01", "--ids", 12, "--images-per-camera", 1,
              "--height", 128, "--width", 64)  # fmt: skip
        kglfr("synth", "--layout", "regdb", "--out", "home/data/RegDB", "--ids", 8, "--height", 64, "--width", 32)
        for name, dataset, data in (("sysu", "sysu", "SYSU-MM01"), ("regdb", "regdb", "RegDB")):
            kglfr("prepare", "--dataset", dataset, "--root", f"home/data/{data}", "--out", f"stores/{name}",
                  "--height", 64, "--width", 32)  # fmt: skip
            kglfr("keypoints", "--store", f"stores/{name}", "--backend", "oracle")
        kglfr("train", "--config", "sysu/kglfr", "--out", "runs/sysu-kglfr", "data.store=stores/sysu",
              *TRAIN_OVERRIDES, "eval.report_page=true")  # fmt: skip  # a run folder as users get it
        kglfr("extract", "--checkpoint", "runs/sysu-kglfr", "--store", "stores/sysu", "--out", "feats.npz")
        for t in (1, 2):
            kglfr("extract", "--checkpoint", "runs/sysu-kglfr", "--store", "stores/regdb", "--trial", t,
                  "--out", f"t{t}.npz")  # fmt: skip
        make_llcm(Path("home/data/LLCM"))
        kglfr("prepare", "--dataset", "llcm", "--root", "home/data/LLCM", "--out", "stores/llcm", "--height", 64,
              "--width", 32)  # fmt: skip
        kglfr("extract", "--checkpoint", "runs/sysu-kglfr", "--store", "stores/llcm", "--out", "llcm_test.npz")
        _image_folders(Path("home/data/SYSU-MM01"))
        _hrnet_weights(Path("pose_hrnet_w32_256x192.pth"))
    return root


def _image_folders(sysu: Path) -> None:
    """Query and gallery folders in the custom layout (``<pid>/<camera>_<n>.jpg``), as the docs name them."""
    for cam, folders in ((3, ("probes", "my_ir", "q")), (1, ("gallery", "gallery_vis", "g", "my_vis"))):
        for image in sorted((sysu / f"cam{cam}").glob("*/*.jpg"))[:12]:
            for folder in folders:
                dest = Path(folder) / image.parent.name / f"{cam}_{image.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(image, dest)
    shutil.copy2(next(Path("probes").glob("*/*.jpg")), "probe_ir.jpg")


def _hrnet_weights(path: Path) -> None:
    import torch

    from kglfr.keypoints.backends.hrnet import HRNetBackend

    torch.save(HRNetBackend(random_init=True).model.state_dict(), path)


def block_folder(world: Path, folder: Path) -> Path:
    """A fresh folder for one block: the world's stores and runs linked one by one, the rest copied."""
    folder.mkdir(parents=True)
    for entry in world.iterdir():
        if entry.name in LINKED:
            for leaf in entry.iterdir():
                (folder / entry.name).mkdir(exist_ok=True)
                (folder / entry.name / leaf.name).symlink_to(leaf)
        elif entry.is_dir():
            shutil.copytree(entry, folder / entry.name)
        else:
            shutil.copy2(entry, folder / entry.name)
    return folder


def own(path: Path, copy: bool) -> None:
    """A command writes ``path``: a linked world entry there is dropped, or replaced by a copy (``copy``)."""
    if path.is_symlink():
        target = path.resolve()
        path.unlink()
        if copy:
            shutil.copytree(target, path, symlinks=False)
