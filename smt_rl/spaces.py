"""Gymnasium spaces: validation, JSON (de)serialisation, and numpy <-> torch conversion of samples.

Supported spaces (the ones the step encoder can embed): ``Box`` (vectors and small images),
``Discrete``, ``MultiDiscrete``, ``MultiBinary`` and ``Dict`` of these (nesting allowed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict

from smt_rl.errors import SpaceError

SUPPORTED_SPACES = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict")


def check_space(space: spaces.Space, field: str) -> None:
    """Raise :class:`SpaceError` naming ``field`` if ``space`` (or a Dict member) is unsupported."""
    if isinstance(space, spaces.Dict):
        if not space.spaces:
            raise SpaceError(f"{field}: empty Dict space; give the Dict at least one member.")
        for key, sub in space.spaces.items():
            check_space(sub, f"{field}[{key!r}]")
        return
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim != 1:
            raise SpaceError(
                f"{field}: MultiDiscrete with a {space.nvec.ndim}-d nvec is not supported; "
                "flatten it to one dimension in a wrapper."
            )
        return
    raise SpaceError(
        f"{field}: {type(space).__name__} spaces are not supported (got {space}); supported: "
        f"{', '.join(SUPPORTED_SPACES)}. Convert it with a gymnasium wrapper, e.g. a Tuple of "
        "Discrete into MultiDiscrete, or drop text fields."
    )


def check_same_space(expected: spaces.Space, got: spaces.Space, field: str, fix: str) -> None:
    """Raise :class:`SpaceError` naming ``field`` if ``got`` is unsupported or differs from
    ``expected`` (the space a model or dataset was built for); ``fix`` says what to do."""
    check_space(got, field)
    if space_to_dict(got) != space_to_dict(expected):
        raise SpaceError(f"{field}: the environment has {got}, but {expected} is expected; {fix}")


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """A JSON-ready description of ``space`` that :func:`space_from_dict` turns back into it."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
        }
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": list(n) if not isinstance(n, int) else n}
    check_space(space, "space")
    raise AssertionError("unreachable")


def space_from_dict(data: Mapping[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_dict`."""
    kind = data.get("type")
    if kind == "Dict":
        return spaces.Dict({k: space_from_dict(v) for k, v in data["spaces"].items()})
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        low = np.array(data["low"], dtype=dtype)
        high = np.array(data["high"], dtype=dtype)
        return spaces.Box(low=low, high=high, shape=tuple(data["shape"]), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "MultiDiscrete":
        nvec = np.array(data["nvec"], dtype=np.int64)
        start = np.array(data.get("start", np.zeros_like(nvec)), dtype=np.int64)
        return spaces.MultiDiscrete(nvec, start=start)
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    raise SpaceError(f"space description has unknown type {kind!r}; supported: {SUPPORTED_SPACES}")


def torch_dtype(space: spaces.Space) -> torch.dtype:
    """The torch dtype a sample of a (non-Dict) ``space`` is stored as."""
    if isinstance(space, spaces.Box):
        return torch.from_numpy(np.zeros((), dtype=space.dtype)).dtype
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return torch.int64
    if isinstance(space, spaces.MultiBinary):
        return torch.int8
    raise SpaceError(f"no tensor dtype for {space}")


def leaf_spaces(
    space: spaces.Space, prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], spaces.Space]:
    """Flatten a (nested) Dict space into ``{key path: leaf space}``; a leaf maps to ``()``."""
    if isinstance(space, spaces.Dict):
        out: dict[tuple[str, ...], spaces.Space] = {}
        for key, sub in space.spaces.items():
            out.update(leaf_spaces(sub, (*prefix, key)))
        return out
    return {prefix: space}


def batch_to_tensor(space: spaces.Space, value: Any, batch_size: int) -> torch.Tensor | TensorDict:
    """Convert a batch of ``batch_size`` samples of ``space`` (numpy, as a vector env returns it).

    Returns a tensor of shape ``(batch_size, *space.shape)`` or, for a Dict space, a TensorDict of
    batch size ``(batch_size,)``.
    """
    if isinstance(space, spaces.Dict):
        return TensorDict(
            {k: batch_to_tensor(s, value[k], batch_size) for k, s in space.spaces.items()},
            batch_size=[batch_size],
        )
    array = np.asarray(value)
    return torch.as_tensor(array).to(torch_dtype(space)).reshape(batch_size, *space.shape)


def tensor_to_numpy(space: spaces.Space, value: torch.Tensor | TensorDict) -> Any:
    """Convert a stored sample (or batch) back into what the environment takes/returns (numpy)."""
    if isinstance(space, spaces.Dict):
        return {k: tensor_to_numpy(s, value[k]) for k, s in space.spaces.items()}
    array = value.detach().cpu().numpy()
    if isinstance(space, spaces.Box):
        return array.astype(space.dtype, copy=False)
    if isinstance(space, spaces.Discrete):
        return array.astype(np.int64, copy=False)
    return array.astype(space.dtype, copy=False)


def stack_observations(observations: list[Any], space: spaces.Space) -> Any:
    """Stack K single observations into the batched numpy form a vector env returns."""
    if isinstance(space, spaces.Dict):
        return {
            k: stack_observations([o[k] for o in observations], s) for k, s in space.spaces.items()
        }
    return np.stack([np.asarray(o) for o in observations])


def is_single_observation(observation: Any, space: spaces.Space) -> bool:
    """True when ``observation`` is one sample of ``space`` rather than a batch of them."""
    if isinstance(space, spaces.Dict):
        key = next(iter(space.spaces))
        return is_single_observation(observation[key], space.spaces[key])
    return np.asarray(observation).shape == space.shape


def batch_size(observation: Any, space: spaces.Space) -> int:
    """N of a batch of observations of ``space`` (numpy ``(N, ...)`` or a dict of them)."""
    if isinstance(space, spaces.Dict):
        key = next(iter(space.spaces))
        return batch_size(observation[key], space.spaces[key])
    return int(np.asarray(observation).shape[0])


def unbatch_observations(observation: Any, space: spaces.Space) -> list[Any]:
    """Split a batch (numpy ``(N, ...)`` or a dict of them, as :func:`stack_observations` builds
    it) into N single observations."""
    if isinstance(space, spaces.Dict):
        parts = {k: unbatch_observations(observation[k], s) for k, s in space.spaces.items()}
        n = len(next(iter(parts.values())))
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    return list(np.asarray(observation))


def action_indices(space: spaces.Space, action: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """Actions ``(*B, ...)`` in the layout smt_rl stores them (indices for discrete spaces).

    torchrl envs give Discrete actions as one-hot ``(*B, n)`` by default and MultiDiscrete as
    concatenated one-hots ``(*B, sum(nvec))``; both become indices (``(*B,)``, ``(*B, len)``).
    Indices (with or without a trailing 1) and other spaces' actions pass through.

    Args:
        space: the single-environment action space.
        action: the batch of actions.
        batch_dims: the number of leading batch dims of ``action``.
    """
    if isinstance(space, spaces.Discrete):
        if action.dim() == batch_dims + 1 and action.shape[-1] == int(space.n) > 1:
            return action.argmax(-1) + int(space.start)
        return action.reshape(action.shape[:batch_dims]).long()
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        sizes = [int(x) for x in space.nvec]
        if action.shape[-1] == sum(sizes) != len(sizes):
            start = torch.as_tensor(space.start, device=action.device)
            parts = action.split(sizes, -1)
            return torch.stack([p.argmax(-1) for p in parts], -1) + start
    return action
