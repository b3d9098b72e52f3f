"""Behaviour policies that drive data collection over a batch of environments."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from smt_rl.errors import ConfigError


@runtime_checkable
class BehaviourPolicy(Protocol):
    """What :func:`smt_rl.data.collect.collect_episodes` needs from a behaviour policy."""

    #: Name recorded in the dataset's metadata.
    name: str
    #: False when ``act`` ignores the observation (it is then passed as None, saving the stacking).
    observes: bool

    def act(self, observation: Any, episode_start: np.ndarray) -> np.ndarray:
        """Actions for a batch of K environments.

        Args:
            observation: the batched observation (numpy, as the vector env returns it).
            episode_start: (K,) bool, True where the observation starts a new episode.

        Returns:
            a batch of K actions of the single action space.
        """
        ...


class RandomPolicy:
    """Uniformly random actions, seeded."""

    name = "random"
    observes = False

    def __init__(self, action_space: spaces.Space, num_envs: int, seed: int) -> None:
        self._num_envs = num_envs
        self._discrete = action_space if isinstance(action_space, spaces.Discrete) else None
        self._rng = np.random.default_rng(seed)
        self._block = np.empty((0, num_envs), dtype=np.int64)
        self._row = 0
        self._space = batch_space(action_space, num_envs)
        self._space.seed(seed)

    def act(self, observation: Any, episode_start: np.ndarray) -> np.ndarray:
        if self._discrete is None:
            return self._space.sample()
        # Discrete, the common case: draw actions in blocks, far cheaper per step than sample().
        if self._row >= len(self._block):
            start, n = int(self._discrete.start), int(self._discrete.n)
            self._block = self._rng.integers(start, start + n, size=(1024, self._num_envs))
            self._row = 0
        self._row += 1
        return self._block[self._row - 1]


def resolve_policy(
    policy: str | BehaviourPolicy, action_space: spaces.Space, num_envs: int, seed: int
) -> BehaviourPolicy:
    """Turn the ``policy`` argument of ``collect`` into a :class:`BehaviourPolicy`.

    A string names a built-in policy (``"random"``); any object with ``name`` and ``act`` is used
    as it is.
    """
    if isinstance(policy, str):
        if policy == "random":
            return RandomPolicy(action_space, num_envs, seed)
        raise ConfigError(
            f"policy: unknown behaviour policy {policy!r}; use 'random', or pass an object with "
            "`name` and `act(observation, episode_start)` from Python."
        )
    if isinstance(policy, BehaviourPolicy):
        return policy
    raise ConfigError(f"policy: {policy!r} is neither a policy name nor a BehaviourPolicy.")
