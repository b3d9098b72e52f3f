"""Experiment configs: trees of dataclasses read from YAML plus ``key=value`` overrides.

A config is a ``@dataclass`` whose fields all carry a type annotation and a default (nested
sections through ``field(default_factory=...)``) and a trailing ``# comment`` that documents them::

    @dataclass
    class TrainCfg:
        lr: float = 3e-4  # Adam learning rate
        cell: Literal["gated", "gru"] = "gated"  # memory cell

    cfg = load_config(RootCfg, "configs/x.yaml", ["train.lr=1e-3", "env.kwargs.length=50"])
    save_config(cfg, run_dir / "config.yaml")  # load_config(RootCfg, that file) == cfg

Rules, in short:

- Missing keys keep their defaults. A partial section is laid over the section's default (the
  value the parent dataclass gives it), so ``train: {lr: 0.1}`` keeps every other ``train`` key.
- Unknown keys are errors naming the dotted key, the valid keys and the closest match. The one
  place unknown keys are allowed is inside free-form ``dict`` fields (e.g. env kwargs).
- Values are checked against the annotation: ``int`` -> ``float`` is converted, a float with a whole
  value (``1e6``) is accepted for an ``int``, ``bool`` is never a number, quoted numbers are text,
  ``X | None`` accepts ``null``, ``list[X]`` / ``tuple[X, ...]`` check every item, ``Literal``
  restricts the values, ``dict[str, Any]`` is taken as is, nested dataclasses take mappings,
  ``Path`` and ``Enum`` fields take text (an Enum also its value).
- YAML is read with the safe loader, with one fix: ``1e-3`` is a float (PyYAML alone reads it as a
  string); duplicate keys in a mapping are errors.
- Overrides ``a.b.c=value`` are applied in order before validation. The value is parsed as YAML,
  except that a field typed ``str`` (or ``Path``) takes the text after ``=`` verbatim (``name=123``
  is ``"123"``; for ``str | None`` a ``null`` still gives None). Setting a section to a mapping
  (``env={id: X}``) merges into it; setting a free-form dict (``env.kwargs={a: 1}``) replaces it;
  ``env.kwargs.a=1`` sets one key of the dict as it stands (file value or default).

- Value ranges: a root config may call :func:`check_bounds` from ``__post_init__`` with a table
  ``{dotted key: (lowest, highest or None)}``; a value outside is an error naming the key.

Every error is a :class:`smt_rl.errors.ConfigError` whose message names the key and the fix.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import enum
import functools
import inspect
import io
import math
import re
import textwrap
import tokenize
import types
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from smt_rl.errors import ConfigError
from smt_rl.io import atomic_write_bytes

__all__ = [
    "apply_overrides",
    "check_bounds",
    "config_from_dict",
    "config_to_dict",
    "describe_config",
    "load_config",
    "save_config",
]

T = TypeVar("T")
_NoneType = type(None)
_MISSING: Any = dataclasses.MISSING

# --------------------------------------------------------------------------------------------
# YAML: the safe loader/dumper, with YAML 1.2 floats (``1e-3``) and no silent duplicate keys.

_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_RE = re.compile(
    r"""^(?:
        [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
      | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
      | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
      | [-+]?\.(?:inf|Inf|INF)
      | \.(?:nan|NaN|NAN)
    )$""",
    re.X,
)


def _use_yaml12_floats(klass: type) -> type:
    klass.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    klass.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))
    return klass


@_use_yaml12_floats
class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key_node.value!r} twice (remove one of them)",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


@_use_yaml12_floats
class _Dumper(yaml.SafeDumper):
    # The resolvers of _Loader, so a string such as "1e-3" is written quoted and reads back as text.
    def ignore_aliases(self, data):
        return True


def _yaml_error_text(err: yaml.YAMLError) -> tuple[str, str]:
    """(" at line L, column C", "what is wrong") for a PyYAML error."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or str(err)
        if err.problem and err.context:
            start = err.context_mark
            since = f" that starts at line {start.line + 1}" if start and start != mark else ""
            problem += f" ({err.context}{since})"
        return where, problem
    return "", str(err)


def _read_yaml(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file not found: {p} (check the path; relative paths start at {Path.cwd()})"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"cannot read config file {p}: {err}; give a readable UTF-8 YAML file"
        ) from err
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        where, problem = _yaml_error_text(err)
        raise ConfigError(
            f"config file {p}: invalid YAML{where}: {problem}. Fix the syntax there "
            "(indentation, a ': ' after each key, matching quotes and brackets)"
        ) from None


# --------------------------------------------------------------------------------------------
# Introspection of annotations and dataclasses.


def _check_dataclass(cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")


@functools.cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """name -> (field, resolved annotation) for the fields that ``__init__`` takes, in order."""
    try:
        hints = get_type_hints(cls)
    except Exception as err:
        raise TypeError(
            f"cannot resolve the type annotations of {cls.__qualname__}: {err!r}; define config "
            "dataclasses at module level and import every name their annotations use"
        ) from err
    return {f.name: (f, hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        try:
            return f.default_factory()
        except Exception:
            return _MISSING
    return _MISSING


def _default_instance(cls: type) -> Any:
    try:
        return cls()
    except Exception:
        return _MISSING


def _is_union(tp: Any) -> bool:
    origin = get_origin(tp)
    return origin is Union or origin is types.UnionType


def _arms(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if _is_union(tp) else (tp,)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _dataclass_arm(tp: Any) -> type | None:
    """The dataclass in ``tp`` (``Sub`` or ``Sub | None``), if there is exactly one."""
    found = [a for a in _arms(tp) if _is_dataclass_type(a)]
    return found[0] if len(found) == 1 else None


_MAPPING_ORIGINS = (dict, Mapping, MutableMapping)
_LIST_ORIGINS = (list, Sequence, MutableSequence)


def _mapping_args(tp: Any) -> tuple[Any, Any] | None:
    """(key type, value type) when ``tp`` (or ``tp | None``) is a dict annotation, else None."""
    arms = [a for a in _arms(tp) if a is not _NoneType]
    if len(arms) != 1:
        return None
    tp = arms[0]
    if tp in _MAPPING_ORIGINS or get_origin(tp) in _MAPPING_ORIGINS:
        args = get_args(tp)
        return (args[0], args[1]) if len(args) == 2 else (Any, Any)
    return None


def _is_text_type(tp: Any) -> bool:
    return tp is str or (isinstance(tp, type) and issubclass(tp, PurePath))


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "Any"
    if tp is _NoneType or tp is None:
        return "None"
    if tp is Ellipsis:
        return "..."
    if _is_union(tp):
        return " | ".join(_type_name(a) for a in get_args(tp))
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is not None:
        args = get_args(tp)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    return getattr(tp, "__name__", str(tp))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _plain(value: Any) -> Any:
    """Deep copy with every mapping as a ``dict`` (lists and tuples keep their type)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return copy.deepcopy(value)


# --------------------------------------------------------------------------------------------
# Errors.


class _TypeMismatch(ConfigError):
    """A value of the wrong type at ``key`` (unions catch it to try their other arms)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def _show_value(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _looks_numeric(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def _hint(tp: Any, value: Any, key: str) -> str:
    arms = [a for a in _arms(tp) if a is not _NoneType]
    literals = [a for arm in arms if get_origin(arm) is Literal for a in get_args(arm)]
    enums = [a for a in arms if isinstance(a, type) and issubclass(a, enum.Enum)]
    literals += [m.value for e in enums for m in e]
    if literals:
        hint = "use one of " + ", ".join(repr(a) for a in literals)
        close = difflib.get_close_matches(str(value), [str(a) for a in literals], n=1)
        return f"{hint} (did you mean {close[0]!r}?)" if close else hint
    if any(_dataclass_arm(a) for a in arms) or _mapping_args(tp) is not None:
        if value is None:
            return "give it keys, or delete the key if it has none (its default is then used)"
        return "give a mapping (key: value lines under this key, or {k: v} in an override)"
    example = "" if "[" in key or " " in key else f", e.g. {key}="
    if value is None:
        return f"give a {_type_name(tp)}; null is not allowed here"
    if isinstance(value, bool) and (int in arms or float in arms):
        return "true/false is not a number here; give a number"
    if bool in arms:
        return "use true or false"
    if (int in arms or float in arms) and isinstance(value, str):
        if _looks_numeric(value):
            return "write the number without quotes"
        return f"give a number{example}{1 if int in arms else 0.5}" if example else "give a number"
    if int in arms and isinstance(value, float):
        return "give a whole number"
    if str in arms and not isinstance(value, str):
        return "quote it in the YAML file to make it text (e.g. '123')"
    return f"give a value of type {_type_name(tp)}"


def _mismatch(key: str, tp: Any, value: Any, expected: str | None = None) -> _TypeMismatch:
    where = f"config key '{key}'" if key else "config"
    expected = expected or _type_name(tp)
    return _TypeMismatch(
        f"{where}: expected {expected}, got {_show_value(value)}. Fix: {_hint(tp, value, key)}.",
        key,
    )


def _leaf_paths(cls: type, name: str, prefix: str = "", seen: tuple = ()) -> list[str]:
    """Dotted keys below ``cls`` whose last part is ``name`` (to point at misplaced keys)."""
    found = []
    for fname, (_, tp) in _fields(cls).items():
        sub = _dataclass_arm(tp)
        if sub is not None and sub not in seen:
            found += _leaf_paths(sub, name, _join(prefix, fname), (*seen, cls))
        elif fname == name and prefix:
            found.append(_join(prefix, fname))
    return found


def _unknown_key(full_key: str, section: type, section_path: str, context: str = "") -> ConfigError:
    name = full_key.rsplit(".", 1)[-1]
    valid = list(_fields(section))
    msg = f"{context}: " if context else ""
    msg += f"unknown config key '{full_key}'."
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    elsewhere = [] if close else _leaf_paths(section, name)
    if close or elsewhere:
        guess = _join(section_path, close[0]) if close else _join(section_path, elsewhere[0])
        msg += f" Did you mean '{guess}'?"
    where = f"under '{section_path}'" if section_path else "at the top level"
    msg += f" Valid keys {where}: {', '.join(valid) or '(none)'}."
    return ConfigError(msg)


# --------------------------------------------------------------------------------------------
# Building and checking.


def _exact_kind(value: Any, tp: Any) -> bool:
    """Whether ``value`` is already of ``tp``'s kind, without any conversion (orders union arms)."""
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in get_args(tp))
    if _is_dataclass_type(tp):
        return isinstance(value, (tp, Mapping))
    if origin is not None:
        if origin in _LIST_ORIGINS or origin is tuple:
            return isinstance(value, (list, tuple))
        return isinstance(origin, type) and isinstance(value, origin)
    if tp in (int, float):
        return type(value) is tp
    return isinstance(tp, type) and isinstance(value, tp)


def _coerce(value: Any, tp: Any, key: str, base: Any = None) -> Any:
    """``value`` checked against annotation ``tp`` (and converted where safe), else ConfigError."""
    if tp is Any or tp is object:
        return _plain(value)
    if _is_union(tp):
        return _coerce_union(value, tp, key, base)
    if tp is _NoneType or tp is None:
        if value is None:
            return None
        raise _mismatch(key, tp, value)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return allowed
        raise _mismatch(key, tp, value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _build(tp, value, key, base if isinstance(base, tp) else None)
        raise _mismatch(key, tp, value, f"a mapping of {tp.__name__} keys")
    mapping = _mapping_args(tp)
    if mapping is not None:
        if not isinstance(value, Mapping):
            raise _mismatch(key, tp, value)
        ktp, vtp = mapping
        if vtp is Any:
            return _plain(value)  # free-form: taken as is
        return {
            _coerce(k, ktp, f"{key} (the key {k!r})"): _coerce(v, vtp, _join(key, str(k)))
            for k, v in value.items()
        }
    if origin in _LIST_ORIGINS or tp in (list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise _mismatch(key, tp, value)
        item = args[0] if args else Any
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _mismatch(key, tp, value)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
        if args == ((),):
            args = ()
        if len(value) != len(args):
            raise _mismatch(key, tp, value, f"{_type_name(tp)} ({len(args)} items)")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _mismatch(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _mismatch(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _mismatch(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _mismatch(key, tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if type(value) is type(member.value) and value == member.value:
                return member
        if isinstance(value, str) and value in tp.__members__:
            return tp[value]
        choices = ", ".join(repr(m.value) for m in tp)
        raise _mismatch(key, tp, value, f"{tp.__name__} (one of {choices})")
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
        raise _mismatch(key, tp, value, f"{tp.__name__} (a path as text)")
    check = origin if origin is not None else tp
    if isinstance(check, type):
        if isinstance(value, check):
            return value
        raise _mismatch(key, tp, value)
    return value  # an annotation this module does not know (e.g. a Callable): unchecked


def _coerce_union(value: Any, tp: Any, key: str, base: Any) -> Any:
    arms = get_args(tp)
    if value is None and _NoneType in arms:
        return None
    candidates = [a for a in arms if a is not _NoneType]
    # Arms the value already belongs to go first, so ``int | float`` keeps 3 an int.
    candidates.sort(key=lambda a: not _exact_kind(value, a))
    deeper: ConfigError | None = None
    for arm in candidates:
        try:
            return _coerce(value, arm, key, base)
        except _TypeMismatch as err:
            if err.key != key and deeper is None:
                deeper = err  # e.g. a bad list item: more useful than "expected A | B"
    if deeper is not None:
        raise deeper
    raise _mismatch(key, tp, value)


def _build(cls: type, data: Any, path: str, base: Any) -> Any:
    if not isinstance(data, Mapping):
        hint = f"a mapping of {cls.__name__} keys"
        raise _mismatch(path, cls, data, hint)
    fields = _fields(cls)
    for name in data:
        if not isinstance(name, str) or name not in fields:
            raise _unknown_key(_join(path, str(name)), cls, path)
    kwargs = {}
    for name, (f, tp) in fields.items():
        key = _join(path, name)
        if name in data:
            sub_base = None
            if _dataclass_arm(tp) is not None:
                sub_base = getattr(base, name) if base is not None else _field_default(f)
            kwargs[name] = _coerce(data[name], tp, key, sub_base)
        elif base is None and f.default is _MISSING and f.default_factory is _MISSING:
            raise ConfigError(
                f"config key '{key}' is required (it has no default): set it in the config "
                f"file or with the override {key}=..."
            )
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        where = f"config section '{path}'" if path else "config"
        raise ConfigError(f"{where} ({cls.__name__}) rejected its values: {err}") from err


def config_from_dict(
    cls: type[T], data: Mapping[str, Any], *, path: str = "", migrate: bool = False
) -> T:
    """Build ``cls`` from a (possibly partial) nested mapping; see the module notes for the rules.

    ``path`` is the dotted key of ``data`` inside a larger config (used in error messages).
    """
    _check_dataclass(cls)
    try:
        return _build(cls, data, path, None)
    except _TypeMismatch as err:
        raise ConfigError(str(err)) from None  # the public type, without the internal frames


# --------------------------------------------------------------------------------------------
# Overrides.


@dataclasses.dataclass
class _Step:
    tp: Any  # annotation of the value at this part of the key (Any inside free-form data)
    default: Any  # its default value, or _MISSING


def _override_steps(cls: type, parts: list[str], override: str) -> list[_Step]:
    steps = []
    tp: Any = cls
    default = _default_instance(cls)
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        section = _dataclass_arm(tp)
        if section is not None:
            fields = _fields(section)
            if part not in fields:
                raise _unknown_key(
                    ".".join(parts[: i + 1]), section, here, f"override {override!r}"
                )
            f, tp = fields[part]
            default = getattr(default, part) if isinstance(default, section) else _field_default(f)
        elif tp is Any or _mapping_args(tp) is not None:
            tp = Any if tp is Any else _mapping_args(tp)[1]
            default = default.get(part, _MISSING) if isinstance(default, Mapping) else _MISSING
        else:
            raise ConfigError(
                f"override {override!r}: '{here}' is of type {_type_name(tp)}, which has no "
                f"sub-keys; set it whole, e.g. {here}=<{_type_name(tp)}>"
            )
        steps.append(_Step(tp, default))
    return steps


def _fits(value: Any, tp: Any) -> bool:
    try:
        _coerce(value, tp, "")
    except ConfigError:
        return False
    return True


def _override_value(override: str, text: str, tp: Any) -> Any:
    """The value of ``key=text`` for a field annotated ``tp`` (None: no schema known)."""
    try:
        parsed, problem = yaml.load(text, Loader=_Loader), None
    except yaml.YAMLError as err:
        parsed, problem = None, "".join(_yaml_error_text(err)[::-1])
    if tp is not None and tp is not Any:
        arms = _arms(tp)
        if problem is None and parsed is None and _NoneType in arms:
            return None
        if any(_is_text_type(a) for a in arms):
            others = [a for a in arms if not _is_text_type(a) and a is not _NoneType]
            if problem is None and any(_exact_kind(parsed, a) and _fits(parsed, a) for a in others):
                return parsed
            return text  # text fields take the characters after '=' as they are
        if problem is None and _fits(parsed, tp):
            return parsed
        for arm in arms:
            if get_origin(arm) is Literal and text in get_args(arm):
                return text  # e.g. Literal["on", "off"], which YAML would read as booleans
            if arm in (int, float) and (problem is not None or isinstance(parsed, str)):
                for candidate in (text, parsed):  # ``n=1e-3`` or ``n='3'``: numbers as text
                    try:
                        return arm(candidate.strip())
                    except (AttributeError, ValueError):
                        pass
    if problem is not None:
        raise ConfigError(
            f"override {override!r}: the value is not valid YAML ({problem}); fix it or quote it"
        )
    return parsed


def _merge_section(dst: dict, src: Mapping, section: type) -> None:
    fields = _fields(section)
    for k, v in src.items():
        sub = _dataclass_arm(fields[k][1]) if k in fields else None
        if sub is not None and isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _merge_section(dst[k], v, sub)
        else:
            dst[k] = _plain(v)


def _apply_one(data: dict, override: Any, cls: type | None) -> None:
    if not isinstance(override, str):
        raise ConfigError(f"override {override!r} is not a string; write it as key=value")
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(
            f"override {override!r} has no '=': write it as key=value, e.g. seed=1 or env.id=X"
        )
    parts = key.split(".")
    if not key or not all(p.strip() == p and p for p in parts):
        raise ConfigError(
            f"override {override!r}: the key {key!r} is empty or has an empty or padded part; "
            "write a dotted key such as env.kwargs.length=50"
        )
    steps = _override_steps(cls, parts, override) if cls is not None else None
    value = _override_value(override, text, steps[-1].tp if steps else None)
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            seed = steps[i].default if steps else None
            free_form = steps is not None and _dataclass_arm(steps[i].tp) is None
            child = _plain(seed) if free_form and isinstance(seed, Mapping) else {}
            node[part] = child
        elif not isinstance(child, dict):
            raise ConfigError(
                f"override {override!r}: '{'.'.join(parts[: i + 1])}' holds "
                f"{_show_value(child)}, which has no sub-keys; set it whole instead"
            )
        node = child
    last = parts[-1]
    section = _dataclass_arm(steps[-1].tp) if steps else None
    if section is not None and isinstance(value, Mapping) and isinstance(node.get(last), dict):
        _merge_section(node[last], value, section)
    else:
        node[last] = _plain(value)


def apply_overrides(
    data: Mapping[str, Any] | None, overrides: Sequence[str], *, cls: type | None = None
) -> dict[str, Any]:
    """A copy of ``data`` with each ``"a.b.c=value"`` of ``overrides`` applied in order.

    With ``cls`` (the config dataclass) keys are checked against it, ``str`` fields keep the raw
    text, and a dotted key into a free-form dict starts from that dict's default. Without ``cls``
    values are plain YAML and any key is accepted. Validation is left to :func:`config_from_dict`.
    """
    if isinstance(overrides, (str, bytes)):
        raise ConfigError(
            f"overrides must be a list of 'key=value' strings, not one string: {overrides!r}"
        )
    if cls is not None:
        _check_dataclass(cls)
    result = _plain(data) if data is not None else {}
    if not isinstance(result, dict):
        raise ConfigError(f"config data must be a mapping, got {_show_value(data)}")
    for override in overrides:
        _apply_one(result, override, cls)
    return result


# --------------------------------------------------------------------------------------------
# Public entry points.


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read ``path`` (YAML; None: defaults only), apply ``overrides`` in order, validate."""
    _check_dataclass(cls)
    data: Any = {}
    if path is not None:
        data = _read_yaml(path)
        if data is None:  # an empty file
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config file {path}: expected a mapping of keys at the top level "
                f"('key: value' lines), got {_show_value(data)}"
            )
    return config_from_dict(cls, apply_overrides(data, overrides, cls=cls))


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
    if isinstance(value, Mapping):
        return {_to_plain(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _to_plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    return copy.deepcopy(value)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """``cfg`` as plain nested dicts and lists (tuples become lists, Enums their value, Paths
    text), fields in declaration order; ready for YAML or JSON. Fields with ``init=False`` are left
    out (they are derived, and loading would refuse them)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a dataclass instance, got {cfg!r}")
    return _to_plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write ``config_to_dict(cfg)`` to ``path`` as YAML, atomically, keys in field order.

    ``load_config(type(cfg), path)`` gives back ``cfg`` (free-form dict values excepted where they
    hold tuples, which come back as lists).
    """
    data = config_to_dict(cfg)
    try:
        text = yaml.dump(
            data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
        )
    except yaml.YAMLError as err:
        raise ConfigError(
            f"cannot save the config to {path}: a value is not plain data ({err}); config values "
            "must be text, numbers, booleans, null, lists or mappings"
        ) from err
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Listing for --help.


def _own_field_docs(klass: type) -> dict[str, str]:
    """name -> documentation comment, read from the class source (empty when unavailable)."""
    try:
        source = textwrap.dedent(inspect.getsource(klass))
        tree = ast.parse(source)
        comments: dict[int, tuple[str, bool]] = {}
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                full_line = not tok.line[: tok.start[1]].strip()
                comments[tok.start[0]] = (tok.string.lstrip("#").strip(), full_line)
    except Exception:
        return {}
    classdef = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if classdef is None:
        return {}
    docs = {}
    for node in classdef.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        end = node.end_lineno or node.lineno
        trailing = [comments[n][0] for n in range(node.lineno, end + 1) if n in comments]
        if trailing:
            docs[node.target.id] = " ".join(trailing)
            continue
        above, line = [], node.lineno - 1  # else a block of full-line comments just above
        while line in comments and comments[line][1]:
            above.insert(0, comments[line][0])
            line -= 1
        if above:
            docs[node.target.id] = " ".join(above)
    return docs


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _show_default(value: Any) -> str:
    if value is _MISSING:
        return "(required)"
    try:
        text = yaml.dump(
            _to_plain(value), Dumper=_Dumper, default_flow_style=True, width=10**9
        ).strip()
        text = text.removesuffix("\n...").strip()
    except Exception:
        text = repr(value)
    return text if len(text) <= 48 else text[:45] + "..."


def _describe_rows(cls: type, instance: Any, prefix: str, rows: list, stack: tuple) -> None:
    docs = _field_docs(cls)
    for name, (f, tp) in _fields(cls).items():
        key = _join(prefix, name)
        default = getattr(instance, name) if isinstance(instance, cls) else _field_default(f)
        sub = _dataclass_arm(tp)
        doc = docs.get(name, "")
        if sub is not None and sub not in stack:
            shown = "" if isinstance(default, sub) else _show_default(default)
            rows.append((key, _type_name(tp), shown, doc))
            inner = default if isinstance(default, sub) else _default_instance(sub)
            _describe_rows(sub, inner, key, rows, (*stack, sub))
        else:
            rows.append((key, _type_name(tp), _show_default(default), doc))


def describe_config(cls: type) -> str:
    """Every dotted key of ``cls`` with its type, default and documentation comment, one a line.

    Sections (nested dataclasses) get a line of their own, with no default, before their keys.
    """
    _check_dataclass(cls)
    rows: list[tuple[str, str, str, str]] = []
    _describe_rows(cls, _default_instance(cls), "", rows, (cls,))
    if not rows:
        return ""
    wk, wt, wd = (max(len(r[i]) for r in rows) for i in range(3))
    lines = []
    for key, tname, default, doc in rows:
        line = f"{key:<{wk}}  {tname:<{wt}}  {default:<{wd}}"
        lines.append((f"{line}  # {doc}" if doc else line).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Value ranges.


def check_bounds(cfg: Any, bounds: dict[str, tuple[float, float | None]]) -> None:
    """Raise :class:`ConfigError` naming the first dotted key of ``bounds`` whose value in
    ``cfg`` lies outside its ``(lowest, highest)`` range (keys ``cfg`` lacks are skipped)."""
    for key, (low, high) in bounds.items():
        try:
            value = functools.reduce(getattr, key.split("."), cfg)
        except AttributeError:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # the type check already ran; None means "not set"
        if math.isnan(value) or value < low or (high is not None and value > high):
            wanted = f">= {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(
                f"config key '{key}' must be {wanted}, got {value}. Fix: set {key}= to a value "
                f"{wanted} (in the config file or as an override)."
            )
