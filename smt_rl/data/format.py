"""The on-disk layout of a trajectory dataset folder (shared by the writer and the reader).

::

    DIR/meta.json                 # the commit point: env, spaces, chunk list, collection log
    DIR/chunks/chunk-000000/      # a TensorDict memmap of the steps of whole episodes, batch (S,)
    DIR/chunks/chunk-000001/      # each append adds a chunk; a chunk not listed in meta.json
                                  # (a run killed mid-append) is ignored and later removed

Per-step keys follow torchrl's names, one row per environment step ``t`` of an episode:
``observation`` (o_t, a tensor or a nested TensorDict for Dict spaces), ``action`` (a_t),
``is_init`` (t == 0), ``step_count`` (t), and under ``next``: ``observation`` (o_{t+1}),
``reward`` (r_t), ``terminated``, ``truncated`` and ``done``. Episodes are stored whole and
contiguously, in order; ``meta.json`` lists each chunk's episode lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from gymnasium import spaces

from smt_rl.spaces import torch_dtype

FORMAT_NAME = "smt_rl.trajectories"
FORMAT_VERSION = 1
META_FILE = "meta.json"
CHUNK_DIR = "chunks"


@dataclass(frozen=True)
class StoredTensor:
    """One stored per-step field: its dtype and its shape per step (the file holds ``(S, *shape)``
    for a chunk of S steps)."""

    dtype: torch.dtype
    shape: tuple[int, ...]


# key -> a stored tensor, or a nested level of keys (a sub-folder of the chunk)
Layout = dict[str, Union[StoredTensor, "Layout"]]


def step_layout(observation_space: spaces.Space, action_space: spaces.Space) -> Layout:
    """Every key a chunk of a dataset with these spaces stores, with its dtype and shape."""
    observation = _space_layout(observation_space)
    flag = StoredTensor(torch.bool, ())
    return {
        "observation": observation,
        "action": _space_layout(action_space),
        "is_init": flag,
        "step_count": StoredTensor(torch.int64, ()),
        "next": {
            "observation": observation,
            "reward": StoredTensor(torch.float32, ()),
            "terminated": flag,
            "truncated": flag,
            "done": flag,
        },
    }


def _space_layout(space: spaces.Space) -> StoredTensor | Layout:
    """A sample of ``space`` as stored: one tensor, or a level per Dict (one key per member)."""
    if isinstance(space, spaces.Dict):
        return {key: _space_layout(sub) for key, sub in space.spaces.items()}
    return StoredTensor(torch_dtype(space), tuple(space.shape))


def chunk_name(index: int) -> str:
    """Folder name of the ``index``-th chunk."""
    return f"chunk-{index:06d}"


def chunk_index(name: str) -> int | None:
    """The index in a chunk's folder name (None when it is not one)."""
    prefix, _, digits = name.partition("-")
    if prefix != "chunk" or len(digits) != 6 or not digits.isdigit():
        return None
    return int(digits)
