"""Run a behaviour policy in K environments and log whole episodes to a dataset folder."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict
from tqdm.auto import tqdm

from smt_rl.checks import check_finite
from smt_rl.data.policies import BehaviourPolicy, resolve_policy
from smt_rl.data.vector import as_action_list, make_envs
from smt_rl.data.writer import TrajectoryWriter
from smt_rl.errors import ConfigError
from smt_rl.spaces import check_space, leaf_spaces, stack_observations, torch_dtype


@dataclass
class CollectionResult:
    """What one collection run added to a dataset."""

    path: str  # the dataset folder
    episodes: int  # episodes written by this run
    steps: int  # environment steps written by this run
    wall_s: float  # wall-clock of the run, environment creation included
    steps_per_s: float  # steps / wall_s
    return_mean: float  # mean undiscounted episode return of the behaviour policy
    success_rate: float | None  # mean of info["success"] at episode ends; None if never reported
    dataset_episodes: int  # episodes in the dataset after this run
    dataset_steps: int  # steps in the dataset after this run


def _numpy_dtype(space: spaces.Space) -> np.dtype:
    return torch.empty((), dtype=torch_dtype(space)).numpy().dtype


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


Arrays = dict[tuple[str, ...], np.ndarray]


class _Episode:
    """The steps of one running episode, kept as Python lists until it ends (cheapest per step).

    o_{t+1} is not stored separately: it is the next entry of ``observations``, or the final
    observation.
    """

    __slots__ = ("actions", "observations", "rewards")

    def __init__(self, first_observation: Any) -> None:
        self.observations = [first_observation]
        self.actions: list[Any] = []
        self.rewards: list[float] = []


class _EpisodeStacker:
    """Turns finished episodes into per-step arrays, and chunks of them into TensorDicts."""

    def __init__(self, obs_space: spaces.Space, act_space: spaces.Space) -> None:
        self.obs_leaves = {p: (s.shape, _numpy_dtype(s)) for p, s in leaf_spaces(obs_space).items()}
        self.act_shape, self.act_dtype = act_space.shape, _numpy_dtype(act_space)
        #: Makes a private copy of an observation (environments may reuse their buffers).
        self.copy_observation: Callable[[Any], Any] = (
            self._copy_dict if isinstance(obs_space, spaces.Dict) else np.array
        )

    def _copy_dict(self, obs: Any) -> Any:
        if isinstance(obs, dict):
            return {k: self._copy_dict(v) for k, v in obs.items()}
        return np.array(obs)

    def stack(
        self, ep: _Episode, final_obs: Any, terminated: bool, truncated: bool, env_index: int = 0
    ) -> Arrays:
        """One finished episode as ``{key: (L, ...) array}`` in the stored layout.

        Raises:
            NonFiniteError: an observation or reward of the episode is NaN or infinite (the
                message names env ``env_index`` and the episode step).
        """
        length = len(ep.actions)
        arrays: Arrays = {}
        for path, (shape, dtype) in self.obs_leaves.items():
            # ep.observations holds o_0 .. o_{L-1}; o_L is the final observation.
            values = np.asarray([_get(o, path) for o in ep.observations], dtype=dtype)
            values = values.reshape(length, *shape)
            final = np.asarray(_get(final_obs, path), dtype=dtype).reshape(1, *shape)
            every = np.concatenate([values, final])  # o_0 .. o_L
            name = "observation" + "".join(f"[{k!r}]" for k in path)
            check_finite({name: every}, lambda t, i=env_index: f"env {i}, episode step {t}")
            arrays[("observation", *path)] = values
            arrays[("next", "observation", *path)] = every[1:]
        actions = np.asarray(ep.actions, self.act_dtype)
        arrays[("action",)] = actions.reshape(length, *self.act_shape)
        arrays[("next", "reward")] = np.asarray(ep.rewards, dtype=np.float32)
        check_finite(
            {"reward": arrays[("next", "reward")]},
            lambda t, i=env_index: f"env {i}, episode step {t}",
        )
        ends = np.zeros(length, dtype=bool)
        ends[-1] = True
        arrays[("next", "terminated")] = ends & bool(terminated)
        arrays[("next", "truncated")] = ends & bool(truncated)
        arrays[("next", "done")] = ends
        arrays[("step_count",)] = np.arange(length)
        return arrays

    @staticmethod
    def to_tensordict(episodes: list[Arrays]) -> TensorDict:
        """Concatenate whole episodes: a TensorDict of batch size (S,)."""
        steps = TensorDict(batch_size=[sum(len(ep[("step_count",)]) for ep in episodes)])
        for key in episodes[0]:
            steps.set(key, torch.from_numpy(np.concatenate([ep[key] for ep in episodes])))
        steps.set("is_init", steps["step_count"] == 0)
        return steps


def collect_episodes(
    env_fn: Callable[[], gym.Env],
    *,
    env: Mapping[str, Any],
    episodes: int,
    out: str | os.PathLike,
    policy: str | BehaviourPolicy = "random",
    num_envs: int = 1,
    seed: int = 0,
    vectorization: str = "sync",
    chunk_steps: int = 100_000,
    progress: bool = True,
) -> CollectionResult:
    """Collect ``episodes`` whole episodes and append them to the dataset folder ``out``.

    Args:
        env_fn: builds one environment (picklable for ``vectorization="async"``).
        env: the task identity stored with the data (:func:`smt_rl.data.writer.env_description`).
        episodes: number of complete episodes to write (episodes still running at the end are
            dropped, so every stored episode is whole).
        out: dataset folder, created or appended to (same task and spaces only).
        policy: ``"random"`` or a :class:`BehaviourPolicy`.
        num_envs: environments stepped together.
        seed: environment i is first reset with seed ``seed + i``; the random policy uses ``seed``.
        vectorization: ``"sync"`` (in-process) or ``"async"`` (a worker process per env).
        chunk_steps: episodes are written in chunks of at least this many steps.
        progress: show a progress bar (episodes, steps/s, mean return).
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    started = time.perf_counter()
    envs = make_envs(env_fn, num_envs, vectorization)
    writer: TrajectoryWriter | None = None
    try:
        obs_space, act_space = envs.single_observation_space, envs.single_action_space
        check_space(obs_space, "observation_space")
        check_space(act_space, "action_space")
        writer = TrajectoryWriter(out, env, obs_space, act_space)
        behaviour = resolve_policy(policy, act_space, num_envs, seed)
        writer.begin_collection(
            {
                "policy": behaviour.name,
                "seed": seed,
                "num_envs": num_envs,
                "vectorization": vectorization,
            }
        )
        stacker = _EpisodeStacker(obs_space, act_space)
        observations = [stacker.copy_observation(o) for o in envs.reset(seed)]
        running = [_Episode(o) for o in observations]
        episode_start = np.ones(num_envs, dtype=bool)
        pending: list[Arrays] = []
        pending_stats: tuple[list[int], list[float], list[bool | None]] = ([], [], [])
        returns: list[float] = []
        successes: list[bool] = []
        finished = steps_written = pending_steps = 0

        def flush() -> None:
            nonlocal steps_written, pending_steps
            if not pending:
                return
            lengths, rets, succ = pending_stats
            known = None if any(s is None for s in succ) else [bool(s) for s in succ]
            writer.write_chunk(stacker.to_tensordict(pending), lengths, rets, known)
            steps_written += sum(lengths)
            pending_steps = 0
            pending.clear()
            for stat in pending_stats:
                stat.clear()

        bar = tqdm(total=episodes, unit="ep", disable=not progress, desc="collect")
        copy_observation = stacker.copy_observation
        while finished < episodes:
            batch_obs = stack_observations(observations, obs_space) if behaviour.observes else None
            actions = as_action_list(behaviour.act(batch_obs, episode_start))
            for i, res in enumerate(envs.step(actions)):
                ep = running[i]
                ep.actions.append(actions[i])
                ep.rewards.append(res.reward)
                obs = observations[i] = copy_observation(res.observation)
                if res.final_observation is None:
                    ep.observations.append(obs)
                    episode_start[i] = False
                    continue
                episode_start[i] = True
                running[i] = _Episode(obs)
                if finished >= episodes:
                    continue
                finished += 1
                pending.append(
                    stacker.stack(ep, res.final_observation, res.terminated, res.truncated, i)
                )
                ret = float(sum(ep.rewards))
                pending_stats[0].append(len(ep.actions))
                pending_stats[1].append(ret)
                pending_stats[2].append(res.success)
                returns.append(ret)
                if res.success is not None:
                    successes.append(res.success)
                pending_steps += len(ep.actions)
                bar.update(1)
                if progress:
                    elapsed = time.perf_counter() - started
                    bar.set_postfix(
                        steps_s=f"{(steps_written + pending_steps) / max(elapsed, 1e-9):.0f}",
                        ret=f"{np.mean(returns[-100:]):.3f}",
                        refresh=False,
                    )
            if pending_steps >= chunk_steps:
                flush()
        flush()
        bar.close()
        wall = time.perf_counter() - started
        writer.end_collection(wall)
    except BaseException:
        if writer is not None:  # chunks already written stay; nothing half-written remains
            writer.abort_collection()
        raise
    finally:
        envs.close()
    return CollectionResult(
        path=str(out),
        episodes=finished,
        steps=steps_written,
        wall_s=wall,
        steps_per_s=steps_written / max(wall, 1e-9),
        return_mean=float(np.mean(returns)),
        success_rate=float(np.mean(successes)) if successes else None,
        dataset_episodes=writer.meta["num_episodes"],
        dataset_steps=writer.meta["num_steps"],
    )
