"""Step K environments together with gymnasium's vector envs; read a step's results as arrays.

:func:`make_vector_env` builds a ``SyncVectorEnv`` (a loop in this process, the cheapest per
step) or an ``AsyncVectorEnv`` (a worker process per environment, for environments whose own step
is expensive) that resets a finished environment within the same step. With the same seed both
give the same data: ``reset(seed=s)`` resets environment i with ``s + i``, and every later reset
(at an episode's end) is done without a seed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import (
    AsyncVectorEnv,
    AutoresetMode,
    SyncVectorEnv,
    VectorEnv,
    VectorWrapper,
)
from gymnasium.vector.utils import concatenate, create_empty_array

from smt_rl.errors import ConfigError, SmtRlError, SpaceError

VECTORIZATIONS = ("sync", "async")


def make_vector_env(
    env_fn: Callable[[], gym.Env], num_envs: int, vectorization: str = "sync"
) -> VectorEnv:
    """``num_envs`` environments built by ``env_fn``, stepped as one vector env.

    A finished environment is reset in the same step (``AutoresetMode.SAME_STEP``): ``step``
    returns the first observation of its next episode, and the last one of the finished episode
    in ``info["final_obs"]`` (its info in ``info["final_info"]``), masked by
    ``info["_final_obs"]``. See :func:`step_actions`, :func:`done_mask`,
    :func:`final_observations` and :func:`final_successes`.

    Args:
        env_fn: builds one environment (picklable for ``"async"``).
        num_envs: number of environments, >= 1.
        vectorization: ``"sync"`` (``SyncVectorEnv``, in this process) or ``"async"``
            (``AsyncVectorEnv``, one worker process per environment).

    Raises:
        ConfigError: ``num_envs`` or ``vectorization`` is not valid.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ConfigError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if vectorization not in VECTORIZATIONS:
        raise ConfigError(f"vectorization must be one of {VECTORIZATIONS}, got {vectorization!r}")
    vector_cls = SyncVectorEnv if vectorization == "sync" else AsyncVectorEnv
    return _ClearShapeErrors(
        vector_cls([env_fn] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    )


class _ClearShapeErrors(VectorWrapper):
    """numpy's shape errors from batching observations (an environment returned one that does
    not fit its ``observation_space``) become a :class:`SpaceError` saying so. Costs nothing per
    step: only an error is translated."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        with self._shape_errors("reset"):
            return self.env.reset(**kwargs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        with self._shape_errors("step"):
            return self.env.step(actions)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return self.env.call(name, *args, **kwargs)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.env.get_attr(name)

    def set_attr(self, name: str, values: Any) -> None:
        self.env.set_attr(name, values)

    @contextlib.contextmanager
    def _shape_errors(self, call: str) -> Iterator[None]:
        try:
            yield
        except ValueError as err:
            if isinstance(err, SmtRlError) or not _SHAPE_ERROR.search(str(err)):
                raise
            space = self.env.single_observation_space
            raise SpaceError(
                f"an environment's {call}() returned an observation that does not fit its "
                f"observation_space {space} (numpy: {err}). Fix the env so that every "
                "observation is a sample of its observation_space (gymnasium.utils.env_checker."
                "check_env finds such mistakes), or wrap it to reshape its observations."
            ) from err


# what numpy says when arrays of different shapes are batched together
_SHAPE_ERROR = re.compile(r"shape|broadcast|dimension", re.IGNORECASE)


def step_actions(actions: Any) -> Any:
    """A batch of actions in the form to pass to ``VectorEnv.step``.

    A 1-D batch (Discrete actions, ``(K,)``) becomes a list of Python numbers, so that each
    environment receives an ``int`` rather than a numpy scalar: cheaper to step, and MiniGrid
    compares numpy scalars with its action enum ~10% slower per step. Other batches pass as they
    are.
    """
    if isinstance(actions, np.ndarray) and actions.ndim == 1:
        return actions.tolist()
    return actions


def done_mask(terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """``(K,)`` bool: True where the step ended an episode."""
    return np.logical_or(terminated, truncated)


def final_observations(info: dict[str, Any], space: spaces.Space) -> tuple[np.ndarray, Any]:
    """The last observations of the episodes that ended in a step of a same-step vector env.

    Args:
        info: the info the vector env's ``step`` returned.
        space: the single observation space.

    Returns:
        ``(envs, observations)``: the ``(F,)`` indices of the F environments that finished, and
        their final observations batched as ``(F, ...)`` (a dict of such for a Dict space).
    """
    envs = np.flatnonzero(info.get("_final_obs", ()))
    batch = create_empty_array(space, n=len(envs), fn=np.zeros)
    if len(envs):
        batch = concatenate(space, [info["final_obs"][i] for i in envs], batch)
    return envs, batch


def final_successes(info: dict[str, Any], num_envs: int) -> list[bool | None]:
    """``info["success"]`` that each environment reported at its episode's end in this step.

    Returns:
        K entries: True / False where an episode ended with a ``success`` in its final info,
        None elsewhere (no episode ended, or it reported no success).
    """
    final = info.get("final_info", {})
    reported = final.get("_success", np.zeros(num_envs, bool))
    return [
        None if not reported[i] or final["success"][i] is None else bool(final["success"][i])
        for i in range(num_envs)
    ]
