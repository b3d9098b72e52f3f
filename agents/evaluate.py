"""Deterministic evaluation of a trained agent on fresh seeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from smt_rl.data.vector import done_mask, final_successes, make_vector_env, step_actions
from smt_rl.errors import SpaceError


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
    envs = make_vector_env(env_fn, num_envs)
    try:
        _check_spaces(agent, envs)
        observation, _ = envs.reset(seed=seed)
        state, starts = None, np.ones(num_envs, dtype=bool)
        rewards = np.zeros(num_envs, dtype=np.float32)  # r_{t-1}, 0 at an episode's start
        running = np.zeros(num_envs)  # return so far of each running episode
        steps = np.zeros(num_envs, dtype=np.int64)  # its length so far
        returns: list[float] = []
        successes: list[bool] = []
        lengths: list[int] = []
        while len(returns) < episodes:
            actions, state = agent.predict(
                observation, state, starts, deterministic, reward=rewards
            )
            observation, reward, terminated, truncated, info = envs.step(step_actions(actions))
            running += reward
            steps += 1
            starts = done_mask(terminated, truncated)
            success = final_successes(info, num_envs)
            for i in np.flatnonzero(starts)[: episodes - len(returns)]:
                returns.append(float(running[i]))
                lengths.append(int(steps[i]))
                if success[i] is not None:
                    successes.append(success[i])
            running[starts], steps[starts] = 0.0, 0
            rewards = np.where(starts, 0.0, reward).astype(np.float32)
    finally:
        envs.close()
    return {
        "eval/return_mean": float(np.mean(returns)),
        "eval/return_std": float(np.std(returns)),
        "eval/success_rate": float(np.mean(successes)) if successes else None,
        "eval/episodes": len(returns),
        "eval/length_mean": float(np.mean(lengths)),
    }


def _check_spaces(agent: Any, envs: gym.vector.VectorEnv) -> None:
    """Raise SpaceError if the agent was trained on other spaces than the environment's."""
    for field in ("observation_space", "action_space"):
        expected, got = getattr(agent, field, None), getattr(envs, f"single_{field}")
        if expected is not None and expected != got:
            raise SpaceError(
                f"{field}: the environment has {got}, but the agent was trained on "
                f"{expected}; evaluate it on the task it was trained on."
            )
