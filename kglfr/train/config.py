"""Training configs: typed sections (OmegaConf structured configs), YAML presets, command-line overrides.

A preset is a YAML file in ``kglfr/configs/`` (``sysu/kglfr``, ``demo``, ...) or any path. A file may
name ``_base_`` files (one, or a list merged in order; each a path relative to the file or a preset name
such as ``sysu/caj``) whose values it overrides, as mmengine's configs do. ``method.name`` picks the
training method (``kglfr.train.methods``), whose defaults sit between the schema and the preset.
Everything is merged onto the schema below, so an unknown key anywhere (file or ``key=value``
override) is an error that lists the closest valid keys, and a value of the wrong type is refused.
The library never sees a config object: :func:`kglfr.train.trainer.train` takes a :class:`Config`
and hands plain values to the model, losses and data.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kglfr.data.conventions import GALLERY_DRAWS
from kglfr.model.resnet import Arch
from kglfr.train.config_errors import (
    ConfigError,
    plain_type_error,
    read_config_text,
    resolve,
    shape_error,
    yaml_error,
)

PRESET_DIR = Path(str(resources.files("kglfr") / "configs"))
BASE_KEY = "_base_"


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:  # fmt: skip
    """A dataclass field with a range that :func:`load_config` checks (a number must also be finite)."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt})


@dataclass
class DataConfig:
    store: str = MISSING  # a prepared store (kglfr prepare), with a keypoint cache when the preset needs one
    trial: int | None = bounded(None, ge=1)  # the store's prepared trial (RegDB: 1..10)
    keypoints: str | None = None  # backend of the keypoint cache to use (None: the one in the store)
    height: int = bounded(288, ge=1)
    width: int = bounded(144, ge=1)
    ids_per_batch: int = bounded(8, ge=1)
    per_modality: int = bounded(4, ge=1)
    pad: int = bounded(10, ge=0)
    flip_prob: float = bounded(0.5, ge=0, le=1)


@dataclass
class ModelConfig:
    arch: Arch = "resnet50"
    last_stride: Literal[1, 2] = 1
    non_local: bool = True
    nl_reduction: int = bounded(2, ge=1)
    nl_width: int | None = bounded(None, ge=1)  # a fixed non-local inner width (1: AGW's published code)
    width: int = bounded(64, ge=8)  # the backbone's base width: 64 is the published ResNet (and its weights)
    gem_p: float = bounded(3.0, gt=0)
    pretrained: str = "imagenet"  # imagenet (hub cache or download), none (random initialisation) or a file


@dataclass
class MethodConfig:
    name: str = "kglfr"  # a registered training method (kglfr.train.methods): agw, caj, kglfr, kglfr_caj


@dataclass
class LossConfig:
    id_weight: float = bounded(1.0, ge=0)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)
    # batch-hard with a margin, AGW's weighted regularised triplet, or CAJ's ADP triplet
    triplet: Literal["hard", "wrt", "adp"] = "hard"
    global_margin: float = bounded(0.3, ge=0)
    global_weight: float = bounded(0.5, ge=0)
    kmlfr: bool = True
    local_margin: float = bounded(0.01, ge=0)
    local_weight: float = bounded(0.5, ge=0)
    adp_alpha: float = bounded(1.0, gt=0)  # ADP: sharpness of the softmax weights
    adp_gamma: float = bounded(1.0, gt=0)  # ADP: scale of the difference
    adp_square: bool = True  # ADP: squared difference, clamped at 88 (CAJ's --square 1)
    # ADP on L2-normalised features; auto: on from random initialisation (model.pretrained=none), where the
    # squared difference would sit at its clamp of 88 with no gradient, off otherwise (the published loss)
    adp_normalize: Literal["auto", "on", "off"] = "auto"


@dataclass
class AugmentConfig:
    erasing: Literal["none", "random", "keypoint"] = "keypoint"  # random: Random Erasing; keypoint: KEGFR
    erasing_prob: float = bounded(0.5, ge=0, le=1)
    area_min: float = bounded(0.02, gt=0, le=1)
    area_max: float = bounded(0.4, gt=0, le=1)
    ratio_min: float = bounded(0.3, gt=0, le=1)
    channel_erasing_prob: float = bounded(0.5, ge=0, le=1)  # CAJ views: channel random erasing on each view
    grey_prob: float = bounded(0.5, ge=0, le=1)  # CAJ views: adaptive grey's grey outcome on infrared


@dataclass
class OptimConfig:
    lr: float = bounded(0.1, gt=0)
    backbone_lr_mult: float = bounded(0.1, ge=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    weight_decay: float = bounded(5e-4, ge=0)
    milestones: list[int] = field(default_factory=lambda: [30, 60])
    gamma: float = bounded(0.1, gt=0)
    warmup_epochs: int = bounded(0, ge=0)
    scale_lr: bool = False  # lr x world size under DDP (the linear scaling rule)


@dataclass
class TrainConfig:
    epochs: int = bounded(100, ge=1)
    seed: int = bounded(0, ge=0)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    # auto: the runtime policy (kglfr.runtime): bf16 on a GPU that has it, else fp16; float32 on the CPU (bf16 cost
    # the demo accuracy: kglfr.runtime.CPU_AUTO_BF16_TRAINING). off: float32 (contiguous on the CPU)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on with a GPU, and under autocast; true/false too
    compile: Literal["off", "auto", "on"] = "off"  # torch.compile the model; auto: fall back with a warning
    threads: int = bounded(0, ge=0)  # CPU threads for torch (0: torch's default)
    iters_per_epoch: int | None = bounded(None, ge=1)  # None: visible images / (ids_per_batch x per_modality)
    log_every: int = bounded(20, ge=1)
    eval_every: int = bounded(10, ge=0)  # evaluate every N epochs (0: only at the end)
    tensorboard: bool = True  # when tensorboard is installed


@dataclass
class EvalConfig:
    protocols: list[str] | None = None  # None: the dataset's (sysu-all, sysu-indoor; regdb: v2i, i2v; ...)
    trials: int = bounded(GALLERY_DRAWS, ge=1)
    batch_size: int = bounded(128, ge=1)
    flip: bool = False
    report_epoch: Literal["last", "best"] = "last"  # best: the best epoch on the test set, a labelled option
    gallery_draw: Literal["seeded", "official"] = "seeded"  # SYSU: random.seed(trial) as AGW, or the .mat file
    gallery_perm: str | None = None  # official: the .mat file; None: <source root>/exp/rand_perm_cam.mat
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # the evaluations' precision; auto: float32 everywhere
    report_page: bool = True  # RUN/report.html (kglfr.report) after each evaluation and at the end


@dataclass
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _fields() -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (dataclass field, resolved type) over the schema."""
    out = {}
    for section in fields(Config):
        cls = section.default_factory
        hints = get_type_hints(cls)
        out.update({f"{section.name}.{f.name}": (f, hints[f.name]) for f in fields(cls)})
    return out


def _list_keys() -> list[str]:
    return [k for k, (_f, t) in _fields().items() if get_origin(t) is list]


def choices() -> dict[str, tuple]:
    """The keys whose values are a fixed set (read from their ``Literal`` types) -> those values."""
    return {key: get_args(t) for key, (_f, t) in _fields().items() if get_origin(t) is Literal}


def valid_keys() -> list[str]:
    """Every dotted key of the schema (``data.store``, ``train.epochs``, ...)."""
    schema = OmegaConf.structured(Config)
    return [f"{s}.{k}" for s in schema for k in schema[s]]


def presets() -> list[str]:
    """The built-in presets, as names for ``--config`` (``sysu/kglfr``, ``demo``, ...)."""
    return sorted(p.relative_to(PRESET_DIR).with_suffix("").as_posix() for p in PRESET_DIR.rglob("*.yaml"))


def resolve_preset(name: str | Path) -> Path:
    """A preset name or a YAML path -> the file."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"config {p} is a folder; give a YAML file or a preset name ({', '.join(presets())})")
    q = PRESET_DIR / f"{name}.yaml"
    if q.is_file():
        return q
    raise ConfigError(f"no config file or preset {str(name)!r}; presets: {', '.join(presets())}")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false (so ``amp: off`` is the string "off", as the schema means)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML file with its ``_base_`` chain merged under it (plain dicts)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: '_base_' files include each other ({' -> '.join(map(str, seen))})")
    try:
        doc = yaml.load(read_config_text(path), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if not doc:
        raise ConfigError(f"config {path} is empty; give at least one key, e.g. '_base_: sysu/kglfr.yaml' "
                          f"(a preset file of {PRESET_DIR}) and what differs from it")  # fmt: skip
    if not isinstance(doc, dict):
        raise ConfigError(f"config {path} must be a mapping of sections (data, model, ...)")
    base = doc.pop(BASE_KEY, None)
    if base is None:
        return doc
    bases = base if isinstance(base, list) else [base]
    merged: dict = {}
    for b in bases:
        if not isinstance(b, str) or not b:
            raise ConfigError(f"config {path}: '_base_' must be a preset name or file, or a list of them; got {b!r}")
        merged = deep_merge(merged, _read_yaml(_base_path(path, b), (*seen, path)))
    return deep_merge(merged, doc)


def _base_path(path: Path, base: str) -> Path:
    """A ``_base_`` entry of ``path``: a file relative to it, else a preset name (``sysu/kglfr``)."""
    rel = path.parent / base
    if rel.is_file():
        return rel
    named = PRESET_DIR / (base if base.endswith(".yaml") else f"{base}.yaml")
    if named.is_file():
        return named
    raise ConfigError(f"config {path}: '_base_' {base!r} is neither a file beside it nor a preset; "
                      f"presets: {', '.join(presets())}")  # fmt: skip


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
    model = values.get("model") if isinstance(values, dict) else None
    if isinstance(model, dict) and "pretrained" in model and model["pretrained"] is None:
        raise ConfigError(f"{source}: model.pretrained must be imagenet, none (random initialisation) or a "
                          "weights file; null is no longer accepted")  # fmt: skip
    try:
        return OmegaConf.merge(schema, on_off(values) if isinstance(values, dict) else values)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).splitlines()[0]
        if "Key" in type(e).__name__ or "not in struct" in msg:
            raise ConfigError(f"{source}: unknown config key {key!r}{_closest(key)}") from None
        if key in choices():
            allowed = ", ".join(map(str, choices()[key]))
            raise ConfigError(f"{source}: {key}={_lookup(values, key)!r} is not one of {allowed}") from None
        shaped = shape_error(source, key, values, list(Config.__dataclass_fields__), _list_keys())
        if shaped:
            raise shaped from None
        raise ConfigError(f"{source}: bad value for {key!r}: {plain_type_error(msg)}") from None


def on_off(values: dict) -> dict:
    """``values`` with true/false read as on/off for the keys that take on/off (``train.channels_last=false``,
    ``train.compile: true``); false is off for ``train.amp`` and ``eval.amp`` too. A copy; others unchanged."""
    out = dict(values)
    for key, allowed in choices().items():
        section, leaf = key.split(".", 1)
        value = out.get(section, {}).get(leaf) if isinstance(out.get(section), dict) else None
        if isinstance(value, bool) and ("on" if value else "off") in allowed:
            out[section] = {**out[section], leaf: "on" if value else "off"}
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.epochs=5", "train.amp=off"]`` -> a nested dict (values read as YAML 1.2: off stays "off")."""
    out: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.epochs=5)")
        try:
            parsed = yaml.load(value, Loader=_Loader) if value != "" else ""  # noqa: S506 - a SafeLoader
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is not a section")
        node[parts[-1]] = parsed
    return out


def _lookup(values: Any, key: str) -> Any:
    for part in key.split("."):
        values = values.get(part) if hasattr(values, "get") else None
    return values


_BOUNDS = {"ge": ("at least", lambda v, b: v >= b), "gt": ("greater than", lambda v, b: v > b),
           "le": ("at most", lambda v, b: v <= b), "lt": ("less than", lambda v, b: v < b)}  # fmt: skip


def _out_of_range(value: Any, meta: Any) -> str | None:
    """Why ``value`` breaks the field's bounds (``meta`` of :func:`bounded`), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not meta:
        return None
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    for op, (word, ok) in _BOUNDS.items():
        if meta.get(op) is not None and not ok(value, meta[op]):
            return f"must be {word} {meta[op]:g}, got {value}"
    return None


def _problems(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, what is wrong) for every value outside its field's range, plus the cross-field rules."""
    out = []
    for key, (f, _t) in _fields().items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if key == "data.store" and OmegaConf.is_missing(cfg.data, "store"):
            continue
        why = _out_of_range(value, f.metadata)
        if why:
            out.append((key, why))
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.train.device):
        out.append(("train.device", f"must be auto, cpu, cuda or cuda:N, got {cfg.train.device!r}"))
    if not all(isinstance(m, int) and m >= 1 for m in cfg.optim.milestones):
        out.append(("optim.milestones", f"must be epochs (whole numbers >= 1), got {list(cfg.optim.milestones)}"))
    if cfg.augment.area_min > cfg.augment.area_max:
        out.append(("augment.area_min", f"must not exceed augment.area_max ({cfg.augment.area_max})"))
    if cfg.model.width % 8:
        out.append(("model.width", f"must be a multiple of 8, got {cfg.model.width}"))
    elif cfg.model.width != 64 and cfg.model.pretrained != "none":
        out.append(("model.width", f"is {cfg.model.width}: pretrained weights exist only for width 64; "
                                   "set model.pretrained=none"))  # fmt: skip
    return out + _method_problems(cfg)


def _method_problems(cfg: DictConfig) -> list[tuple[str, str]]:
    from kglfr.train.methods import get_method, method_names

    if cfg.method.name not in method_names():
        return [("method.name", f"must be a registered method ({', '.join(method_names())}), got {cfg.method.name!r}")]
    return get_method(cfg.method.name).problems(cfg)


def _method_schema(doc: dict, overrides: list[str] | dict | None) -> DictConfig:
    """The schema with the defaults of the method that the preset ``doc`` and ``overrides`` name."""
    from kglfr.train.methods import get_method, method_names

    name = _lookup(doc, "method.name")
    items = [] if not overrides or isinstance(overrides, dict) else list(overrides)
    for item in items:
        if item.partition("=")[0].strip() == "method.name":
            name = _lookup(parse_overrides([item]), "method.name")
    if isinstance(overrides, dict):
        name = _lookup(overrides, "method.name") or name
    schema = OmegaConf.structured(Config)
    if name is None or name not in method_names():  # the default, or an unknown name the check reports
        return schema
    return _merge(schema, get_method(name).defaults, f"defaults of method {name!r}")


def _check(cfg: DictConfig, source: str, overridden: dict[str, str] | None = None) -> None:
    """Raise for the first problem, blamed on the override that set the key, else on ``source``."""
    for key, why in _problems(cfg):
        where = f"override {overridden[key]!r}" if overridden and key in overridden else source
        raise ConfigError(f"{where}: {key} {why}")


def _override_sources(overrides: list[str]) -> dict[str, str]:
    return {item.partition("=")[0].strip(): item for item in overrides}


def load_config(preset: str | Path, overrides: list[str] | dict | None = None) -> DictConfig:
    """The preset (name or file) with its ``_base_`` chain and ``overrides``, validated against the schema.

    The result is a typed ``DictConfig`` in struct mode; ``data.store`` may still be missing (``???``)
    until the caller checks it with :func:`require`.
    """
    path = resolve_preset(preset)
    doc = _read_yaml(path)
    cfg = _merge(_method_schema(doc, overrides), doc, str(path))
    if resolve(cfg, str(path), final=False):  # else a value waits for a key an override sets (${data.store})
        _check(cfg, str(path))
    items = [] if not overrides or isinstance(overrides, dict) else list(overrides)
    if isinstance(overrides, dict):
        resolve(cfg := _merge(cfg, overrides, "override"), "override", final=False)
    for item in items:  # one at a time, so an error names the override
        resolve(cfg := _merge(cfg, parse_overrides([item]), f"override {item!r}"), f"override {item!r}", final=False)
    resolve(cfg, str(path))
    _check(cfg, "override" if isinstance(overrides, dict) else str(path), _override_sources(items))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def config_from_dict(values: dict, source: str = "saved config") -> DictConfig:
    """A config saved with a run (``config.yaml``), validated against the schema.

    Runs saved before ``model.pretrained`` took imagenet/none say null there: read as "none" (a saved run's
    weights come from its checkpoint).
    """
    if isinstance(values.get("model"), dict) and values["model"].get("pretrained", "") is None:
        values = deep_merge(values, {"model": {"pretrained": "none"}})
    cfg = _merge(OmegaConf.structured(Config), values, source)
    resolve(cfg, source)
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
    return OmegaConf.to_yaml(cfg, resolve=True)


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
