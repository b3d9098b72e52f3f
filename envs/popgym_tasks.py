"""Adapter that makes POPGym envs pass gymnasium's env checker and fit the step encoder.

POPGym (``popgym-*-v0`` ids) is slow to import, so only :func:`make_popgym`, the entry point of the
``smt_rl/popgym-*`` ids, imports it, when it is called. The adapter applies only these fixes:

- infos are copied on every call (CountRecall and MultiarmedBandit return the same dict / array
  object from ``reset`` and ``step``, which ``check_env`` rejects);
- observation spaces: a ``Tuple`` of ``Discrete`` becomes ``MultiDiscrete`` (Autoencode's
  ``Tuple(Discrete(2), Discrete(4))``), any other ``Tuple`` becomes a ``Dict`` keyed "0", "1", ...
  (converted recursively); ``Discrete`` observations come back as ``np.int64`` not Python ints;
- rewards are returned as ``float`` and the two flags as ``bool``.

Semantics are unchanged; POPGym has no success signal, so no ``info["success"]`` is added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs

Converter = Callable[[Any], Any]


def _discrete_to_int64(obs: Any) -> np.int64:
    return np.int64(obs)


def adapt_space(space: spaces.Space) -> tuple[spaces.Space, Converter | None]:
    """The encoder-friendly version of ``space`` and the function mapping observations onto it.

    Returns ``(new_space, convert)``; ``convert`` is None when observations pass unchanged.
    """
    if isinstance(space, spaces.Discrete):
        return space, _discrete_to_int64
    if isinstance(space, spaces.Tuple):
        subspaces = space.spaces
        if subspaces and all(isinstance(s, spaces.Discrete) for s in subspaces):
            nvec = np.array([s.n for s in subspaces], dtype=np.int64)
            start = np.array([s.start for s in subspaces], dtype=np.int64)
            new_space = spaces.MultiDiscrete(
                nvec, dtype=np.int64, start=start if start.any() else None
            )
            return new_space, lambda obs: np.array(obs, dtype=np.int64)
        parts = [adapt_space(s) for s in subspaces]
        keys = [str(i) for i in range(len(parts))]
        new_space = spaces.Dict({k: s for k, (s, _) in zip(keys, parts, strict=True)})
        fns = [fn for _, fn in parts]

        def tuple_to_dict(obs: Any) -> dict[str, Any]:
            return {
                k: (x if fn is None else fn(x)) for k, x, fn in zip(keys, obs, fns, strict=True)
            }

        return new_space, tuple_to_dict
    if isinstance(space, spaces.Dict):
        parts = {k: adapt_space(s) for k, s in space.spaces.items()}
        if all(fn is None for _, fn in parts.values()):
            return space, None
        new_space = spaces.Dict({k: s for k, (s, _) in parts.items()})

        def dict_to_dict(obs: dict[str, Any]) -> dict[str, Any]:
            return {k: (obs[k] if fn is None else fn(obs[k])) for k, (_, fn) in parts.items()}

        return new_space, dict_to_dict
    return space, None


def _copy_info(info: Any) -> Any:
    """A copy of ``info`` sharing no dict, list or array with it."""
    if isinstance(info, dict):
        return {k: _copy_info(v) for k, v in info.items()}
    if isinstance(info, np.ndarray):
        return info.copy()
    if isinstance(info, list):
        return [_copy_info(v) for v in info]
    return info


class POPGymAdapter(gym.Wrapper, RecordConstructorArgs):
    """Wrap a POPGym env so that it passes ``check_env`` and has encoder-friendly spaces.

    See the module docstring for the exact fixes. Action spaces are left as they are.
    """

    def __init__(self, env: gym.Env) -> None:
        RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.observation_space, self._convert = adapt_space(env.observation_space)

    def _observation(self, obs: Any) -> Any:
        return obs if self._convert is None else self._convert(obs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env; the observation is converted and the info copied."""
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observation(obs), _copy_info(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the env; the observation is converted and the info copied."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return (
            self._observation(obs),
            float(reward),
            bool(terminated),
            bool(truncated),
            _copy_info(info),
        )


def make_popgym(env_id: str, max_episode_steps: int | None = None, **kwargs: Any) -> POPGymAdapter:
    """``gym.make(env_id, **kwargs)`` of a POPGym id, wrapped by :class:`POPGymAdapter`.

    The entry point of the ``smt_rl/popgym-*`` ids. Made without gymnasium's passive env checker:
    it would sit below the adapter and warn about what the adapter fixes (``check_env`` passes on
    the adapted env). ``max_episode_steps`` puts gymnasium's ``TimeLimit`` below the adapter.

    Raises:
        MissingPackageError: POPGym is not installed (``pip install 'smt-rl[popgym]'``).
    """
    from .registry import import_provider

    import_provider("popgym", env_id)  # registers POPGym's ids; a slow import, so only here

    env = gym.make(env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **kwargs)
    return POPGymAdapter(env)
