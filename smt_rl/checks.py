"""Cheap guards on what environments return: NaN or infinite observations and rewards.

A NaN that reaches the memory or the losses poisons every weight it touches, far from where it
came from; these checks stop at the step that produced it, naming the env, the step and the field.
They run vectorised over a batch or a whole episode (one ``isfinite`` per float leaf).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase

from smt_rl.errors import NonFiniteError

FIX = (
    "the environment produced it: fix the env, or wrap it (e.g. gymnasium.wrappers."
    "TransformObservation / TransformReward with np.nan_to_num, or a clip) before training."
)


def _leaves(value: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(value, (dict, TensorDictBase)):
        out: list[tuple[str, Any]] = []
        for key, sub in value.items():
            out += _leaves(sub, f"{prefix}[{key!r}]")
        return out
    return [(prefix, value)]


def first_nonfinite_row(value: np.ndarray | torch.Tensor) -> int | None:
    """Index along the first dim of the first row holding NaN or +-inf (None: all finite, or an
    integer/bool dtype that cannot hold them)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or bool(torch.isfinite(value).all()):
            return None
        bad = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(-1)
        return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
        return None
    bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(-1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def check_finite(fields: dict[str, Any], where: Callable[[int], str]) -> None:
    """Raise :class:`NonFiniteError` if a float leaf of ``fields`` (batched along its first dim;
    a Dict observation as nested mappings) holds NaN or infinity.

    Args:
        fields: ``{"observation": batch, "reward": batch, ...}``.
        where: describes row ``i`` for the message (e.g. ``"env 3, episode step 17"``).
    """
    for name, batch in fields.items():
        for path, leaf in _leaves(batch, name):
            row = first_nonfinite_row(leaf)
            if row is not None:
                value = leaf[row]
                shown = value.tolist() if hasattr(value, "tolist") else value
                raise NonFiniteError(f"{path} is not finite ({shown}) at {where(row)}; {FIX}")
