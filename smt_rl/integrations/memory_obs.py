"""How a memory joins an observation: the wrapped space and the wrapped values.

What the gymnasium wrapper (one env) and the SB3 vector-env wrapper (N envs) share:

- ``"dict"`` mode: ``{observation_key: o_t, memory_key: m_t}``; a ``Dict`` observation keeps its
  members and gains ``memory_key``;
- ``"flat"`` mode: one float32 vector ``concat(flatten(o_t), m_t)``.

``m_t`` is the flattened memory, a float32 ``(Z,)`` vector (``(N, Z)`` for a batch).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import torch
from gymnasium import spaces

from smt_rl.errors import ConfigError, SpaceError
from smt_rl.integrations.memory import PretrainedMemory
from smt_rl.spaces import check_space, space_to_dict, unbatch_observations

MODES = ("dict", "flat")


class HasSpaces(Protocol):
    """A gymnasium env or an SB3 vector env (whose spaces are one sub-environment's)."""

    observation_space: spaces.Space
    action_space: spaces.Space


def check_mode(mode: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ConfigError(f"mode: {mode!r} is not a mode; use mode='dict' or mode='flat'.")


def check_same_spaces(env: HasSpaces, memory: PretrainedMemory, name: str = "env") -> None:
    """Raise :class:`SpaceError` when ``env``'s spaces are not the ones ``memory`` was built for
    (``name`` is what the message calls ``env``)."""
    for field in ("observation_space", "action_space"):
        env_space, mem_space = getattr(env, field), getattr(memory, field)
        check_space(env_space, f"{name}.{field}")
        if space_to_dict(env_space) != space_to_dict(mem_space):
            raise SpaceError(
                f"{name}.{field} is {env_space} but the memory's checkpoint was trained on a task "
                f"with {field} {mem_space}: it was pretrained on another task. Wrap the env the "
                "checkpoint was pretrained on, or pretrain a memory on this env "
                "(smt-rl pretrain CONFIG env.id=...)."
            )


def attach_memory(
    env: HasSpaces,
    memory: PretrainedMemory | str | os.PathLike,
    mode: str,
    memory_key: str,
    observation_key: str,
    device: str | torch.device,
    name: str = "env",
) -> tuple[PretrainedMemory, MemoryObservation]:
    """What a wrapper of ``env`` needs: the memory (loaded with
    :meth:`PretrainedMemory.from_checkpoint` when ``memory`` is a checkpoint folder) and the
    wrapped observations of ``mode``. The mode is checked before anything is loaded, the spaces
    after (``name`` is what messages call ``env``).

    Raises:
        ConfigError: unknown ``mode``, or a key clash in dict mode.
        SpaceError: ``env``'s spaces differ from the memory's, or (flat mode) the observation
            space cannot be flattened.
        smt_rl.checkpoint.CheckpointError: ``memory`` is a path that holds no usable checkpoint.
    """
    check_mode(mode)
    if not isinstance(memory, PretrainedMemory):
        memory = PretrainedMemory.from_checkpoint(memory, device)
    check_same_spaces(env, memory, name)
    wrap = MemoryObservation(
        env.observation_space, memory.memory_size, mode, memory_key, observation_key
    )
    return memory, wrap


def memory_numpy(memory: torch.Tensor) -> np.ndarray:
    """``m_t (N, K, d)`` as the float32 numpy ``(N, Z)`` the wrapped observations carry."""
    return memory.reshape(memory.shape[0], -1).cpu().numpy().astype(np.float32)  # a copy


class MemoryObservation:
    """The wrapped observation space and values for one mode and pair of keys.

    Args:
        original: the (single-environment) observation space.
        memory_size: ``Z``, the flattened memory's width.
        mode: ``"dict"`` or ``"flat"`` (see the module notes).
        memory_key: the key of the memory in dict mode.
        observation_key: the key of the original observation in dict mode (unused when the
            original observation is already a Dict).

    Raises:
        ConfigError: unknown ``mode``, or a key clash in dict mode.
        SpaceError: (flat mode) ``original`` cannot be flattened into a Box.
    """

    def __init__(
        self,
        original: spaces.Space,
        memory_size: int,
        mode: str = "dict",
        memory_key: str = "memory",
        observation_key: str = "observation",
    ) -> None:
        check_mode(mode)
        self.original, self.mode = original, mode
        self.memory_key, self.observation_key = memory_key, observation_key
        memory_box = spaces.Box(-np.inf, np.inf, (memory_size,), np.float32)
        if mode == "dict":
            self.space: spaces.Space = dict_space(original, memory_box, memory_key, observation_key)
        else:
            self.space = flat_space(original, memory_box)

    def single(self, obs: Any, z: np.ndarray) -> Any:
        """One wrapped observation from ``obs`` (a sample of ``original``) and ``z (Z,)``."""
        if self.mode == "flat":
            flat = spaces.flatten(self.original, obs)
            return np.concatenate([np.asarray(flat, dtype=np.float32), z])
        return self._as_dict(obs, z)

    def batch(self, obs: Any, z: np.ndarray) -> Any:
        """N wrapped observations from a batch ``obs`` (numpy ``(N, ...)`` or a dict of them, as
        a vector env returns it) and ``z (N, Z)``."""
        if self.mode == "flat":
            return np.concatenate([flatten_batch(self.original, obs), z], axis=1)
        return self._as_dict(obs, z)

    def _as_dict(self, obs: Any, z: np.ndarray) -> dict[str, Any]:
        """The members in the order of the space's keys (as SB3's vector envs return them)."""
        if isinstance(self.original, spaces.Dict):
            members = {**obs, self.memory_key: z}
        else:
            members = {self.observation_key: obs, self.memory_key: z}
        return {key: members[key] for key in self.space.spaces}


def flatten_batch(space: spaces.Space, batch: Any) -> np.ndarray:
    """``gymnasium.spaces.flatten`` of each of N samples of ``space``: float32 ``(N, F)``."""
    if isinstance(space, spaces.Box):  # flatten is a reshape: no loop over the samples
        array = np.asarray(batch, dtype=space.dtype)
        return array.reshape(array.shape[0], -1).astype(np.float32, copy=False)
    rows = [spaces.flatten(space, o) for o in unbatch_observations(batch, space)]
    return np.stack(rows).astype(np.float32, copy=False)


def dict_space(
    original: spaces.Space, memory_box: spaces.Box, memory_key: str, observation_key: str
) -> spaces.Dict:
    """Dict mode: ``{observation_key: original, memory_key: memory_box}``, or a Dict's members
    plus ``memory_key``."""
    if isinstance(original, spaces.Dict):
        if memory_key in original.spaces:
            raise ConfigError(
                f"memory_key: {memory_key!r} is already a member of the Dict observation "
                f"(members: {list(original.spaces)}); pass another memory_key."
            )
        return spaces.Dict({**original.spaces, memory_key: memory_box})
    if memory_key == observation_key:
        raise ConfigError(
            f"memory_key and observation_key are both {memory_key!r}; give them different names."
        )
    return spaces.Dict({observation_key: original, memory_key: memory_box})


def flat_space(original: spaces.Space, memory_box: spaces.Box) -> spaces.Box:
    """Flat mode: ``Box`` over ``concat(flatten(original), memory)`` (float32)."""
    try:
        flat = spaces.flatten_space(original)
    except NotImplementedError:
        flat = None
    if not isinstance(flat, spaces.Box):
        raise SpaceError(
            f"env.observation_space: {original} cannot be flattened into a Box; use mode='dict'."
        )
    low = np.concatenate([flat.low.astype(np.float32), memory_box.low])
    high = np.concatenate([flat.high.astype(np.float32), memory_box.high])
    return spaces.Box(low, high, dtype=np.float32)
