"""Reading a config file and resolving its interpolations, with one line for each way they fail (a file
that is not UTF-8, a byte-order mark, a YAML error and its line, an interpolation to a missing key or an
unset environment variable, a value of the wrong shape) instead of a YAML or OmegaConf traceback."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, OmegaConfBaseException

from kglfr.errors import KglfrError
from kglfr.io import NotUtf8, decode_utf8


class ConfigError(KglfrError):
    """A config file or override that does not fit the schema."""


def read_config_text(path: Path) -> str:
    """The text of config file ``path``: UTF-8, a byte-order mark named (and dropped)."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a folder; give a YAML file or a preset name") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"config {path} is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        return decode_utf8(data)  # a UTF-8 byte-order mark (Windows editors) is harmless: dropped
    except NotUtf8 as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte 0x{e.byte:02x} on line {e.line}); "
                          "save it as UTF-8") from None  # fmt: skip


def yaml_error(path: Path, e: yaml.YAMLError) -> ConfigError:
    """One line for a YAML syntax error, with its line and column."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return ConfigError(f"config {path} is not valid YAML{where}: {what}" + (f" ({context})" if context else ""))


def resolve(cfg: DictConfig, source: str, final: bool = True) -> bool:
    """Replace every interpolation (``${data.root}``, ``${oc.env:VAR}``) by its value now, in place: the run
    saves, and resumes with, what they said when it started. One line for one that cannot be resolved;
    unless ``final``, one that refers to a key not set yet is left for a later override (False returned)."""
    try:
        OmegaConf.resolve(cfg)
    except InterpolationToMissingValueError:
        if not final:
            return False
        _raise_unresolved(cfg, source)
    except OmegaConfBaseException:
        _raise_unresolved(cfg, source)
    return True


def _raise_unresolved(cfg: DictConfig, source: str) -> None:
    """The one-line ``ConfigError`` for the interpolation of ``cfg`` that cannot be resolved."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "a value"
        msg = str(e).splitlines()[0]
        env = re.search(r"Environment variable '([^']+)' not found", msg)
        if env:
            raise ConfigError(f"{source}: {key} reads the environment variable {env.group(1)}, which is not set; "
                              f"set it, or give {key} a value") from None  # fmt: skip
        missing = re.search(r"Interpolation key '([^']+)' not found", msg)
        if missing:
            raise ConfigError(f"{source}: {key} refers to ${{{missing.group(1)}}}, which is not a config key; "
                              "fix the reference (keys are section.key, e.g. ${data.root})") from None  # fmt: skip
        if "Missing mandatory value" in msg:
            raise ConfigError(f"{source}: {key} refers to a key that is not set ({msg.rsplit(': ', 1)[-1]}); "
                              "set it") from None  # fmt: skip
        raise ConfigError(f"{source}: {key} cannot be resolved ({msg})") from None
    raise ConfigError(f"{source}: an interpolation (${{...}}) cannot be resolved")


def shape_error(source: str, key: str, values: object, sections: list[str], lists: list[str]) -> ConfigError | None:
    """One line for a value of the wrong shape: a plain value given to a whole section, or a non-list to a
    list key; None for other errors. OmegaConf words these as its internals ("Merge error: str is not a
    subclass of ModelConfig", "AnyNode is not a ListConfig")."""
    given = dict(values.items()) if hasattr(values, "items") else {}
    flat = [k for k in sections if k in given and not hasattr(given[k], "items")]
    if key in sections or (not key and flat):
        name = key if key in sections else flat[0]
        return ConfigError(f"{source}: {name} is a section, not a value ({name}: {given.get(name)!r}); set its keys "
                           f"as {name}.KEY=value (e.g. model.arch=resnet18)")  # fmt: skip
    if key in lists:
        return ConfigError(f"{source}: {key} must be a list, e.g. {key}=[40,70]")
    return None


_TYPES = {"Integer": "a whole number", "Float": "a number", "bool": "true or false", "String": "a string"}


def plain_type_error(msg: str) -> str:
    """OmegaConf's "Value 'abc' of type 'str' could not be converted to Integer" as "must be a whole
    number, got 'abc'"; other messages unchanged."""
    import re as _re

    found = _re.search(r"Value '(.*)' (?:of type '\w+' could not be converted to (\w+)|is not a valid (bool))", msg)
    if not found:
        return msg
    want = _TYPES.get(found.group(2) or found.group(3), found.group(2) or found.group(3))
    return f"must be {want}, got {found.group(1)!r}"
