"""The stable-baselines3 baselines: learn + logging, pickle-free save/load/predict, a memory test
that separates the LSTM agent from memoryless PPO, Dict observations, clear errors."""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from agents.baselines.sb3 import RecurrentPPOAgent, SB3PPOAgent, flat_space, flatten_batch
from agents.config import TrainConfig
from agents.evaluate import evaluate_agent
from envs import make_env
from smt_rl.checkpoint import CheckpointError
from smt_rl.config import config_from_dict
from smt_rl.spaces import stack_observations

TMAZE = "smt_rl/PassiveTMaze-v0"
AGENTS = [SB3PPOAgent, RecurrentPPOAgent]
CUE_LEFT, CUE_RIGHT, CORRIDOR, JUNCTION = np.eye(4, dtype=np.float32)


def tmaze(length: int):
    return functools.partial(make_env, TMAZE, {"length": length}, None)


def make_cfg(seed: int = 0, num_envs: int = 4, **section) -> TrainConfig:
    """A config whose ``sb3_ppo`` and ``recurrent_ppo`` sections both get ``section``."""
    lstm = {k: v for k, v in section.items() if k.startswith(("lstm", "n_lstm", "enable"))}
    common = {k: v for k, v in section.items() if k not in lstm}
    return config_from_dict(
        TrainConfig,
        {
            "seed": seed,
            "env": {"num_envs": num_envs},
            "sb3_ppo": common,
            "recurrent_ppo": {**common, **lstm},
        },
    )


TINY = {"n_steps": 32, "batch_size": 64, "hidden": 16, "lstm_hidden_size": 16}


@pytest.fixture(scope="module", params=AGENTS, ids=lambda c: c.__name__)
def trained(request, tmp_path_factory):
    """An agent trained for a tiny budget on a T-maze of length 2, its log lines and a save."""
    cls = request.param
    agent = cls(make_cfg(**TINY), tmaze(2), device="cpu")
    lines: list[tuple[int, dict[str, float]]] = []
    agent.logger = lambda steps, metrics: lines.append((steps, metrics))
    agent.learn(500)
    folder = tmp_path_factory.mktemp("ckpt") / cls.__name__
    agent.save(folder)
    return agent, lines, folder


def test_learn_logs_every_rollout(trained):
    agent, lines, _ = trained
    assert agent.num_timesteps >= 500
    assert agent.num_timesteps % (32 * 4) == 0  # whole rollouts of n_steps x num_envs
    assert len(lines) == agent.num_timesteps // (32 * 4)
    assert [s for s, _ in lines] == sorted(s for s, _ in lines)
    assert lines[-1][0] == agent.num_timesteps
    last = lines[-1][1]
    for key in (
        "rollout/return_mean",
        "rollout/success_rate",
        "time/steps_per_s",
        "ppo/entropy",
        "ppo/approx_kl",
        "ppo/value_loss",
        "ppo/policy_loss",
        "ppo/lr",
    ):
        assert key in last and math.isfinite(last[key]), key
    assert 0.0 <= last["rollout/success_rate"] <= 1.0
    assert -1.0 <= last["rollout/return_mean"] <= 1.0
    assert 0.0 < last["ppo/entropy"] <= math.log(2) + 1e-6
    # lr decays linearly to 0 at the end of the budget; the last update still learns
    lrs = [m["ppo/lr"] for _, m in lines]
    assert (
        lrs == sorted(lrs, reverse=True)
        and lrs[0] == pytest.approx(agent.settings.lr)
        and lrs[-1] > 0
    )


def test_save_has_no_pickle_and_load_predicts_identically(trained):
    agent, _, folder = trained
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "model.safetensors"]
    loaded = type(agent).load(folder)
    assert loaded.model is None and loaded.num_timesteps == agent.num_timesteps
    batch = np.stack([CUE_LEFT, CUE_RIGHT, CORRIDOR, JUNCTION])  # (4, 4)
    want, _ = agent.predict(batch, deterministic=True)
    got, _ = loaded.predict(batch, deterministic=True)
    assert got.shape == (4,) and got.dtype.kind == "i"
    np.testing.assert_array_equal(got, want)
    # one unbatched observation gives one action
    single, _ = loaded.predict(JUNCTION, deterministic=True)
    assert np.shape(single) == () and single == want[3]


@pytest.mark.parametrize("trained", [RecurrentPPOAgent], indirect=True, ids=["RecurrentPPOAgent"])
def test_recurrent_state_carries_identically_after_load(trained):
    agent, _, folder = trained
    loaded = RecurrentPPOAgent.load(folder)
    episodes = [  # 2 envs: cue left / cue right, corridor x2, junction, then a new episode
        np.stack([CUE_LEFT, CUE_RIGHT]),
        np.stack([CORRIDOR, CORRIDOR]),
        np.stack([CORRIDOR, CORRIDOR]),
        np.stack([JUNCTION, JUNCTION]),
        np.stack([CUE_RIGHT, CUE_LEFT]),
    ]
    starts = [np.ones(2, bool), *[np.zeros(2, bool)] * 3, np.ones(2, bool)]
    states = {"trained": None, "loaded": None}
    for obs, start in zip(episodes, starts, strict=True):
        a, states["trained"] = agent.predict(obs, states["trained"], start, deterministic=True)
        b, states["loaded"] = loaded.predict(obs, states["loaded"], start, deterministic=True)
        np.testing.assert_array_equal(a, b)
        h, c = states["loaded"]
        assert h.shape == c.shape == (1, 2, 16)  # (n_lstm_layers, N, lstm_hidden_size)
        for x, y in zip(states["trained"], states["loaded"], strict=True):
            np.testing.assert_array_equal(x, y)
    # the state depends on the cue: the two envs' memories differ at the junction
    assert not np.allclose(h[0, 0], h[0, 1])


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        agent = SB3PPOAgent(make_cfg(seed=3, **TINY), tmaze(2), device="cpu")
        lines: list[dict[str, float]] = []
        agent.logger = lambda _steps, metrics, out=lines: out.append(metrics)
        agent.learn(256)
        runs.append([{k: v for k, v in m.items() if not k.startswith("time/")} for m in lines])
    assert runs[0] == runs[1]


def test_load_checks_kind_and_learn_needs_env(trained):
    agent, _, folder = trained
    other = RecurrentPPOAgent if isinstance(agent, SB3PPOAgent) else SB3PPOAgent
    with pytest.raises(CheckpointError, match=agent.kind):
        other.load(folder)
    with pytest.raises(ValueError, match="env_fn"):
        type(agent).load(folder).learn(64)


def test_loaded_agent_with_env_keeps_learning(trained):
    agent, _, folder = trained
    resumed = type(agent).load(folder, env_fn=tmaze(2), device="cpu")
    before = resumed.num_timesteps
    resumed.learn(before + 128)
    assert resumed.num_timesteps == before + 128


def test_registry_maps_algos_to_agents():
    from agents.baselines.gru_ppo import GRUPPOAgent
    from agents.registry import agent_class
    from agents.smt_ppo import SMTPPO

    assert agent_class("ppo") is SB3PPOAgent
    assert agent_class("recurrent_ppo") is RecurrentPPOAgent
    assert agent_class("gru_ppo") is GRUPPOAgent
    assert agent_class("smt_ppo") is SMTPPO


# --------------------------------------------------------------------------- learning
# PassiveTMaze length 4: the cue is seen 5 steps before the junction. On one CPU thread
# RecurrentPPO solves it (eval success 1.0 for seeds 0-5 at this budget, ~10 s each), while
# memoryless PPO cannot beat chance (0.48 for seeds 0-2): its junction observation is the same
# for both cues.
LEARN = {"n_steps": 32, "batch_size": 64, "lr": 1e-3, "hidden": 32, "lstm_hidden_size": 32}


def _trained_success(cls: type, seed: int) -> float:
    agent = cls(make_cfg(seed=seed, num_envs=8, **LEARN), tmaze(4), device="cpu")
    agent.learn(8192)
    result = evaluate_agent(agent, tmaze(4), 100, seed=1000, deterministic=True)
    return result["eval/success_rate"]


def test_recurrent_ppo_remembers_the_cue():
    assert _trained_success(RecurrentPPOAgent, seed=0) >= 0.9


def test_memoryless_ppo_stays_at_chance():
    assert _trained_success(SB3PPOAgent, seed=0) <= 0.7


# --------------------------------------------------------------------------- spaces
@pytest.mark.parametrize("cls", AGENTS, ids=lambda c: c.__name__)
def test_minigrid_dict_observations(cls, tmp_path):
    env_fn = functools.partial(make_env, "MiniGrid-MemoryS7-v0", {"movement_only": True}, None)
    env = env_fn()
    agent = cls(make_cfg(num_envs=2, n_steps=64, batch_size=64), env_fn, device="cpu")
    assert agent.model.observation_space.shape == (4 + 7 * 7 * 3,)  # one-hot direction + image
    agent.learn(256)
    assert agent.num_timesteps == 256
    observations = [env.reset(seed=i)[0] for i in range(3)]
    batch = stack_observations(observations, env.observation_space)
    actions, _ = agent.predict(batch, deterministic=True)
    assert actions.shape == (3,) and all(env.action_space.contains(int(a)) for a in actions)
    agent.save(tmp_path / "mg")
    loaded = cls.load(tmp_path / "mg")
    assert loaded.observation_space == env.observation_space
    np.testing.assert_array_equal(loaded.predict(batch, deterministic=True)[0], actions)
    single, _ = loaded.predict(observations[0], deterministic=True)
    assert np.shape(single) == () and single == actions[0]
    env.close()


def test_flattening_is_float_and_one_hot():
    space = spaces.Dict(
        {
            "image": spaces.Box(0, 10, (2, 2, 1), np.uint8),
            "direction": spaces.Discrete(4),
            "bits": spaces.MultiDiscrete([2, 3]),
        }
    )
    flat = flat_space(space)
    assert flat.shape == (4 + 4 + 5,) and flat.dtype == np.float32
    sample = {"image": np.full((2, 2, 1), 7, np.uint8), "direction": 2, "bits": np.array([1, 0])}
    row = flatten_batch(space, [sample])[0]
    assert row.dtype == np.float32
    # Dict keys sorted: bits (one-hot 2 + 3), direction (one-hot 4), image (4 values)
    np.testing.assert_array_equal(row, [0, 1, 1, 0, 0, 0, 0, 1, 0, 7, 7, 7, 7])


class _TextEnv(gym.Env):
    observation_space = spaces.Dict({"mission": spaces.Text(10), "x": spaces.Discrete(2)})
    action_space = spaces.Discrete(2)


@pytest.mark.parametrize("cls", AGENTS, ids=lambda c: c.__name__)
def test_unflattenable_observation_space_is_a_clear_error(cls):
    with pytest.raises(ValueError, match=r"observation_space\['mission'\].*Text.*wrapper"):
        cls(make_cfg(num_envs=1), _TextEnv, device="cpu")
