"""Config trees: nested ``@dataclass`` configs, strict dict round trips, JSON files, CLI flags.

Every component keeps its own config dataclass beside its module and validates it in
``__post_init__``; this module only knows how to walk such trees.

Polymorphic fields. A field typed with a family base (a :class:`VariantConfig` subclass such as
``HeadConfig``) holds one of the family's registered variants (``RegressionHeadConfig``, ...):

* JSON: the node's name key (``name`` for heads, ``backbone`` for the text encoder) picks the class
  through the family's registry; a bare string is read as ``{key: string}``. A key that belongs to
  another variant of the family is dropped when it holds that variant's default (config files
  written when the family was one flat dataclass) and rejected otherwise.
* CLI: the flags are the union of the variants' flags, plus ``--path NAME`` as a short form of
  ``--path.key NAME``. Choosing another variant starts from its defaults and keeps the fields it
  shares with the current one; a flag of a variant that is not selected is rejected, naming the
  variant it belongs to.

Help. A flag's description is its field's comment in the source (the trailing ``# comment`` of the
field's line, else the comment lines directly above it), read by :func:`field_doc`, so the help
cannot drift from the code; :func:`describe_flags` adds the value each flag has in a given config.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import json
import math
import numbers
import re
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from . import atomic
from .errors import ConfigError
from .registry import Registry

C = TypeVar("C")
V = TypeVar("V", bound="VariantConfig")

ALLOW_INF = "allow_inf"  # field metadata: this float may be ±inf (every other float must be finite)
SEED_MAX = 2**32 - 1  # seeds are unsigned 32-bit integers: numpy, torch and the simulators all take them


# --- value checks shared by every config's __post_init__ ---------------------------------------


def out_of_range(path: str, value: object, allowed: str, why: str = "") -> ConfigError:
    """The error of a config value outside its range: the field (config path and flag), what is
    allowed and why, and the value given."""
    because = f" ({why})" if why else ""
    return ConfigError(f"{path} must be {allowed}{because}, got {value!r} (flag {_flag(path)})")


def check_int(path: str, value: object, lo: int, hi: int | None = None, why: str = "") -> None:
    """Raise unless ``value`` is an integer (not a bool) in ``lo..hi`` (``hi`` None: no upper bound)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy integers too
    ok = ok and value >= lo and (hi is None or value <= hi)  # type: ignore[operator]
    if not ok:
        raise out_of_range(path, value, f"an integer >= {lo}" if hi is None else f"in {lo}..{hi}", why)


def check_seed(path: str, value: object) -> None:
    check_int(path, value, 0, SEED_MAX, "a seed is an unsigned 32-bit integer")


def check_split(path: str, value: object) -> None:
    """Raise unless ``value`` names a split: a non-empty word such as ``test``, ``val`` or ``train``."""
    if not isinstance(value, str) or not value or value != value.strip() or "/" in value:
        raise out_of_range(path, value, "a split name such as test, val or train")


def check_float(
    path: str,
    value: object,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    why: str = "",
) -> None:
    """Raise unless ``value`` is a finite number (not a bool) between ``lo`` and ``hi`` (None: unbounded;
    ``*_open``: that end excluded). NaN fails every comparison, so it is refused too."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo  # type: ignore[operator]
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi  # type: ignore[operator]
    if not ok:
        raise out_of_range(path, value, _describe_range(lo, hi, lo_open, hi_open), why)


def _describe_range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"a finite number {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"a finite number {'<' if hi_open else '<='} {hi:g}"
    return "a finite number"


class VariantConfig:
    """Base of a config family whose variants are picked by name (a polymorphic config field).

    The family base, a dataclass, sets ``registry`` (name -> variant class) and ``key`` (the name
    field, declared first) and holds the shared fields; each registered subclass redeclares the name
    field with its registered name as default, adds its own fields and validates them in
    ``__post_init__``. The name field is what counts: an instance of the family base, or a variant
    whose name was changed after construction (assignment, ``dataclasses.replace``), is read by
    :func:`resolve` (``build()`` and :func:`to_dict` call it) as the named variant with the shared
    fields kept and the rest at that variant's defaults, as a switch on the command line would.
    """

    registry: ClassVar[Registry[Any]]
    key: ClassVar[str] = "name"


def is_variant_type(tp: Any) -> bool:
    """True for a dataclass family base or variant (a polymorphic field's type)."""
    return isinstance(tp, type) and issubclass(tp, VariantConfig) and dataclasses.is_dataclass(tp)


def variant_name(cfg: VariantConfig) -> str:
    return str(getattr(cfg, cfg.key))


def family_of(cls: type[VariantConfig]) -> type[VariantConfig]:
    """The family base of a variant class (the class that sets ``registry``)."""
    return next(k for k in cls.__mro__ if "registry" in vars(k))


def own_fields(cfg: VariantConfig) -> dict[str, Any]:
    """The fields a variant adds to its family base, by name (the settings its module takes)."""
    family = family_of(type(cfg))
    shared = {f.name for f in dataclasses.fields(family)}  # type: ignore[arg-type]
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in shared}  # type: ignore[arg-type]


def switch_variant(cfg: V, name: str) -> V:
    """The variant ``name`` of ``cfg``'s family: its defaults, with the fields it shares with ``cfg``."""
    target = cfg.registry.get(name)
    have = {f.name for f in dataclasses.fields(cfg) if f.init}  # type: ignore[arg-type]
    shared = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(target)
        if f.init and f.name in have and f.name != cfg.key
    }
    out: V = target(**shared)
    return out


def resolve(cfg: V) -> V:
    """``cfg`` itself when its class is the one registered under its name, else the switch to it."""
    name = variant_name(cfg)
    return cfg if type(cfg) is cfg.registry.get(name) else switch_variant(cfg, name)


def as_variant(value: object, family: type[V], where: str) -> V:
    """A variant name (the registered variant with its defaults) or a config of ``family``, as is."""
    if isinstance(value, str):
        out: V = family.registry.get(value)()
        return out
    if not isinstance(value, family):
        raise ConfigError(f"{where} must be a {family.__name__} or a name, got {value!r}")
    return value


def check_name(cfg: VariantConfig, where: str) -> None:
    """Raise ConfigError when the name key of ``cfg`` is not registered in its family."""
    name = getattr(cfg, cfg.key)
    if name not in cfg.registry:
        known = ", ".join(cfg.registry.names())
        raise ConfigError(f"{where}.{cfg.key} {name!r} is not a known {cfg.registry.family}; use one of {known}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config tree (tuples become lists, variants are resolved)."""
    if isinstance(cfg, VariantConfig):
        cfg = resolve(cfg)
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


def _coerce(value: Any, tp: Any, where: str, allow_inf: bool = False) -> Any:
    origin = typing.get_origin(tp)
    if is_variant_type(tp) and isinstance(value, str):
        value = {tp.key: value}  # a bare variant name
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where!r} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {where!r} must be a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, where, allow_inf) for v in value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"config key {where!r} must be one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if tp in (int, float):
        return _number(value, tp, where, allow_inf)
    if tp in (str, bool) and not isinstance(value, tp):
        raise ConfigError(f"config key {where!r} must be {tp.__name__}, got {value!r}")
    return value


def _number(value: Any, tp: type, where: str, allow_inf: bool) -> int | float:
    """An int or float field's value: a bool is neither, an int field takes no fraction, a float field
    no NaN (nor ±inf unless the field's metadata sets ``ALLOW_INF``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config key {where!r} must be {tp.__name__}, got {value!r}")
    if tp is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"config key {where!r} must be a whole number, got {value!r} (flag {_flag(where)})")
        return int(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ConfigError(
            f"{where} must be a finite number, got {value!r} (flag {_flag(where)}); NaN and infinity are never "
            "valid settings"
        )
    return float(value)


def _variant_owners(family: type[VariantConfig], key: str) -> list[str]:
    """The names of the variants of ``family`` that have a field ``key``."""
    return [name for name, cls in family.registry.items() if key in _field_names(cls)]


def _pick_variant(family: type[VariantConfig], data: dict[str, Any], prefix: str) -> tuple[type, dict[str, Any]]:
    """The variant class named in ``data`` and the keys it reads (other variants' defaults dropped)."""
    key = family.key
    defaults = {f.name: f.default for f in dataclasses.fields(family)}  # type: ignore[arg-type]
    name = data.get(key, defaults.get(key))
    if not isinstance(name, str) or name not in family.registry:
        known = ", ".join(family.registry.names())
        raise ConfigError(f"config key {prefix}{key} {name!r} is not a known {family.registry.family}; known: {known}")
    variant: type = family.registry.get(name)
    own = _field_names(variant)
    kept: dict[str, Any] = {}
    for k, v in data.items():
        owners = [] if k in own else _variant_owners(family, k)
        if not owners:  # own fields, and unknown keys for from_dict to report
            kept[k] = v
        elif not any(v == to_dict(family.registry.get(o)())[k] for o in owners):
            raise ConfigError(
                f"config key {prefix}{k} belongs to the {' / '.join(owners)} {family.registry.family}, "
                f"but {prefix}{key} is {name!r}; remove it or set {prefix}{key} to {owners[0]!r}"
            )
    return variant, kept


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build ``cls`` from a dict; unknown keys raise, missing keys keep their defaults.

    ``cls`` may be a variant family: the name key in ``data`` picks the class. A config class may
    define ``upgrade_dict(data) -> data`` to read the layout of older config files.
    """
    if is_variant_type(cls):
        cls, data = _pick_variant(cls, data, prefix)  # type: ignore[arg-type]
    upgrade = getattr(cls, "upgrade_dict", None)
    if upgrade is not None:
        data = upgrade(dict(data))
    types_ = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r}; known keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}"
        )
    data = dict(data)
    for k, v in data.items():  # a variant node without its name key: the field default's variant
        tp = types_[k]
        if is_variant_type(tp) and isinstance(v, dict) and tp.key not in v:
            default = _default(fields[k])
            if isinstance(default, VariantConfig):
                data[k] = {tp.key: variant_name(default), **v}
    kwargs = {
        k: _coerce(v, types_[k], f"{prefix}{k}", bool(fields[k].metadata.get(ALLOW_INF))) for k, v in data.items()
    }
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
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); pass a config.json written by vla-align") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


# --- command-line flags: --section.sub-field VALUE ---------------------------------------


def _flag(path: str) -> str:
    return "--" + path.replace("_", "-")


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(flag path, config path, type) per leaf; a variant node contributes the union of its variants'
    leaves, its name key with the registered names as choices, and the short form ``--path NAME``."""
    out: list[tuple[str, str, Any]] = []
    names = _field_names(cls)
    for name, tp in _field_types(cls).items():
        if name not in names:
            continue
        path = f"{prefix}{name}"
        if is_variant_type(tp):
            key_path = f"{path}.{tp.key}"
            choice = typing.Literal[tuple(tp.registry.names())]  # type: ignore[valid-type]
            out += [(path, key_path, choice), (key_path, key_path, choice)]
            seen = {key_path}
            for _variant, vcls in tp.registry.items():
                for leaf in _leaves(vcls, f"{path}."):
                    if leaf[1] not in seen:
                        seen.add(leaf[1])
                        out.append(leaf)
        elif _is_dataclass_type(tp):
            out.extend(_leaves(tp, f"{path}."))
        else:
            out.append((path, path, tp))
    return out


def _key_paths(cls: type, prefix: str = "") -> set[str]:
    """The config paths of every variant node's name key (``model.policy.head.name``, ...)."""
    out: set[str] = set()
    names = _field_names(cls)
    for name, tp in _field_types(cls).items():
        if name not in names:
            continue
        if is_variant_type(tp):
            out.add(f"{prefix}{name}.{tp.key}")
            for _variant, vcls in tp.registry.items():
                out |= _key_paths(vcls, f"{prefix}{name}.")
        elif _is_dataclass_type(tp):
            out |= _key_paths(tp, f"{prefix}{name}.")
    return out


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


_METAVARS: dict[Any, str] = {int: "N", float: "X", str: "TEXT", bool: "BOOL"}
CONFIG_GROUP = "config flags"  # the title of add_flags' argument groups: "config flags: train.*"
_SNAKE_FLAG = re.compile(r"--[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+")  # a dotted config flag, any spelling


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--a.b-c`` flag per leaf of the config tree (value parsed by the leaf's type), in one
    argument group per top-level section; :func:`describe_flags` writes their help when it is asked for."""
    groups: dict[str, Any] = {}
    for flag_path, path, tp in _leaves(cls):
        if flag_path in skip:
            continue
        section = path.split(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{CONFIG_GROUP}: {section}.*")
        origin = typing.get_origin(tp)
        kwargs: dict[str, Any] = {"dest": f"cfg:{path}", "default": argparse.SUPPRESS}
        kwargs["metavar"] = _METAVARS.get(tp, "VALUE")
        if origin is tuple:
            (item_tp, *_rest) = typing.get_args(tp)
            kwargs["nargs"] = "+"
            kwargs["type"] = item_tp if item_tp in (int, float) else str
            kwargs["metavar"] = _METAVARS.get(item_tp, "VALUE")
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs.pop("metavar")
        elif tp is bool:
            kwargs["type"] = _parse_bool
        elif tp in (int, float, str):
            kwargs["type"] = tp
        groups[section].add_argument(_flag(flag_path), **kwargs)


def kebab_flags(argv: list[str]) -> list[str]:
    """``argv`` with the snake_case spelling of a dotted config flag turned into the flag itself:
    ``--model.policy.history_dropout`` and ``--train.batch_size=64`` become ``--model.policy.history-dropout``
    and ``--train.batch-size=64``. Values, other flags and everything after ``--`` are kept as given."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        name, eq, value = arg.partition("=")
        if _SNAKE_FLAG.fullmatch(name):
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def _foreign(cls: type, leaf: str, node: dict[str, Any], where: str, path: str) -> ConfigError:
    """The error for a flag whose field the selected variant of a node does not have."""
    if not is_variant_type(cls):
        return ConfigError(f"{_flag(path)} does not match the config tree at {where.rstrip('.')}")
    key = cls.key  # type: ignore[attr-defined]
    family = family_of(cls)
    owners = _variant_owners(family, leaf)
    if not owners:
        return ConfigError(f"{_flag(path)} is not a setting of {where.rstrip('.')}")
    return ConfigError(
        f"{_flag(path)} belongs to the {' / '.join(owners)} {family.registry.family}, but {where}{key} is "
        f"{node[key]!r}; add {_flag(where + key)} {owners[0]} to switch"
    )


def _descend(root: type, data: dict[str, Any], parts: list[str], path: str) -> tuple[type, dict[str, Any], str]:
    """Follow ``parts`` from the root: the class of that node (variants by their name), its dict, its path."""
    cls, node, where = root, data, ""
    for part in parts:
        if part not in _field_names(cls):
            raise _foreign(cls, part, node, where, path)
        tp = _field_types(cls)[part]
        node, where = node[part], f"{where}{part}."
        cls = tp.registry.get(node[tp.key]) if is_variant_type(tp) else tp
    return cls, node, where


def _switch(root: type, data: dict[str, Any], path: str, name: str) -> None:
    """Select variant ``name`` at the node of name-key ``path``: its defaults plus the shared fields."""
    *parents, node_name, key = path.split(".")
    cls, parent, _where = _descend(root, data, parents, path)
    family = _field_types(cls)[node_name]
    old = parent[node_name]
    if old.get(key) != name:
        own = _field_names(family.registry.get(name))
        parent[node_name] = {key: name, **{k: v for k, v in old.items() if k in own and k != key}}


def apply_flags(cfg: C, args: argparse.Namespace) -> C:
    """Return a copy of ``cfg`` with every ``cfg:`` flag in ``args`` applied (revalidated).

    Variant switches come first (outer nodes before inner ones), then the values, each checked
    against the variant its node ends up with."""
    root = type(cfg)
    flags = {dest[4:]: value for dest, value in vars(args).items() if dest.startswith("cfg:")}
    switches = _key_paths(root) & set(flags)
    data = to_dict(cfg)
    for path in sorted(switches, key=lambda p: p.count(".")):
        _switch(root, data, path, flags[path])
    for path, value in flags.items():
        if path in switches:
            continue
        *parents, leaf = path.split(".")
        cls, node, where = _descend(root, data, parents, path)
        if leaf not in _field_names(cls):
            raise _foreign(cls, leaf, node, where, path)
        node[leaf] = list(value) if isinstance(value, list) else value
    return from_dict(root, data)


# --- help of the flags: descriptions from the source, values from a config ---------------------


@functools.cache
def _own_comments(cls: type) -> dict[str, str]:
    """Field name -> comment of the fields declared in the body of ``cls`` itself: the trailing
    ``# comment`` of the field's (last) line, else the comment lines directly above the field."""
    try:
        source = textwrap.dedent("".join(inspect.getsourcelines(cls)[0]))
    except (OSError, TypeError):  # no source to read (a class made at run time): no descriptions
        return {}
    trailing: dict[int, str] = {}
    alone: dict[int, str] = {}  # comment-only lines
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (trailing if tok.line[: tok.start[1]].strip() else alone)[tok.start[0]] = text
    out: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in body.body if isinstance(body, ast.ClassDef) else []:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            line = node.lineno - 1
            while line in alone:
                above.insert(0, alone[line])
                line -= 1
            out[node.target.id] = trailing.get(node.end_lineno or node.lineno) or " ".join(above)
    return out


def field_doc(cls: type, name: str) -> str:
    """The description of field ``name`` of ``cls``: its comment in the source of the class that
    declares it (a subclass redeclaring the field without a comment keeps its base's)."""
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            doc = _own_comments(klass).get(name, "")
            if doc:
                return doc
    return ""


@dataclasses.dataclass(frozen=True)
class _LeafDoc:
    text: str  # the description, tagged with the variants that have the leaf when not all do
    node: str = ""  # config path of the variant node the leaf belongs to ("": none)
    family: type[VariantConfig] | None = None  # that node's family base
    owners: tuple[str, ...] = ()  # the variants of that node that have the leaf (empty: every one)


def _leaf_docs(cls: type, prefix: str = "") -> dict[str, _LeafDoc]:
    """Config path -> description of every leaf under ``cls`` (variant nodes: their name key and the
    union of their variants' leaves, as :func:`_leaves`)."""
    out: dict[str, _LeafDoc] = {}
    names = _field_names(cls)
    for name, tp in _field_types(cls).items():
        if name not in names:
            continue
        path = f"{prefix}{name}"
        if is_variant_type(tp):
            out.update(_variant_docs(tp, path))
        elif _is_dataclass_type(tp):
            out.update(_leaf_docs(tp, f"{path}."))
        else:
            out[path] = _LeafDoc(field_doc(cls, name))
    return out


def _variant_docs(family: type[VariantConfig], path: str) -> dict[str, _LeafDoc]:
    """The leaves of the variant node at ``path``: a leaf not every variant has is tagged with those that
    do (``[binned / flow action head] ...``); variants describing it differently are each named."""
    names = family.registry.names()
    kind = family.registry.family
    key_path = f"{path}.{family.key}"
    choose = f"which {kind}: {', '.join(names)}; a flag tagged [NAME {kind}] belongs to that {kind} only"
    out = {key_path: _LeafDoc(choose, path, family)}
    per_leaf: dict[str, dict[str, str]] = {}
    for name, vcls in family.registry.items():
        for leaf, doc in _leaf_docs(vcls, f"{path}.").items():
            if leaf != key_path:
                per_leaf.setdefault(leaf, {})[name] = doc.text
    for leaf, docs in per_leaf.items():
        owners = tuple(docs) if len(docs) < len(names) else ()
        by_text: dict[str, list[str]] = {}  # description -> the variants giving it
        for name, text in docs.items():
            if text:
                by_text.setdefault(text, []).append(name)
        text = "; ".join(f"{' / '.join(ns)}: {t}" for t, ns in by_text.items()) if len(by_text) > 1 else ""
        text = text or next(iter(by_text), "")
        tag = f"[{' / '.join(owners)} {kind}] " if owners else ""
        out[leaf] = _LeafDoc(tag + text, path, family, owners)
    return out


def describe_leaves(cls: type) -> dict[str, str]:
    """Config path -> the description of every leaf of the config tree ``cls`` (what its flag's help says)."""
    return {path: doc.text for path, doc in _leaf_docs(cls).items()}


def show_value(value: Any) -> str:
    """A config value as it is written on the command line (``8 16``, ``true``, ``none``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(show_value(v) for v in value) or "(empty)"
    if isinstance(value, dict):
        return ",".join(f"{k}={show_value(v)}" for k, v in value.items()) or "(empty)"
    return str(value) if value != "" else '""'


def _dig(data: Any, parts: list[str]) -> Any:
    for part in parts:
        data = data[part]
    return data


def _default_note(root: type, data: dict[str, Any], path: str, doc: _LeafDoc) -> str:
    """``default: VALUE``: the leaf's value in ``data``; for a leaf of a variant ``data`` does not select,
    the default of each variant that has it and the variant selected."""
    *parents, leaf = path.split(".")
    try:
        node = _descend(root, data, parents, path)[1]
    except ConfigError:  # a node on the way is a variant without this branch
        node = {}
    if leaf in node:  # data holds the fields of the variants it selects, and only those
        return f"default: {show_value(node[leaf])}"
    if doc.family is None:
        return ""
    rest = path[len(doc.node) + 1 :].split(".")
    values = {o: show_value(_dig(to_dict(doc.family.registry.get(o)()), rest)) for o in doc.owners}
    kind = doc.family.registry.family
    shown = ", ".join(f"{o}: {v}" for o, v in values.items())
    if len(set(values.values())) == 1:
        shown = f"{next(iter(values.values()))} with {_flag(doc.node)} {' / '.join(values)}"
    selected = _dig(data, [*doc.node.split("."), doc.family.key])
    return f"default: {shown}; selected {kind}: {selected}"


def flag_help(cls: type, cfg: Any) -> dict[str, str]:
    """Flag -> help line of every config flag of the tree ``cls``: the field's description and its value
    in ``cfg`` (a field of a variant that ``cfg`` does not select: that variant's default)."""
    docs = _leaf_docs(cls)
    data = to_dict(cfg)
    out: dict[str, str] = {}
    for flag_path, path, _tp in _leaves(cls):
        doc = docs[path]
        text = doc.text
        if flag_path == path and doc.family is not None and path == f"{doc.node}.{doc.family.key}":
            text = f"the same as {_flag(doc.node)}"
        note = _default_note(cls, data, path, doc)
        out[_flag(flag_path)] = f"{text} ({note})" if note else text
    return out


def describe_flags(parser: argparse.ArgumentParser, cls: type, cfg: Any) -> None:
    """Write the help of the config flags :func:`add_flags` put in ``parser``: each field's description
    and its value in ``cfg``; each section's group is described by the section field's comment."""
    helps = flag_help(cls, cfg)
    for action in parser._actions:
        if not action.dest.startswith("cfg:"):  # not a config flag (--preset, --out, ...)
            continue
        for option in action.option_strings:
            if option in helps:
                action.help = helps[option].replace("%", "%%")  # argparse formats help with %
    for group in parser._action_groups:
        title = group.title or ""
        if title.startswith(f"{CONFIG_GROUP}: "):
            section = title.split(": ", 1)[1].removesuffix(".*")
            group.description = field_doc(cls, section).replace("%", "%%") or None
