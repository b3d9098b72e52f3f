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
from smt_rl.data.vector import (
    done_mask,
    final_observations,
    final_successes,
    make_vector_env,
    step_actions,
)
from smt_rl.data.writer import TrajectoryWriter
from smt_rl.errors import ConfigError
from smt_rl.spaces import check_space, leaf_spaces, torch_dtype


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


class _StepLog:
    """The batched steps of K environments since the oldest running episode began.

    Each step adds one ``(K, ...)`` entry per observation leaf, action and reward (no per-env
    work); an episode is cut out of these when it ends. Steps are numbered from 0 across the run.
    """

    def __init__(self, obs_paths: list[tuple[str, ...]], num_envs: int) -> None:
        self.observations: dict[tuple[str, ...], list[np.ndarray]] = {p: [] for p in obs_paths}
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []
        self.first = 0  # number of the oldest step kept
        self.now = 0  # number of the next step
        self.starts = np.zeros(num_envs, dtype=np.int64)  # first step of each running episode

    def append(self, observation: Any, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Log one step: o_t as the vector env returns it, a_t ``(K, ...)`` and r_t ``(K,)``."""
        for path, steps in self.observations.items():
            steps.append(_get(observation, path))
        self.actions.append(actions)
        self.rewards.append(rewards)
        self.now += 1

    def episode(self, env: int) -> tuple[Arrays, np.ndarray, np.ndarray]:
        """The running episode of ``env``, its L steps so far.

        Returns:
            ``({leaf path: o_0..o_{L-1} (L, ...)}, a_0..a_{L-1} (L, ...), r_0..r_{L-1} (L,))``.
        """
        steps = slice(int(self.starts[env]) - self.first, self.now - self.first)
        observations = {p: np.asarray(o[steps])[:, env] for p, o in self.observations.items()}
        return (
            observations,
            np.asarray(self.actions[steps])[:, env],
            np.asarray(self.rewards[steps])[:, env],
        )

    def restart(self, envs: np.ndarray) -> None:
        """Start new episodes in ``envs`` at the next step; forget steps no episode needs."""
        self.starts[envs] = self.now
        drop = int(self.starts.min()) - self.first
        for steps in [*self.observations.values(), self.actions, self.rewards]:
            del steps[:drop]
        self.first += drop


class _EpisodeStacker:
    """Turns finished episodes into per-step arrays, and chunks of them into TensorDicts."""

    def __init__(self, obs_space: spaces.Space, act_space: spaces.Space) -> None:
        self.obs_leaves = {p: (s.shape, _numpy_dtype(s)) for p, s in leaf_spaces(obs_space).items()}
        self.act_shape, self.act_dtype = act_space.shape, _numpy_dtype(act_space)

    def stack(
        self,
        observations: Arrays,
        actions: np.ndarray,
        rewards: np.ndarray,
        final_obs: Arrays,
        terminated: bool,
        truncated: bool,
        env_index: int = 0,
    ) -> Arrays:
        """One finished episode as ``{key: (L, ...) array}`` in the stored layout.

        Args:
            observations: ``{leaf path: o_0..o_{L-1} (L, ...)}``.
            actions: a_0..a_{L-1}, ``(L, ...)``.
            rewards: r_0..r_{L-1}, ``(L,)``.
            final_obs: ``{leaf path: o_L}``, the observation the last step returned.

        Raises:
            NonFiniteError: an observation or reward of the episode is NaN or infinite (the
                message names env ``env_index`` and the episode step).
        """
        length = len(actions)
        arrays: Arrays = {}
        for path, (shape, dtype) in self.obs_leaves.items():
            values = np.asarray(observations[path], dtype=dtype).reshape(length, *shape)
            final = np.asarray(final_obs[path], dtype=dtype).reshape(1, *shape)
            every = np.concatenate([values, final])  # o_0 .. o_L
            name = "observation" + "".join(f"[{k!r}]" for k in path)
            check_finite({name: every}, lambda t, i=env_index: f"env {i}, episode step {t}")
            arrays[("observation", *path)] = values
            arrays[("next", "observation", *path)] = every[1:]
        actions = np.asarray(actions, self.act_dtype)
        arrays[("action",)] = actions.reshape(length, *self.act_shape)
        arrays[("next", "reward")] = np.asarray(rewards, dtype=np.float32)
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


class _Chunks:
    """Finished episodes waiting to be written, in chunks of at least ``chunk_steps`` steps, and
    the statistics of every episode this run added."""

    def __init__(
        self, writer: TrajectoryWriter, stacker: _EpisodeStacker, chunk_steps: int
    ) -> None:
        self.writer, self.stacker, self.chunk_steps = writer, stacker, chunk_steps
        self.pending: list[Arrays] = []
        self.pending_stats: tuple[list[int], list[float], list[bool | None]] = ([], [], [])
        self.returns: list[float] = []  # of every episode of the run
        self.successes: list[bool] = []  # of the episodes that reported one
        self.steps_written = self.pending_steps = 0

    def add(self, episode: Arrays, episode_return: float, success: bool | None) -> None:
        """Queue one finished episode."""
        length = len(episode[("step_count",)])
        self.pending.append(episode)
        for stat, value in zip(self.pending_stats, (length, episode_return, success), strict=True):
            stat.append(value)
        self.returns.append(episode_return)
        if success is not None:
            self.successes.append(success)
        self.pending_steps += length

    def flush_if_full(self) -> None:
        """Write the queue as one chunk once it holds ``chunk_steps`` steps."""
        if self.pending_steps >= self.chunk_steps:
            self.flush()

    def flush(self) -> None:
        """Write the queued episodes as one chunk."""
        if not self.pending:
            return
        lengths, returns, successes = self.pending_stats
        known = None if any(s is None for s in successes) else [bool(s) for s in successes]
        self.writer.write_chunk(self.stacker.to_tensordict(self.pending), lengths, returns, known)
        self.steps_written += sum(lengths)
        self.pending_steps = 0
        self.pending.clear()
        for stat in self.pending_stats:
            stat.clear()


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
        vectorization: ``"sync"`` (``SyncVectorEnv``, in this process) or ``"async"``
            (``AsyncVectorEnv``, a worker process per env).
        chunk_steps: episodes are written in chunks of at least this many steps.
        progress: show a progress bar (episodes, steps/s, mean return).
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    started = time.perf_counter()
    envs = make_vector_env(env_fn, num_envs, vectorization)
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
        chunks = _Chunks(writer, stacker, chunk_steps)
        with tqdm(total=episodes, unit="ep", disable=not progress, desc="collect") as bar:
            _run(envs, behaviour, stacker, chunks, episodes, seed, bar)
        chunks.flush()
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
        episodes=len(chunks.returns),
        steps=chunks.steps_written,
        wall_s=wall,
        steps_per_s=chunks.steps_written / max(wall, 1e-9),
        return_mean=float(np.mean(chunks.returns)),
        success_rate=float(np.mean(chunks.successes)) if chunks.successes else None,
        dataset_episodes=writer.meta["num_episodes"],
        dataset_steps=writer.meta["num_steps"],
    )


def _run(
    envs: gym.vector.VectorEnv,
    behaviour: BehaviourPolicy,
    stacker: _EpisodeStacker,
    chunks: _Chunks,
    episodes: int,
    seed: int,
    bar: tqdm,
) -> None:
    """Step the K environments with the behaviour policy until ``episodes`` episodes ended,
    handing each finished episode to ``chunks`` (in the order they end: by step, then env)."""
    started = time.perf_counter()
    log = _StepLog(list(stacker.obs_leaves), envs.num_envs)
    observation, _ = envs.reset(seed=seed)
    episode_start = np.ones(envs.num_envs, dtype=bool)
    while len(chunks.returns) < episodes:
        # a copy: a policy may reuse its output buffer, and the log keeps the actions
        actions = np.array(
            behaviour.act(observation if behaviour.observes else None, episode_start)
        )
        next_observation, reward, terminated, truncated, info = envs.step(step_actions(actions))
        log.append(observation, actions, reward)
        observation, episode_start = next_observation, done_mask(terminated, truncated)
        if not episode_start.any():
            continue
        ended, final_obs = final_observations(info, envs.single_observation_space)
        success = final_successes(info, envs.num_envs)
        for j, i in enumerate(ended.tolist()[: episodes - len(chunks.returns)]):
            ep_obs, ep_actions, ep_rewards = log.episode(i)
            final = {path: _get(final_obs, path)[j] for path in stacker.obs_leaves}
            arrays = stacker.stack(
                ep_obs, ep_actions, ep_rewards, final, terminated[i], truncated[i], i
            )
            # summed in order from the first reward, as a plain loop over the env would
            chunks.add(arrays, float(sum(ep_rewards.tolist())), success[i])
            bar.update(1)
        log.restart(ended)
        chunks.flush_if_full()  # after all the episodes that ended in this step
        if not bar.disable:
            _show_progress(bar, chunks, started)


def _show_progress(bar: tqdm, chunks: _Chunks, started: float) -> None:
    """Steps/s since ``started`` and the mean return of the last 100 episodes, on the bar."""
    steps = chunks.steps_written + chunks.pending_steps
    bar.set_postfix(
        steps_s=f"{steps / max(time.perf_counter() - started, 1e-9):.0f}",
        ret=f"{np.mean(chunks.returns[-100:]):.3f}",
        refresh=False,
    )
