"""Experiment configs: pydantic v2 models read from YAML plus dotted ``key=value`` overrides.

A config derives from :class:`ConfigModel`; each field declares its type, bounds (``Count``,
``Fraction``...) and a description: ``lr: NonNegative = Field(3e-4, description="Adam lr")``.
``load_config(Cfg, "configs/x.yaml", ["train.lr=1e-3"])``; ``save_config(cfg, path)``.

Why pydantic v2, not OmegaConf: bounds and descriptions are declared on the fields (no bounds tables
keyed by strings, no help scraped from comments), strict typing (OmegaConf takes ``'0.1'`` for a
float and has no bounds), a JSON schema for free, maintained, already a common dependency. Kept by
hand here: YAML reading (YAML 1.2 floats: ``1e-3`` is a float; duplicate keys refused), dotted
overrides (the value is YAML, but a ``str`` field takes the text after ``=`` as is; ``section={k:
v}`` merges, ``dict_field={k: v}`` replaces, ``dict_field.k=v`` sets one key), messages naming the
dotted key and the fix (always a :class:`smt_rl.errors.ConfigError`), renamed keys, key listing.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from smt_rl.errors import ConfigError
from smt_rl.io import atomic_write_bytes

Count = Annotated[int, Field(ge=1)]  # a size, or a count of things that must exist
NonNegativeInt = Annotated[int, Field(ge=0)]  # a count of optional work (0: none)
NonNegative = Annotated[float, Field(ge=0)]  # a rate, a weight, a scale
Fraction = Annotated[float, Field(ge=0, le=1)]  # a share or a probability
C = TypeVar("C", bound=BaseModel)

# old dotted key -> new one: a user's old key is refused with the new name; configs stored by
# earlier versions (checkpoints, run folders) are migrated: config_from_dict(..., migrate=True)
RENAMED = {
    "smt.dmt_updates": "offline_dmt.updates",
    "smt.dmt_lr": "offline_dmt.lr",
    "smt.dmt_revert_if_worse": "offline_dmt.revert_if_worse",
    "dmt.enabled": "onpolicy_dmt.enabled",
    "dmt.optimizer": "onpolicy_dmt.optimizer",
    "dmt.lr": "onpolicy_dmt.lr",
    "dmt.updates_per_rollout": "onpolicy_dmt.updates_per_rollout",
    "dmt.batch_size": "onpolicy_dmt.batch_size",
    "dmt.replay_size": "onpolicy_dmt.replay_size",
    "dmt.anchor_coef": "onpolicy_dmt.anchor_coef",
    "dmt.teacher": "online_smt.enabled",
    "dmt.teacher_lr": "online_smt.lr",
    "dmt.teacher_batch_episodes": "online_smt.batch_size",
    "dmt.teacher_buffer_episodes": "online_smt.capacity_episodes",
    "online_teacher.enabled": "online_smt.enabled",
    "online_teacher.lr": "online_smt.lr",
    "online_teacher.batch_episodes": "online_smt.batch_size",
    "online_teacher.buffer_episodes": "online_smt.capacity_episodes",
    "dmt": "onpolicy_dmt",  # the old sections themselves, after their keys
    "online_teacher": "online_smt",
}
RENAMED_VALUES = {"dmt.teacher": {"continued": True, "frozen": False}}  # old value -> new value
# keys that are gone, with what to use instead: a user's is refused, a stored one dropped
REMOVED = {
    "dmt.teacher_updates_per_rollout": "online_smt.updates_per_step (SMT updates per env step)",
    "online_teacher.updates_per_rollout": "online_smt.updates_per_step (SMT updates per env step)",
}


class ConfigModel(BaseModel):
    """Base of every config: strict types, declared bounds, no unknown keys. Build configs with
    :func:`load_config` / :func:`config_from_dict` (a bad value there, or assigned later, raises
    ConfigError); the constructor is for code and raises pydantic's ValidationError."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )

    def __setattr__(self, name: str, value: Any) -> None:
        with _config_errors(type(self)):
            super().__setattr__(name, value)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_float_to_int(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML writes large counts as ``1e6``: a float with a whole value fills an int field."""
        is_int = int in _arms(cls.model_fields[str(info.field_name)].annotation)
        return int(value) if is_int and isinstance(value, float) and value.is_integer() else value


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [(k.tag, k.value, k.start_mark) for k, _ in node.value]
        for i, (tag, key, mark) in enumerate(keys):
            if (tag, key) in [k[:2] for k in keys[:i]] and not tag.endswith(":merge"):
                raise yaml.MarkedYAMLError(
                    problem=f"found the key {key!r} twice", problem_mark=mark
                )
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """The safe dumper; with the loader's resolvers, text such as ``"1e-3"`` is written quoted."""


_FLOAT = "tag:yaml.org,2002:float"
_FLOAT_RE = r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"""
for _klass in (_Loader, _Dumper):  # YAML 1.2 floats: ``1e-3`` is a float, not text
    _klass.yaml_implicit_resolvers = {
        c: [r for r in rs if r[0] != _FLOAT]
        for c, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _klass.add_implicit_resolver(_FLOAT, re.compile(_FLOAT_RE, re.X), list("-+0123456789."))


def _yaml(text: str, where: str) -> Any:
    """``text`` read as YAML; a ConfigError names ``where``, the line, column and problem."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem, context = getattr(err, "problem", None), getattr(err, "context", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem, context = (
            (problem, f" ({context})") if problem and context else (problem or context or err, "")
        )
        raise ConfigError(
            f"{where}: invalid YAML{at}: {problem}{context}. Fix the syntax (indentation, ': ' "
            "after keys, matching quotes and brackets)"
        ) from None


def _read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (``{}`` for an empty file)."""
    try:
        data = _yaml(Path(path).read_text(encoding="utf-8"), f"config file {path}")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (relative to {Path.cwd()})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys, got {_show(data)}")
    return data or {}


def _lookup(data: Any, parts: Sequence[str]) -> Any:
    """The value at ``parts`` in nested mappings (``...`` when absent)."""
    for part in parts:
        if not isinstance(data, Mapping) or part not in data:
            return ...
        data = data[part]
    return data


def _refuse_renamed(data: Mapping) -> None:
    """ConfigError giving the new name of the first renamed (or removed) key ``data`` uses."""
    for old, instead in REMOVED.items():
        if _lookup(data, old.split(".")) is not ...:
            raise ConfigError(f"{old} is gone; use {instead} (see --list-keys)")
    for old, new in RENAMED.items():
        if _lookup(data, old.split(".")) is not ...:
            values = RENAMED_VALUES.get(old, {}).items()
            moves = [f"{old}: {v} is now {new}: {_flow(n)}" for v, n in values]
            raise ConfigError(f"{'; '.join(moves) or f'{old} was renamed {new}'} (see --list-keys)")


def migrate_renamed(data: Mapping) -> dict[str, Any]:
    """A copy of ``data`` (a config stored by an earlier version) with its removed keys dropped and
    its renamed keys moved to their new place; a value already at the new key wins."""
    data = copy.deepcopy(dict(data))
    for old in REMOVED:
        *head, last = old.split(".")
        parent = _lookup(data, head)
        if isinstance(parent, dict):
            parent.pop(last, None)
    for old, new in RENAMED.items():
        *head, last = old.split(".")
        parent = _lookup(data, head)
        if isinstance(parent, dict) and last in parent:
            value = parent.pop(last)
            if isinstance(value, str):
                value = RENAMED_VALUES.get(old, {}).get(value, value)
            *new_head, new_last = new.split(".")
            if value != {}:  # an old section emptied by the moves above is dropped
                section = functools.reduce(lambda d, k: d.setdefault(k, {}), new_head, data)
                section.setdefault(new_last, value)
    return data


def apply_overrides(
    data: Mapping[str, Any] | None, overrides: Sequence[str], cls: type[BaseModel] | None = None
) -> dict[str, Any]:
    """A copy of ``data`` with each ``"a.b.c=value"`` of ``overrides`` applied in order. With the
    config class ``cls`` the copy starts from its defaults and ``str`` fields take the raw text;
    without it every value is YAML. :func:`config_from_dict` checks the keys and values."""
    if isinstance(overrides, (str, bytes)):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, not {overrides!r}")
    tree = _with_defaults(cls, data or {}) if cls else copy.deepcopy(dict(data or {}))
    for override in overrides:
        parts, value = _parse_override(str(override), cls)
        node = tree
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {override!r}: {where!r} holds {_show(node)}, not keys")
        _merge(node, {parts[-1]: value}, _annotation_at(cls, parts[:-1]) if cls else Any)
    return tree


def _parse_override(override: str, cls: type[BaseModel] | None) -> tuple[list[str], Any]:
    """The key parts and the value of ``a.b=value``: YAML, or the raw text for a str field."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p and p.strip() == p for p in parts):
        raise ConfigError(
            f"override {override!r}: no '=' or an empty key part; write key=value with a dotted "
            "key, e.g. seed=1 or env.kwargs.length=50"
        )
    arms = _arms(_annotation_at(cls, parts) if cls else Any)
    if type(None) in arms and text.strip() in ("", "~", "null", "Null", "NULL"):
        return parts, None
    return parts, text if str in arms else _yaml(text, f"override {override!r}")


def _merge(dst: dict[str, Any], src: Mapping, cls: Any) -> dict[str, Any]:
    """Lay ``src`` over ``dst`` (the data of a ``cls``) in place: sections merge key by key, other
    values (free-form dicts included) replace."""
    for key, value in src.items():
        sub = _annotation_at(cls, [key])
        if _is_model(sub) and isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, sub)
        else:
            dst[key] = copy.deepcopy(value)
    return dst


def _with_defaults(cls: type[BaseModel], data: Any) -> dict[str, Any]:
    """``data`` laid over the defaults of ``cls``, once renamed keys are refused."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config data must be a mapping of keys, got {_show(data)}")
    _refuse_renamed(data)
    return _merge(config_to_dict(cls()), data, cls)


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, migrate: bool = False) -> C:
    """``cls`` built from a (partial) nested mapping. ``migrate``: ``data`` was stored by this
    library (checkpoint, run folder): keys renamed since move to their new place."""
    if migrate and isinstance(data, Mapping):
        data = migrate_renamed(data)
    with _config_errors(cls):
        return cls.model_validate(_with_defaults(cls, data))


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (YAML; None: defaults only), apply ``overrides`` in order, validate."""
    data = _read_yaml(path) if path is not None else {}
    return config_from_dict(cls, apply_overrides(data, overrides, cls=cls))


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """``cfg`` as plain JSON-ready dicts and lists, keys in field order."""
    return cfg.model_dump(mode="json")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write ``cfg`` to ``path`` as YAML, atomically; ``load_config(type(cfg), path) == cfg``."""
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def _config_errors(cls: type[BaseModel]) -> Iterator[None]:
    """Turn pydantic's ValidationError into a ConfigError naming the first three problems."""
    try:
        yield
    except ValidationError as err:
        problems = [_problem(cls, p) for p in err.errors()]
        more = [f"({len(problems) - 3} more not shown)"] if len(problems) > 3 else []
        raise ConfigError("\n".join(problems[:3] + more)) from None


_FIXES = {  # pydantic error type -> what to do
    "int_type": "give a whole number",
    "float_type": "give a number",
    "bool_type": "use true or false",
    "string_type": "quote it in the YAML file to make it text (e.g. '123')",
    "finite_number": "give a finite number (not .inf or .nan)",
    "dict_type": "give a mapping (key: value lines under the key, or {k: v} in an override)",
    "too_short": "give at least one item",
}


def _problem(cls: type[BaseModel], problem: Any) -> str:
    """One pydantic error as ``config key 'a.b': what is wrong. Fix: what to do.``"""
    loc, kind, value, ctx = problem["loc"], problem["type"], problem["input"], problem.get("ctx")
    key, tp, section = _dotted(loc), _annotation_at(cls, loc), _annotation_at(cls, loc[:-1])
    if ctx and isinstance(ctx.get("error"), ConfigError):  # a model validator's own message
        return str(ctx["error"])
    if kind == "extra_forbidden":
        valid = list(section.model_fields) if _is_model(section) else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        guess = f" Did you mean '{_dotted((*loc[:-1], *close))}'?" if close else ""
        where = f"under '{_dotted(loc[:-1])}'" if loc[:-1] else "at the top level"
        return f"unknown config key '{key}'.{guess} Valid keys {where}: {', '.join(valid)}."
    if kind.startswith(("greater_than", "less_than")):
        metadata = section.model_fields[loc[-1]].metadata
        bounds = {op: getattr(m, op) for m in metadata for op in ("ge", "le") if hasattr(m, op)}
        wanted = " and ".join(f"{'>=' if op == 'ge' else '<='} {v}" for op, v in bounds.items())
        if len(bounds) == 2:
            wanted = f"between {bounds['ge']} and {bounds['le']}"
        return f"config key '{key}' must be {wanted}, got {value}. Fix: set a value {wanted}."
    fix = _FIXES["dict_type"] if _is_model(tp) else _FIXES.get(kind, f"give a {_type_name(tp)}")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"])
        close = difflib.get_close_matches(str(value), choices, n=1)
        fix = f"use one of {', '.join(map(repr, choices))}"
        fix += f" (did you mean {close[0]!r}?)" if close else ""
    if kind in ("int_type", "float_type") and isinstance(value, str):
        quoted = re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value)
        fix = "write the number without quotes" if quoted else f"{fix}, e.g. {key}=1"
    expected = f"a mapping of {tp.__name__} keys" if _is_model(tp) else _type_name(tp)
    expected = "a finite number" if kind == "finite_number" else expected
    return f"config key '{key}': expected {expected}, got {_show(value)}. Fix: {fix}."


def describe_config(cls: type[BaseModel]) -> str:
    """Every dotted key of ``cls``, one a line: ``key  type  default  # description``; each
    section has a line of its own, without a default, before its keys."""
    defaults = config_to_dict(cls())
    rows = []
    for key, tp, doc in _keys(cls):
        default = "" if _is_model(tp) else _flow(_lookup(defaults, key.split(".")))
        rows.append((key, _type_name(tp), default, doc))
    wk, wt, wd = (min(max(len(row[i]) for row in rows), cap) for i, cap in enumerate((40, 20, 22)))
    return "\n".join(f"{k:<{wk}}  {t:<{wt}}  {d:<{wd}}  # {doc}" for k, t, d, doc in rows)


def _keys(cls: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted key, annotation, description) of each field of ``cls``, sections before keys."""
    for name, field in cls.model_fields.items():
        yield prefix + name, field.annotation, field.description or ""
        if _is_model(field.annotation):
            yield from _keys(field.annotation, f"{prefix}{name}.")


def _annotation_at(cls: Any, loc: Sequence[Any]) -> Any:
    """The annotation at a location in ``cls`` (Any past a free-form or unknown key)."""
    for part in loc:
        if _is_model(cls):
            cls = cls.model_fields[part].annotation if part in cls.model_fields else Any
        else:  # an item of a list, a value of a dict
            cls = ([a for a in get_args(cls) if a is not type(None)] or [Any])[-1]
    return cls


def _is_model(tp: Any) -> bool:
    """Whether ``tp`` is a config section (a pydantic model class)."""
    return isinstance(tp, type) and get_origin(tp) is None and issubclass(tp, BaseModel)


def _arms(tp: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``(tp,)`` for any other)."""
    return get_args(tp) if get_origin(tp) in (Union, UnionType) else (tp,)


def _type_name(tp: Any) -> str:
    """``int``, ``str | None``, ``'gated' | 'gru'``, ``dict[str, Any]``..."""
    if get_origin(tp) is Literal:
        return " | ".join(map(repr, get_args(tp)))
    name = tp.__name__ if isinstance(tp, type) and not get_args(tp) else str(tp)
    return re.sub(r"\b(?:[a-z_]\w*\.)+", "", name)  # typing.Any -> Any, pkg.mod.Cls -> Cls


def _flow(value: Any) -> str:
    """``value`` as one line of YAML: ``null``, ``{length: 10}``, ``0.0001``."""
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=10**6)
    return text.strip().removesuffix("...").strip()


def _show(value: Any) -> str:
    """``null``, or the type and repr of ``value`` (for messages)."""
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:60]


def _dotted(loc: Sequence[Any]) -> str:
    """``("tasks", 0, "name")`` -> ``tasks[0].name``."""
    parts = (f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "[key]")
    return "".join(parts).lstrip(".")
