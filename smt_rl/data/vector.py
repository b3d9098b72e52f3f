"""Step K environments together, one result per environment, resetting each as it finishes.

Two engines behind one interface: :class:`InProcessEnvs` (a plain loop, the cheapest per step)
and :class:`WorkerProcessEnvs` (gymnasium's ``AsyncVectorEnv``, one worker process per
environment, for environments whose own step is expensive). With the same seed both give the
same data: environment i is reset with ``seed + i`` first, then without a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode

from smt_rl.errors import ConfigError

VECTORIZATIONS = ("sync", "async")


class EnvStep(NamedTuple):
    """What one environment returned for one step."""

    observation: Any  # o_{t+1}; when the episode ended, the first observation of the next one
    reward: float  # r_t
    terminated: bool
    truncated: bool
    final_observation: Any  # o_{t+1} of the episode that ended, else None
    success: bool | None  # info["success"] reported at the episode's end, else None


class InProcessEnvs:
    """K environments stepped one after the other in this process."""

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int) -> None:
        self.envs = [env_fn() for _ in range(num_envs)]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space

    def reset(self, seed: int) -> list[Any]:
        return [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]

    def step(self, actions: Sequence[Any]) -> list[EnvStep]:
        results = []
        for env, action in zip(self.envs, as_action_list(actions), strict=True):
            obs, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                success = info.get("success")
                final, (obs, _) = obs, env.reset()
                success = None if success is None else bool(success)
                results.append(EnvStep(obs, reward, terminated, truncated, final, success))
            else:
                results.append(EnvStep(obs, reward, False, False, None, None))
        return results

    def close(self) -> None:
        for env in self.envs:
            env.close()


class WorkerProcessEnvs:
    """K environments in worker processes (gymnasium ``AsyncVectorEnv``, same-step reset)."""

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int) -> None:
        self.vector = AsyncVectorEnv([env_fn] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self.num_envs = num_envs
        self.single_observation_space = self.vector.single_observation_space
        self.single_action_space = self.vector.single_action_space

    def reset(self, seed: int) -> list[Any]:
        obs, _ = self.vector.reset(seed=seed)
        return [_row(obs, i) for i in range(self.num_envs)]

    def step(self, actions: Sequence[Any]) -> list[EnvStep]:
        batch = np.stack([np.asarray(a) for a in actions])
        obs, reward, terminated, truncated, info = self.vector.step(batch)
        final_info = info.get("final_info") or {}
        results = []
        for i in range(self.num_envs):
            final, success = None, None
            if terminated[i] or truncated[i]:
                final = info["final_obs"][i]
                if "success" in final_info and final_info["_success"][i]:
                    success = bool(final_info["success"][i])
            results.append(
                EnvStep(
                    _row(obs, i),
                    float(reward[i]),
                    bool(terminated[i]),
                    bool(truncated[i]),
                    final,
                    success,
                )
            )
        return results

    def close(self) -> None:
        self.vector.close()


def as_action_list(actions: Any) -> list[Any]:
    """Per-environment actions; a numpy batch of scalars becomes Python numbers (cheaper)."""
    if isinstance(actions, np.ndarray):
        return actions.tolist() if actions.ndim == 1 else list(actions)
    return list(actions)


def _row(batch: Any, i: int) -> Any:
    """Environment ``i``'s observation out of a batched (possibly Dict) observation."""
    if isinstance(batch, dict):
        return {k: _row(v, i) for k, v in batch.items()}
    return batch[i]


def make_envs(
    env_fn: Callable[[], gym.Env], num_envs: int, vectorization: str = "sync"
) -> InProcessEnvs | WorkerProcessEnvs:
    """K environments built by ``env_fn`` (picklable for ``"async"``).

    Args:
        vectorization: ``"sync"`` (in-process loop) or ``"async"`` (a worker process per env).
    """
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    if vectorization == "sync":
        return InProcessEnvs(env_fn, num_envs)
    if vectorization == "async":
        return WorkerProcessEnvs(env_fn, num_envs)
    raise ConfigError(f"vectorization must be one of {VECTORIZATIONS}, got {vectorization!r}")
