"""The dataset and pose-backend registries find their modules by walking their package: a module
dropped into the package registers without being listed anywhere, and an unknown name's error lists
the valid ones."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kglfr
import kglfr.data.datasets as datasets
import kglfr.keypoints.backends as backends
from kglfr.data.datasets import _READERS, dataset_names, load_dataset
from kglfr.errors import DatasetError, KglfrError
from kglfr.keypoints.backends import backend_names, build_backend
from kglfr.keypoints.backends.base import _BACKENDS


def _modules(package) -> set[str]:
    return {f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)} - {
        f"{package.__name__}.base"
    }


@pytest.mark.parametrize(
    "package, registry", [(datasets, _READERS), (backends, _BACKENDS)], ids=["datasets", "backends"]
)
def test_every_module_of_the_package_registers(package, registry):
    assert {factory.__module__ for factory in registry.values()} == _modules(package)


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("market1501", tmp_path)
    assert str(e.value) == f"unknown dataset 'market1501'; choose one of {', '.join(dataset_names())}"
    assert dataset_names() == ["custom", "llcm", "regdb", "sysu"]
    with pytest.raises(KglfrError) as e:
        build_backend("openpose")
    assert str(e.value) == f"unknown pose backend 'openpose'; choose one of {', '.join(backend_names())}"
    assert backend_names() == ["blazepose", "hrnet", "oracle"]


DROPPED_DATASET = """
from kglfr.data.datasets import register
from kglfr.data.datasets.base import VIDataset


@register("dropped")
def load_dropped(root):
    return VIDataset("dropped", root, [])
"""

DROPPED_BACKEND = """
from kglfr.keypoints.backends.base import register_backend


@register_backend("dropped")
def build_dropped(**options):
    raise RuntimeError("a test module: registered to be found, never built")
"""


def test_a_module_dropped_into_a_copy_of_the_package_is_found(tmp_path):
    copy = tmp_path / "kglfr"
    shutil.copytree(Path(kglfr.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "data" / "datasets" / "dropped.py").write_text(DROPPED_DATASET)
    (copy / "keypoints" / "backends" / "dropped.py").write_text(DROPPED_BACKEND)
    code = (
        "import kglfr, kglfr.data.datasets as d, kglfr.keypoints.backends as b; "
        "print(kglfr.__file__); print(d.dataset_names()); print(b.backend_names())"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == str(copy / "__init__.py")
    assert out[1] == str(["custom", "dropped", "llcm", "regdb", "sysu"])
    assert out[2] == str(["blazepose", "dropped", "hrnet", "oracle"])
