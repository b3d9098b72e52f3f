"""Nested state (resume states) in one file without pickle: safetensors plus a JSON structure.

:func:`save_tree` writes a tree of dicts, lists, tuples, tensors, ints, floats, bools, strings
and None as one safetensors file: every tensor is a safetensors entry, and the tree itself is
JSON in the header's metadata (``"tree"``), each tensor replaced by a reference to its entry.
:func:`load_tree` reads it back with safetensors and ``json``: nothing in the file can run code.

What comes back:

- tensors: on the CPU, same dtype (bool and uint8 included), shape (0-d and empty included) and
  values; each one its own contiguous copy (views, non-contiguous or shared tensors are saved as
  copies, so two entries that shared memory no longer do); no ``requires_grad``;
- dicts (``OrderedDict`` and ``defaultdict`` too) come back as plain dicts in the same order;
  their keys must be strings or ints (optimizer states are keyed by parameter index);
- lists as lists, tuples (``torch.Size`` and named tuples too) as plain tuples;
- ints, bools, strings and None as they were; floats as floats, ``nan`` and ``±inf`` included
  (``numpy.float64`` comes back as ``float``). Any other type is refused when saving.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from smt_rl.io import atomic_write_bytes

TREE_FORMAT = "smt_rl.tree"
TREE_VERSION = "1"
# the JSON tags of what plain JSON cannot tell apart; a tagged node is an object of one key
_TENSOR, _DICT, _TUPLE, _FLOAT = "tensor", "dict", "tuple", "float"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def save_tree(path: str | os.PathLike, tree: Any) -> None:
    """Write ``tree`` to ``path`` atomically (see the module notes for what it may hold).

    Raises:
        TypeError: a value (or a dict key) of a type the format does not hold, named by where it
            sits in the tree.
    """
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(tree, tensors, "tree")
    metadata = {
        "format": TREE_FORMAT,
        "version": TREE_VERSION,
        "tree": json.dumps(structure, allow_nan=False, separators=(",", ":")),
    }
    atomic_write_bytes(path, save_safetensors(tensors, metadata=metadata))


def load_tree(path: str | os.PathLike, error: type[Exception], fix: str) -> Any:
    """The tree :func:`save_tree` wrote to ``path``, tensors on the CPU.

    Raises:
        error: ``path`` is not such a file (truncated, a pickle, garbage, another format), named
            with the reason and ``fix``.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in list(handle.keys())}
    except Exception as exc:  # safetensors reports a damaged file with assorted errors
        raise error(f"{path} cannot be read ({type(exc).__name__}: {exc}); {fix}") from exc
    if metadata.get("format") != TREE_FORMAT or metadata.get("version") != TREE_VERSION:
        raise error(
            f"{path} is not a smt_rl state file of version {TREE_VERSION} (its header says "
            f"format {metadata.get('format')!r}, version {metadata.get('version')!r}); {fix}"
        )
    try:
        structure = json.loads(metadata.get("tree", ""), parse_constant=_refuse_constant)
        used: set[str] = set()
        tree = _decode(structure, tensors, used)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise error(f"{path} holds a damaged structure ({exc}); {fix}") from exc
    if used != set(tensors):
        raise error(f"{path} holds tensors its structure does not use; {fix}")
    return tree


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """``value`` as JSON, its tensors moved into ``tensors``; ``where`` names it in errors."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else {_FLOAT: repr(value)}
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        # an own contiguous CPU copy: safetensors refuses tensors that share memory
        tensors[name] = value.detach().cpu().clone(memory_format=torch.contiguous_format)
        return {_TENSOR: name}
    if isinstance(value, Mapping):
        return {_DICT: [_encode_item(k, v, tensors, where) for k, v in value.items()]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    raise TypeError(f"{where} is a {type(value).__name__}, which a state file cannot hold")


def _encode_item(key: Any, value: Any, tensors: dict[str, torch.Tensor], where: str) -> list:
    """One dict entry as ``[key, value]``; keys are strings or ints."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"{where} has a key {key!r}; a state file holds str and int keys only")
    return [key, _encode(value, tensors, f"{where}[{key!r}]")]


def _decode(node: Any, tensors: dict[str, torch.Tensor], used: set[str]) -> Any:
    """The value a JSON ``node`` of :func:`_encode` stands for; records the tensors it uses."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, used) for v in node]
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"unexpected node {str(node)[:60]}")
    tag, content = next(iter(node.items()))
    if tag == _TENSOR and isinstance(content, str):
        used.add(content)
        return tensors[content]
    if tag == _DICT and isinstance(content, list):
        return {_key(item): _decode(item[1], tensors, used) for item in content}
    if tag == _TUPLE and isinstance(content, list):
        return tuple(_decode(v, tensors, used) for v in content)
    if tag == _FLOAT and content in _NON_FINITE:
        return _NON_FINITE[content]
    raise ValueError(f"unexpected node {str(node)[:60]}")


def _key(item: Any) -> str | int:
    """The key of a ``[key, value]`` dict entry."""
    if not isinstance(item, list) or len(item) != 2:
        raise ValueError(f"a dict entry must be [key, value], not {str(item)[:60]}")
    key = item[0]
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise ValueError(f"a dict key must be a string or an int, not {key!r}")
    return key


def _refuse_constant(name: str) -> None:
    """``NaN`` / ``Infinity`` are not JSON: :func:`save_tree` tags non-finite floats instead."""
    raise ValueError(f"unexpected constant {name}")
