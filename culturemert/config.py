"""One way to configure every command: plain dataclasses, read from YAML, with ``--set`` overrides.

A configuration is a (possibly nested) dataclass. :func:`config_from_dict` builds one from plain
data (as YAML reads it) after applying dotted ``KEY=VALUE`` overrides (``stages.0.steps=10``,
``selection.probe.max_epochs=5``; list items by index or by their ``name``), converting every
value to its field's annotated type. Errors name the file, the field and what was expected.
Dataclasses check their own ranges in ``__post_init__``; a ``ValueError`` raised there is
reported with the field path of that dataclass.
"""

from __future__ import annotations

import copy
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the field."""


def read_yaml(path: str | os.PathLike, what: str = "configuration") -> dict:
    """A YAML file's top-level mapping, or a :class:`ConfigError` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what} file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict, override: str) -> None:
    """Set ``a.b.0.c=value`` in ``raw``; the value is parsed as YAML (``10``, ``[heads, cnn]``)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. stages.0.steps=10")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({error})") from None
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"override {override!r}: {where} is not inside a mapping or list")


def _list_index(items: list, part: str, where: str) -> int:
    """A list position from an index or from an item's ``name``."""
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"{where}: index out of range (the list has {len(items)} items)")
        return index
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    raise ConfigError(f"{where}: no list item named {part!r}")


def config_from_dict(
    cls: type[T], raw: dict | None, overrides: Sequence[str] = (), *, where: str = "config"
) -> T:
    """A ``cls`` built from ``raw`` (left untouched) with ``overrides`` applied first."""
    raw = copy.deepcopy(raw or {})
    try:
        for override in overrides:
            apply_override(raw, override)
        return build(cls, raw)
    except ConfigError as error:
        raise type(error)(f"{where}: {error}") from None


def load_config(
    cls: type[T],
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    what: str = "configuration",
) -> T:
    """A ``cls`` read from a YAML file, with ``overrides``."""
    return config_from_dict(cls, read_yaml(path, what), overrides, where=str(path))


def build(cls: type[T], raw: Any, where: str = "") -> T:
    """A dataclass from a mapping, each field converted to its annotated type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = sorted(str(key) for key in set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown field (expected one of {', '.join(known)})"
        )
    missing = [
        name
        for name, spec in known.items()
        if name not in raw and spec.default is MISSING and spec.default_factory is MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: required field is missing")
    values = {name: coerce(value, hints[name], f"{prefix}{name}") for name, value in raw.items()}
    try:
        return cls(**values)
    except ValueError as error:  # the dataclass's own range checks
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to the type ``hint`` (YAML reads 5e-4 as a string: floats accept it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error).split(": ", 1)[-1])
        raise ConfigError(f"{where}: {' or '.join(errors)}")
    if is_dataclass(hint):
        return build(hint, value, where)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = [coerce(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(
            coerce(v, a, f"{where}.{i}") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def to_dict(value: Any) -> Any:
    """A configuration as plain YAML-ready data (dataclasses as mappings, tuples as lists)."""
    if is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    return value
