"""Training configs: typed sections (OmegaConf structured configs), YAML presets, command-line overrides.

A preset is a YAML file in ``kglfr/configs/`` (``sysu/kglfr``, ``demo``, ...) or any path. A file may
name a ``_base_`` file (relative to itself) whose values it overrides, as fast-reid's configs do.
Everything is merged onto the schema below, so an unknown key anywhere (file or ``key=value``
override) is an error that lists the closest valid keys, and a value of the wrong type is refused.
The library never sees a config object: :func:`kglfr.train.trainer.train` takes a :class:`Config`
and hands plain values to the model, losses and data.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kglfr.errors import KglfrError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
BASE_KEY = "_base_"


class ConfigError(KglfrError):
    """A config file or override that does not fit the schema."""


@dataclass
class DataConfig:
    store: str = MISSING
    trial: int | None = None
    keypoints: str | None = None
    height: int = 288
    width: int = 144
    ids_per_batch: int = 8
    per_modality: int = 4
    pad: int = 10
    flip_prob: float = 0.5


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    last_stride: int = 1
    non_local: bool = True
    nl_reduction: int = 2
    gem_p: float = 3.0
    pretrained: str | None = None


@dataclass
class LossConfig:
    id_weight: float = 1.0
    label_smoothing: float = 0.0
    triplet: str = "hard"
    global_margin: float = 0.3
    global_weight: float = 0.5
    kmlfr: bool = True
    local_margin: float = 0.01
    local_weight: float = 0.5


@dataclass
class AugmentConfig:
    erasing: str = "keypoint"
    erasing_prob: float = 0.5
    area_min: float = 0.02
    area_max: float = 0.4
    ratio_min: float = 0.3


@dataclass
class OptimConfig:
    lr: float = 0.1
    backbone_lr_mult: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [30, 60])
    gamma: float = 0.1
    warmup_epochs: int = 0
    scale_lr: bool = False  # lr x world size under DDP (the linear scaling rule)


@dataclass
class TrainConfig:
    epochs: int = 100
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    threads: int = 0
    iters_per_epoch: int | None = None
    log_every: int = 20
    eval_every: int = 10
    tensorboard: bool = True


@dataclass
class EvalConfig:
    protocols: list[str] | None = None
    trials: int = 10
    batch_size: int = 128
    flip: bool = False
    report_epoch: str = "last"
    gallery_draw: str = "seeded"
    gallery_perm: str | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {
    "loss.triplet": ("hard", "wrt"),
    "augment.erasing": ("none", "random", "keypoint"),
    "train.amp": ("auto", "off", "bf16", "fp16"),
    "train.channels_last": ("auto", "on", "off"),
    "model.arch": ("resnet18", "resnet34", "resnet50"),
    "eval.report_epoch": ("last", "best"),
    "eval.gallery_draw": ("seeded", "official"),
}


def valid_keys() -> list[str]:
    """Every dotted key of the schema (``data.store``, ``train.epochs``, ...)."""
    schema = OmegaConf.structured(Config)
    return [f"{s}.{k}" for s in schema for k in schema[s]]


def presets() -> list[str]:
    """The built-in presets, as names for ``--config`` (``sysu/kglfr``, ``demo``, ...)."""
    return sorted(p.relative_to(PRESET_DIR).with_suffix("").as_posix() for p in PRESET_DIR.rglob("*.yaml")
                  if p.name != "base.yaml")  # fmt: skip


def resolve_preset(name: str | Path) -> Path:
    """A preset name or a YAML path -> the file."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    q = PRESET_DIR / f"{name}.yaml"
    if q.is_file():
        return q
    raise ConfigError(f"no config file or preset {str(name)!r}; presets: {', '.join(presets())}")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML file with its ``_base_`` chain merged under it (plain dicts)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: '_base_' files include each other ({' -> '.join(map(str, seen))})")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}".splitlines()[0]) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config {path} must be a mapping of sections (data, model, ...)")
    base = doc.pop(BASE_KEY, None)
    if base is None:
        return doc
    merged = _read_yaml((path.parent / base), (*seen, path))
    return deep_merge(merged, doc)


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _closest(key: str) -> str:
    keys = valid_keys()
    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not near:  # match on the last part alone (``epoch`` -> ``train.epochs``)
        leaf = key.rsplit(".", 1)[-1]
        near = [
            k
            for k in keys
            if k.rsplit(".", 1)[-1] in difflib.get_close_matches(leaf, [x.rsplit(".", 1)[-1] for x in keys], 3, 0.6)
        ]
    if near:
        return f"; closest valid keys: {', '.join(near[:3])}"
    return f"; valid sections: {', '.join(Config.__dataclass_fields__)}"


def _merge(schema: DictConfig, values: DictConfig | dict, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, values)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).splitlines()[0]
        if "Key" in type(e).__name__ or "not in struct" in msg:
            raise ConfigError(f"{source}: unknown config key {key!r}{_closest(key)}") from None
        raise ConfigError(f"{source}: bad value for {key!r}: {msg}") from None


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.epochs=5", "model.pretrained=null"]`` -> a nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.epochs=5)")
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = parsed
    return out


def _check(cfg: DictConfig, source: str) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{source}: {key}={value!r} is not one of {', '.join(allowed)}")
    for key in ("data.height", "data.width", "data.ids_per_batch", "data.per_modality", "train.epochs",
                "eval.batch_size", "eval.trials"):  # fmt: skip
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{source}: {key} must be at least 1, got {OmegaConf.select(cfg, key)}")
    for key in ("data.flip_prob", "augment.erasing_prob"):
        if not 0.0 <= OmegaConf.select(cfg, key) <= 1.0:
            raise ConfigError(f"{source}: {key} must be in [0, 1], got {OmegaConf.select(cfg, key)}")
    if not 0 < cfg.augment.area_min <= cfg.augment.area_max <= 1 or not 0 < cfg.augment.ratio_min <= 1:
        raise ConfigError(f"{source}: need 0 < augment.area_min <= area_max <= 1 and 0 < augment.ratio_min <= 1")


def load_config(preset: str | Path, overrides: list[str] | dict | None = None) -> DictConfig:
    """The preset (name or file) with its ``_base_`` chain and ``overrides``, validated against the schema.

    The result is a typed ``DictConfig`` in struct mode; ``data.store`` may still be missing (``???``)
    until the caller checks it with :func:`require`.
    """
    path = resolve_preset(preset)
    schema = OmegaConf.structured(Config)
    cfg = _merge(schema, _read_yaml(path), str(path))
    if overrides:
        values = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        cfg = _merge(cfg, values, "override")
    _check(cfg, str(path))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def config_from_dict(values: dict, source: str = "saved config") -> DictConfig:
    """A config saved with a run (``config.yaml``), validated against the schema."""
    cfg = _merge(OmegaConf.structured(Config), values, source)
    _check(cfg, source)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def require(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        if OmegaConf.is_missing(cfg, key) if "." not in key else OmegaConf.select(cfg, key, default="???") == "???":
            raise ConfigError(f"{key} is not set; pass {key}=... on the command line (e.g. {key}=runs/demo/store)")


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out
