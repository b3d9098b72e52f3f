"""Vectorised stepping: make_vector_env and its helpers, and the data collect_episodes and
evaluate_agent get through it, checked against plain loops over single gymnasium envs."""

from __future__ import annotations

import copy
import functools
import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from agents.evaluate import evaluate_agent
from envs import make_env
from smt_rl.data import TrajectoryDataset, collect_episodes, env_description
from smt_rl.data.policies import RandomPolicy
from smt_rl.data.vector import (
    done_mask,
    final_observations,
    final_successes,
    make_vector_env,
    step_actions,
)
from smt_rl.errors import ConfigError
from smt_rl.spaces import leaf_spaces, stack_observations, torch_dtype


class _TwoStepEnv(gym.Env):
    """Episodes of ``length`` steps with a Dict observation; logs the seed of every reset.

    The last step reports ``info["success"] = True`` only when the action is 1 (nothing else).
    """

    observation_space = spaces.Dict(
        {"t": spaces.Box(0.0, 10.0, (2,), np.float32), "n": spaces.Discrete(5)}
    )
    action_space = spaces.Discrete(2)

    def __init__(self, length: int = 2) -> None:
        self.length, self.t, self.seeds = length, 0, []

    def _obs(self) -> dict:
        return {"t": np.array([self.t, self.length], np.float32), "n": self.t}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        info = {"success": True} if done and action == 1 else {}
        return self._obs(), float(action), done, False, info


# ---------------------------------------------------------------------------------------------
# make_vector_env and the helpers


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_env_i_is_seeded_with_seed_plus_i_once(vectorization: str) -> None:
    envs = make_vector_env(_TwoStepEnv, 3, vectorization)
    envs.reset(seed=7)
    for _ in range(5):  # two episodes end in every env, reset in the same step
        envs.step(np.zeros(3, np.int64))
    assert envs.get_attr("seeds") == ([7, None, None], [8, None, None], [9, None, None])
    envs.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_envs": 0}, "num_envs"),
        ({"num_envs": True}, "num_envs"),
        ({"num_envs": 2.0}, "num_envs"),
        ({"num_envs": 2, "vectorization": "threads"}, "vectorization"),
    ],
)
def test_bad_vector_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_vector_env(_TwoStepEnv, **kwargs)


def test_step_results_as_arrays() -> None:
    envs = make_vector_env(functools.partial(_TwoStepEnv, length=2), 3)
    observation, _ = envs.reset(seed=0)
    _, _, terminated, truncated, info = envs.step(step_actions(np.array([0, 1, 1])))
    assert not done_mask(terminated, truncated).any()
    assert final_successes(info, 3) == [None, None, None]
    ended, final = final_observations(info, envs.single_observation_space)
    assert ended.shape == (0,) and final["t"].shape == (0, 2)

    observation, _, terminated, truncated, info = envs.step(np.array([0, 1, 1]))
    np.testing.assert_array_equal(done_mask(terminated, truncated), [True, True, True])
    assert final_successes(info, 3) == [None, True, True]  # env 0 reported no success
    ended, final = final_observations(info, envs.single_observation_space)
    np.testing.assert_array_equal(ended, [0, 1, 2])
    np.testing.assert_array_equal(final["t"], [[2, 2]] * 3)  # o_L of the episodes that ended
    np.testing.assert_array_equal(final["n"], [2, 2, 2])
    np.testing.assert_array_equal(observation["n"], [0, 0, 0])  # already the next episodes
    assert step_actions(np.array([1, 0])) == [1, 0] and type(step_actions(np.array([1]))[0]) is int
    envs.close()


# ---------------------------------------------------------------------------------------------
# collect_episodes: the same data as a plain loop over single envs


def _plain_loop_episodes(env_fn, num_envs: int, seed: int, episodes: int) -> list[tuple]:
    """Whole episodes of the random policy, stepping K single envs one after the other.

    Env i is reset with ``seed + i`` first, then without a seed; episodes are listed in the order
    they end (by step, then by env). Returns ``(observations o_0..o_L, actions, rewards,
    terminated, truncated, success, step of the loop it ended in)`` per episode.
    """
    envs = [env_fn() for _ in range(num_envs)]
    policy = RandomPolicy(envs[0].action_space, num_envs, seed)
    running = [([env.reset(seed=seed + i)[0]], [], []) for i, env in enumerate(envs)]
    done: list[tuple] = []
    for step in itertools.count():
        if len(done) >= episodes:
            return done
        actions = policy.act(None, np.ones(num_envs, bool))
        for i, env in enumerate(envs):
            obs, reward, terminated, truncated, info = env.step(actions[i].item())
            observations, taken, rewards = running[i]
            observations.append(copy.deepcopy(obs))
            taken.append(actions[i])
            rewards.append(reward)
            if terminated or truncated:
                if len(done) < episodes:
                    success = info.get("success")
                    done.append((*running[i], terminated, truncated, success, step))
                running[i] = ([env.reset()[0]], [], [])
    raise AssertionError("unreachable")


def _chunk_sizes(episodes: list[tuple], chunk_steps: int) -> list[int]:
    """Episodes per chunk: a chunk is written after the first loop step at which the episodes
    waiting hold ``chunk_steps`` steps or more, and the rest at the end."""
    sizes, waiting, steps = [], 0, 0
    for k, episode in enumerate(episodes):
        waiting, steps = waiting + 1, steps + len(episode[1])
        last_of_its_step = k + 1 == len(episodes) or episodes[k + 1][-1] != episode[-1]
        if last_of_its_step and (steps >= chunk_steps or k + 1 == len(episodes)):
            sizes.append(waiting)
            waiting, steps = 0, 0
    return sizes


def _stored_layout(episodes: list[tuple], obs_space, act_space) -> TensorDict:
    """The steps of ``episodes`` as the dataset stores them (see DESIGN: TensorDict keys)."""
    columns: dict[tuple[str, ...], list] = {}

    def add(key: tuple[str, ...], value: np.ndarray) -> None:
        columns.setdefault(key, []).append(value)

    for observations, actions, rewards, terminated, truncated, *_ in episodes:
        length = len(actions)
        for path, space in leaf_spaces(obs_space).items():
            dtype = torch.empty((), dtype=torch_dtype(space)).numpy().dtype
            leaf = [functools.reduce(lambda o, k: o[k], path, o) for o in observations]
            values = np.asarray(leaf, dtype=dtype).reshape(length + 1, *space.shape)
            add(("observation", *path), values[:-1])
            add(("next", "observation", *path), values[1:])
        act_dtype = torch.empty((), dtype=torch_dtype(act_space)).numpy().dtype
        add(("action",), np.asarray(actions, act_dtype).reshape(length, *act_space.shape))
        add(("next", "reward"), np.asarray(rewards, np.float32))
        last = np.arange(length) == length - 1
        add(("next", "terminated"), last & terminated)
        add(("next", "truncated"), last & truncated)
        add(("next", "done"), last)
        add(("step_count",), np.arange(length))
        add(("is_init",), np.arange(length) == 0)
    steps = TensorDict(batch_size=[sum(len(e[1]) for e in episodes)])
    for key, parts in columns.items():
        steps.set(key, torch.from_numpy(np.concatenate(parts)))
    return steps


COLLECT_CASES = {
    "tmaze": ("smt_rl/PassiveTMaze-v0", {"length": 5}, 40, 4, 3, "sync"),
    "tmaze async": ("smt_rl/PassiveTMaze-v0", {"length": 5}, 40, 4, 3, "async"),
    "minigrid (Dict obs)": ("MiniGrid-MemoryS7-v0", {}, 10, 4, 3, "sync"),
    "popgym": ("popgym-RepeatFirstEasy-v0", {}, 10, 4, 3, "sync"),
    "popgym MultiDiscrete": ("popgym-AutoencodeEasy-v0", {}, 6, 2, 1, "sync"),
}


@pytest.mark.parametrize("case", COLLECT_CASES)
def test_collected_data_equal_a_plain_loop_tensor_for_tensor(case: str, tmp_path) -> None:
    env_id, kwargs, episodes, num_envs, seed, vectorization = COLLECT_CASES[case]
    env_fn = functools.partial(make_env, env_id, kwargs, None)
    result = collect_episodes(
        env_fn,
        env=env_description(env_id, kwargs, None),
        episodes=episodes,
        out=tmp_path / "d",
        num_envs=num_envs,
        seed=seed,
        vectorization=vectorization,
        chunk_steps=200,  # several chunks
        progress=False,
    )
    dataset = TrajectoryDataset(tmp_path / "d")
    reference = _plain_loop_episodes(env_fn, num_envs, seed, episodes)
    expected = _stored_layout(reference, dataset.observation_space, dataset.action_space)
    stored = dataset.to_tensordict()
    assert set(stored.keys(True, True)) == set(expected.keys(True, True))
    for key in expected.keys(True, True):
        assert stored[key].dtype == expected[key].dtype, key
        assert torch.equal(stored[key], expected[key]), key
    chunks = dataset.meta["chunks"]
    assert [len(c["returns"]) for c in chunks] == _chunk_sizes(reference, 200)
    assert len(chunks) > 1
    assert [r for c in chunks for r in c["returns"]] == [float(sum(e[2])) for e in reference]
    successes = [e[5] for e in reference]
    if all(s is not None for s in successes):
        assert [s for c in chunks for s in c["successes"]] == successes
    assert result.episodes == episodes and result.steps == stored.batch_size[0]


# ---------------------------------------------------------------------------------------------
# evaluate_agent: the same results as a plain loop over single envs


class _StubAgent:
    """Deterministic: the action depends on the observation, the step, the reward and starts."""

    def __init__(self, env: gym.Env) -> None:
        self.observation_space, self.action_space = env.observation_space, env.action_space

    def predict(self, observation, state, episode_start, deterministic, reward):
        is_dict = isinstance(observation, dict)
        leaves = [observation[k] for k in sorted(observation)] if is_dict else [observation]
        n = len(episode_start)
        state = np.where(episode_start, 0, (np.zeros(n, np.int64) if state is None else state) + 1)
        flat = np.concatenate([np.asarray(x, np.float64).reshape(n, -1) for x in leaves], 1)
        score = flat @ np.arange(1, flat.shape[1] + 1) + 3 * state + 7 * np.asarray(reward)
        return np.floor(np.abs(score)).astype(np.int64) % self.action_space.n, state


def _plain_loop_evaluation(agent, env_fn, episodes: int, seed: int, num_envs: int) -> dict:
    envs = [env_fn() for _ in range(num_envs)]
    observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    state, starts = None, np.ones(num_envs, bool)
    previous = np.zeros(num_envs, np.float32)
    running, steps = [0.0] * num_envs, [0] * num_envs
    returns, lengths, successes = [], [], []
    while len(returns) < episodes:
        batch = stack_observations(observations, agent.observation_space)
        actions, state = agent.predict(batch, state, starts.copy(), True, previous.copy())
        for i, env in enumerate(envs):
            obs, reward, terminated, truncated, info = env.step(actions[i].item())
            running[i], steps[i], previous[i] = running[i] + reward, steps[i] + 1, reward
            starts[i] = terminated or truncated
            if starts[i]:
                if len(returns) < episodes:
                    returns.append(running[i])
                    lengths.append(steps[i])
                    if "success" in info:
                        successes.append(bool(info["success"]))
                obs, _ = env.reset()
                running[i], steps[i], previous[i] = 0.0, 0, 0.0
            observations[i] = obs
    return {
        "eval/return_mean": float(np.mean(returns)),
        "eval/return_std": float(np.std(returns)),
        "eval/success_rate": float(np.mean(successes)) if successes else None,
        "eval/episodes": len(returns),
        "eval/length_mean": float(np.mean(lengths)),
    }


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("smt_rl/PassiveTMaze-v0", {"length": 3}),
        ("MiniGrid-MemoryS7-v0", {"movement_only": True, "max_steps": 30}),
        ("popgym-RepeatFirstEasy-v0", {}),
    ],
)
@pytest.mark.parametrize("num_envs", [1, 3])
def test_evaluation_equals_a_plain_loop(env_id: str, kwargs: dict, num_envs: int) -> None:
    env_fn = functools.partial(make_env, env_id, kwargs, None)
    agent = _StubAgent(env_fn())
    expected = _plain_loop_evaluation(agent, env_fn, 7, 11, num_envs)
    assert evaluate_agent(agent, env_fn, 7, seed=11, num_envs=num_envs) == expected
