"""Deterministic evaluation of a trained agent on fresh seeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from smt_rl.data.vector import InProcessEnvs
from smt_rl.errors import SpaceError
from smt_rl.spaces import stack_observations


def evaluate_agent(
    agent: Any,
    env_fn: Callable[[], gym.Env],
    episodes: int,
    seed: int,
    deterministic: bool = True,
    num_envs: int = 8,
) -> dict[str, Any]:
    """Run ``episodes`` whole episodes with ``agent.predict`` and report returns and success.

    Environment i is first reset with ``seed + i``. ``eval/success_rate`` is None when the task
    reports no ``info["success"]``.
    """
    num_envs = max(1, min(num_envs, episodes))
    envs = InProcessEnvs(env_fn, num_envs)
    try:
        for field in ("observation_space", "action_space"):
            expected, got = getattr(agent, field, None), getattr(envs, f"single_{field}")
            if expected is not None and expected != got:
                raise SpaceError(
                    f"{field}: the environment has {got}, but the agent was trained on "
                    f"{expected}; evaluate it on the task it was trained on."
                )
        observations = envs.reset(seed)
        state, starts = None, np.ones(num_envs, dtype=bool)
        rewards = np.zeros(num_envs, dtype=np.float32)
        running = np.zeros(num_envs)
        returns: list[float] = []
        successes: list[bool] = []
        lengths: list[int] = []
        steps = np.zeros(num_envs, dtype=np.int64)
        while len(returns) < episodes:
            batch = stack_observations(observations, envs.single_observation_space)
            actions, state = agent.predict(batch, state, starts, deterministic, reward=rewards)
            results = envs.step(actions)
            for i, res in enumerate(results):
                running[i] += res.reward
                steps[i] += 1
                rewards[i] = res.reward
                starts[i] = res.final_observation is not None
                if starts[i]:
                    if len(returns) < episodes:
                        returns.append(float(running[i]))
                        lengths.append(int(steps[i]))
                        if res.success is not None:
                            successes.append(bool(res.success))
                    running[i], steps[i], rewards[i] = 0.0, 0, 0.0
            observations = [r.observation for r in results]
    finally:
        envs.close()
    return {
        "eval/return_mean": float(np.mean(returns)),
        "eval/return_std": float(np.std(returns)),
        "eval/success_rate": float(np.mean(successes)) if successes else None,
        "eval/episodes": len(returns),
        "eval/length_mean": float(np.mean(lengths)),
    }
