"""The declared structure of what a file holds, checked when it is read.

Dataset descriptions, checkpoint descriptions, resume states and benchmark records are read from
files that may have been edited, damaged or made by someone else. Each reader declares the fields
it uses as a :class:`Record` (a strict pydantic model) and calls :func:`check_record`: a missing
field or a wrong type becomes the reader's own error naming the file and the field, instead of a
bare ``KeyError`` / ``TypeError`` deep inside the code that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, InstanceOf, ValidationError

from smt_rl.spaces import check_space, space_from_dict

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Tensor = InstanceOf[torch.Tensor]


class Record(BaseModel):
    """Base of a file's declared structure.

    Strict types (``"1"`` is not an int, ``1`` is not a bool), fields it does not declare are
    allowed (a subclass forbids them with ``extra="forbid"``), and any Python type may be
    declared with ``pydantic.InstanceOf`` (tensors). Only checks: readers keep using the data they
    read, not the model.
    """

    model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)


class OptimizerState(Record):
    """What ``torch.optim.Optimizer.state_dict()`` holds (its values are checked when loaded)."""

    state: dict[int, dict[str, Any]]
    param_groups: list[dict[str, Any]]


def _buildable_space(description: dict[str, Any]) -> dict[str, Any]:
    """``description`` if it describes a supported space this version builds."""
    try:
        check_space(space_from_dict(description), "space")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # SpaceError included
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"not a space description smt_rl can build ({detail})") from exc
    return description


# a stored gymnasium space (smt_rl.spaces.space_to_dict), checked by building it
SpaceDescription = Annotated[dict[str, Any], AfterValidator(_buildable_space)]


def record_problem(cls: type[Record], data: Any) -> str | None:
    """What is wrong with ``data`` as a ``cls`` (its first problem, naming the field), or None."""
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        return _describe(exc.errors()[0], data)
    return None


def check_record(
    cls: type[Record], data: Any, path: str | os.PathLike, error: type[Exception], fix: str
) -> None:
    """Raise ``error`` saying ``path`` is incomplete or invalid (naming the field, then ``fix``)
    unless ``data`` is a ``cls``."""
    problem = record_problem(cls, data)
    if problem is not None:
        raise error(f"{path} is incomplete or invalid ({problem}); {fix}")


def _describe(first: dict[str, Any], data: Any) -> str:
    """One line for pydantic's (first) error: the field, then what it must be and what it holds."""
    where = _field_path(first["loc"], data, first["type"] == "missing")
    if first["type"] == "missing":
        return f"missing key {where!r}"
    if first["type"] == "extra_forbidden":
        return f"unexpected key {where!r}"
    if first["type"] == "value_error":
        message = first["msg"].removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    message, got, where = first["msg"], _short(first["input"]), where or "the whole record"
    if message.startswith("Input should be "):  # "x must be a valid integer (got '3')"
        return f"{where} must be {message.removeprefix('Input should be ')} (got {got})"
    return f"{where}: {message} (got {got})"


def _field_path(loc: tuple, data: Any, missing: bool) -> str:
    """``loc`` as the path a reader knows (``chunks[2].lengths[0]``).

    pydantic puts the members of a union and the parts of a dict entry (``[key]``) into ``loc``
    too; only the steps that lead into ``data`` are kept (and the last one of a missing key).
    """
    parts: list[str] = []
    node = data
    for i, step in enumerate(loc):
        listed = isinstance(node, (list, tuple)) and isinstance(step, int) and step < len(node)
        if listed or (isinstance(node, Mapping) and step in node):
            node = node[step]
        elif not (missing and i == len(loc) - 1):
            continue
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(parts).removeprefix(".")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
