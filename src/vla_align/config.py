"""Config trees: nested ``@dataclass`` configs, strict dict round trips, JSON files, CLI flags.

Every component keeps its own config dataclass beside its module and validates it in
``__post_init__``; this module only knows how to walk such trees.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from . import atomic
from .errors import ConfigError

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config tree (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where!r} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {where!r} must be a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, where) for v in value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"config key {where!r} must be one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"config key {where!r} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build ``cls`` from a dict; unknown keys raise, missing keys keep their defaults."""
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r}; known keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, types_[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def save(cfg: Any, path: str | Path, **extra: Any) -> None:
    atomic.write_json(path, {**to_dict(cfg), **extra})


def load_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


# --- command-line flags: --section.sub-field VALUE ---------------------------------------


def _flag(path: str) -> str:
    return "--" + path.replace("_", "-")


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, tp in _field_types(cls).items():
        if name not in {f.name for f in dataclasses.fields(cls)}:
            continue
        path = f"{prefix}{name}"
        if _is_dataclass_type(tp):
            out.extend(_leaves(tp, f"{path}."))
        else:
            out.append((path, tp))
    return out


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--a.b-c`` flag per leaf of the config tree (value parsed by the leaf's type)."""
    group = parser.add_argument_group("config overrides (default: the preset's value)")
    for path, tp in _leaves(cls):
        if path in skip:
            continue
        origin = typing.get_origin(tp)
        kwargs: dict[str, Any] = {"dest": f"cfg:{path}", "default": argparse.SUPPRESS, "metavar": "V"}
        if origin is tuple:
            (item_tp, *_rest) = typing.get_args(tp)
            kwargs["nargs"] = "+"
            kwargs["type"] = item_tp if item_tp in (int, float) else str
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs.pop("metavar")
        elif tp is bool:
            kwargs["type"] = _parse_bool
        elif tp in (int, float, str):
            kwargs["type"] = tp
        group.add_argument(_flag(path), **kwargs)


def apply_flags(cfg: C, args: argparse.Namespace) -> C:
    """Return a copy of ``cfg`` with every ``cfg:`` flag in ``args`` applied (revalidated)."""
    data = to_dict(cfg)
    for dest, value in vars(args).items():
        if not dest.startswith("cfg:"):
            continue
        node = data
        *parents, leaf = dest[4:].split(".")
        for p in parents:
            node = node[p]
        node[leaf] = list(value) if isinstance(value, list) else value
    return from_dict(type(cfg), data)
