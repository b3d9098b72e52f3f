"""The pipeline steps as Python functions, one per CLI command, with the same arguments."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from envs import make_env
from smt_rl.data import BehaviourPolicy, CollectionResult, collect_episodes, env_description


def collect(
    env_id: str | None,
    episodes: int,
    out: str | os.PathLike,
    policy: str | BehaviourPolicy = "random",
    num_envs: int = 1,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    entry_point: str | None = None,
    vectorization: str = "sync",
    progress: bool = True,
) -> CollectionResult:
    """Log ``episodes`` whole episodes of a behaviour policy into the dataset folder ``out``.

    Same as ``smt-rl collect ENV_ID --episodes N --out DIR ...``.

    Args:
        env_id: a registered gymnasium id (e.g. ``smt_rl/PassiveTMaze-v0``,
            ``MiniGrid-MemoryS7-v0``, ``popgym-RepeatFirstEasy-v0``), or a name for
            ``entry_point``.
        episodes: complete episodes to write.
        out: dataset folder; created, or appended to when it holds the same task and spaces.
        policy: ``"random"``, or a :class:`smt_rl.data.BehaviourPolicy` object.
        num_envs: environments stepped together.
        seed: environment i is reset with ``seed + i``; the random policy is seeded with it.
        env_kwargs: keyword arguments of the environment (e.g. ``{"length": 50}``).
        entry_point: ``"package.module:Class"`` of your own gymnasium environment.
        vectorization: ``"sync"`` (in-process) or ``"async"`` (a worker process per env).
        progress: show a progress bar.
    """
    env_kwargs = dict(env_kwargs or {})
    env_fn = functools.partial(make_env, env_id, env_kwargs, entry_point)
    env_fn().close()  # resolve the task now: a bad id or kwarg fails before anything is written
    return collect_episodes(
        env_fn,
        env=env_description(env_id, env_kwargs, entry_point),
        episodes=episodes,
        out=out,
        policy=policy,
        num_envs=num_envs,
        seed=seed,
        vectorization=vectorization,
        progress=progress,
    )
