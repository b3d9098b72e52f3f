"""Open one chunk folder of a dataset without tensordict's loader, so that no pickle can run.

tensordict writes a TensorDict as a folder per level: ``meta.json`` (per key, a tensor's
``{"device", "shape", "dtype", "is_nested"}`` or ``{"type": "TensorDict"}`` for a sub-folder,
plus the level's ``shape``, ``device`` and ``_type``) and a ``KEY.memmap`` file of raw values per
tensor. ``TensorDict.load_memmap`` also unpickles what a folder may hold besides tensors (a
non-tensor entry's ``other.pickle``) and imports the classes ``_type`` names. Datasets are shared,
so this reader accepts exactly the stored layout of :mod:`smt_rl.data.format` (keys, dtypes,
shapes, file sizes, no other file), refuses anything else with a :class:`DatasetError` naming the
file, and maps each file read-only (copy-on-write: nothing is ever written back).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict

from smt_rl.data.format import Layout, StoredTensor
from smt_rl.errors import DatasetError

LEVEL_META = "meta.json"
LEVEL_TYPE = "<class 'tensordict._td.TensorDict'>"  # the only ``_type`` a level may name
LEVEL_FIELDS = {"shape", "device", "_type"}  # what a level's meta.json says besides its keys
TENSOR_FIELDS = {"device", "shape", "dtype", "is_nested"}  # how it describes a tensor
SUB_LEVEL = {"type": "TensorDict"}  # how it describes a sub-folder


def open_chunk(folder: Path, layout: Layout, steps: int, fix: str) -> TensorDict:
    """The chunk at ``folder``, batch size ``(steps,)``, its tensors mapped read-only.

    Args:
        layout: every key the chunk must hold (:func:`smt_rl.data.format.step_layout`).
        steps: the chunk's steps according to the dataset's ``meta.json``.
        fix: what to do about a refused chunk (ends every message).

    Raises:
        DatasetError: a missing, unexpected or mis-described key, an extra file, a file of the
            wrong size; the message names the file.
    """
    return TensorDict(_read_level(folder, layout, steps, fix), batch_size=[steps])


def _read_level(folder: Path, layout: Layout, steps: int, fix: str) -> dict[str, Any]:
    """The tensors of one level (a folder) of a chunk, sub-levels as nested dicts."""
    meta_path = folder / LEVEL_META
    meta = _level_meta(meta_path, fix)
    _check_level(meta_path, meta, layout, steps, fix)
    _check_files(folder, layout, fix)
    out: dict[str, Any] = {}
    for key, expected in layout.items():
        if isinstance(expected, StoredTensor):
            out[key] = _map_tensor(folder / f"{key}.memmap", expected, steps, fix)
        else:
            out[key] = _read_level(folder / key, expected, steps, fix)
    return out


def _level_meta(path: Path, fix: str) -> dict[str, Any]:
    """A level's ``meta.json``: a JSON object."""
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"dataset chunk file {path} is missing; {fix}") from None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise DatasetError(f"dataset chunk file {path} is corrupt ({exc}); {fix}") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"dataset chunk file {path} is not a JSON object; {fix}")
    return meta


def _check_level(path: Path, meta: dict[str, Any], layout: Layout, steps: int, fix: str) -> None:
    """``meta`` (read from ``path``) describes exactly ``layout``'s keys, as tensordict would."""
    unexpected = sorted(set(meta) - set(layout) - LEVEL_FIELDS)
    if unexpected:
        raise DatasetError(
            f"dataset chunk file {path} declares keys a dataset does not hold ({unexpected}; "
            "non-tensor entries are never read, their pickles never run); " + fix
        )
    if meta.get("_type", LEVEL_TYPE) != LEVEL_TYPE:
        raise DatasetError(
            f"dataset chunk file {path}: _type is {meta['_type']!r}, a dataset holds plain "
            f"TensorDicts ({LEVEL_TYPE!r}); {fix}"
        )
    if meta.get("shape") != [steps]:
        raise DatasetError(
            f"dataset chunk file {path}: shape is {meta.get('shape')!r}, the dataset's "
            f"meta.json says {steps} steps ([{steps}]); {fix}"
        )
    for key, expected in layout.items():
        entry = meta.get(key)
        if isinstance(expected, StoredTensor):
            _check_tensor_entry(path, key, entry, expected, steps, fix)
        elif entry != SUB_LEVEL:
            raise DatasetError(
                f"dataset chunk file {path}: {key!r} must be {SUB_LEVEL} (a folder of tensors), "
                f"not {entry!r}; {fix}"
            )


def _check_tensor_entry(
    path: Path, key: str, entry: Any, expected: StoredTensor, steps: int, fix: str
) -> None:
    """``entry`` describes a dense tensor of ``expected``'s dtype and ``(steps, *shape)``."""
    shape = [steps, *expected.shape]
    described = isinstance(entry, dict) and set(entry) <= TENSOR_FIELDS
    if not described or entry.get("is_nested", False) is not False:
        raise DatasetError(
            f"dataset chunk file {path}: {key!r} must describe a tensor ({sorted(TENSOR_FIELDS)}),"
            f" not {entry!r}; {fix}"
        )
    if entry.get("dtype") != str(expected.dtype) or entry.get("shape") != shape:
        raise DatasetError(
            f"dataset chunk file {path}: {key!r} is {entry.get('dtype')} of shape "
            f"{entry.get('shape')}, the dataset's spaces imply {expected.dtype} of shape {shape}; "
            + fix
        )


def _check_files(folder: Path, layout: Layout, fix: str) -> None:
    """The folder holds exactly the level's files: no file tensordict could unpickle, nothing
    else either."""
    wanted = {LEVEL_META} | {
        f"{key}.memmap" if isinstance(expected, StoredTensor) else key
        for key, expected in layout.items()
    }
    extra = sorted(entry.name for entry in folder.iterdir() if entry.name not in wanted)
    if extra:
        raise DatasetError(
            f"dataset chunk {folder} holds files a dataset does not ({extra}; never read, a "
            "pickle among them never runs); remove them, or " + fix
        )


def _map_tensor(file: Path, expected: StoredTensor, steps: int, fix: str) -> torch.Tensor:
    """``file`` mapped as a ``(steps, *shape)`` tensor, copy-on-write: the file stays as it is.

    The size is checked first: mapping a short file would fail (or, shared, extend it)."""
    shape = (steps, *expected.shape)
    numel = int(torch.Size(shape).numel())
    if not file.is_file():
        raise DatasetError(f"dataset is truncated: {file} is missing; {fix}")
    size = file.stat().st_size
    wanted = numel * torch.empty((), dtype=expected.dtype).element_size()
    if size != wanted:
        raise DatasetError(
            f"dataset is truncated: {file} has {size} bytes on disk, {wanted} expected; {fix}"
        )
    if numel == 0:
        return torch.empty(shape, dtype=expected.dtype)
    mapped = torch.from_file(str(file), shared=False, size=numel, dtype=expected.dtype)
    return mapped.view(shape)
