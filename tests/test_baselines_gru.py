"""The torchrl GRU PPO baseline (``algo: gru_ppo``): API, checkpoint, BPTT, and that it learns."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.modules import set_recurrent_mode

from agents.baselines.gru_ppo import STATE_KEY, GRUPPOAgent
from agents.config import TrainConfig
from agents.evaluate import evaluate_agent
from envs import make_env
from smt_rl.checkpoint import CheckpointError, save_checkpoint
from smt_rl.errors import ConfigError
from smt_rl.spaces import stack_observations

TMAZE = "smt_rl/PassiveTMaze-v0"


def tmaze(length: int):
    return functools.partial(make_env, TMAZE, {"length": length}, None)


def small_cfg(seed: int = 0, **gru_ppo) -> TrainConfig:
    """Small, fast settings: 8 envs x 32 steps per batch, slices of 16 steps."""
    cfg = TrainConfig()
    cfg.seed = seed
    cfg.env.num_envs = 8
    settings = dict(
        frames_per_batch=256, slice_len=16, minibatch_slices=8, gru_hidden=32, hidden=32, lr=2e-3
    )
    settings.update(gru_ppo)
    for key, value in settings.items():
        setattr(cfg.gru_ppo, key, value)
    return cfg


def test_learn_logs_saves_loads_and_predicts_the_same(tmp_path):
    env_fn = tmaze(2)
    lines = []
    agent = GRUPPOAgent(small_cfg(), env_fn, device="cpu")
    agent.logger = lambda step, metrics: lines.append((step, metrics))
    assert agent.learn(600) is agent
    assert agent.num_timesteps >= 600 and agent.num_timesteps == 768  # whole batches of 256
    assert [step for step, _ in lines] == [256, 512, 768]
    keys = {
        "rollout/return_mean",
        "rollout/success_rate",
        "time/steps_per_s",
        "ppo/loss_objective",
        "ppo/loss_critic",
        "ppo/loss_entropy",
    }
    for _, metrics in lines:
        assert keys <= set(metrics)
        assert all(np.isfinite(metrics[k]) for k in keys)
        assert 0.0 <= metrics["rollout/success_rate"] <= 1.0
        assert -1.0 <= metrics["rollout/return_mean"] <= 1.0

    # same seed, same run
    again = GRUPPOAgent(small_cfg(), env_fn, device="cpu")
    again_lines = []
    again.logger = lambda step, metrics: again_lines.append(metrics["ppo/loss_critic"])
    again.learn(600)
    assert again_lines == [m["ppo/loss_critic"] for _, m in lines]

    folder = agent.save(tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "model.safetensors"]
    for path in folder.iterdir():  # no pickle anywhere (pickle protocol 2+ starts with 0x80)
        assert not path.read_bytes().startswith(b"\x80")
        assert b"torch._utils" not in path.read_bytes()
    spec = json.loads((folder / "checkpoint.json").read_text())
    assert spec["kind"] == "gru_ppo_agent" and spec["num_timesteps"] == 768
    loaded = GRUPPOAgent.load(folder, device="cpu")  # no env needed
    assert loaded.num_timesteps == 768
    assert loaded.cfg.gru_ppo.gru_hidden == 32

    # 4 envs side by side through whole episodes, state carried, resets where episodes start
    envs = [env_fn() for _ in range(4)]
    obs = [env.reset(seed=100 + i)[0] for i, env in enumerate(envs)]
    state_a = state_b = None
    starts = np.ones(4, dtype=bool)
    for _ in range(12):  # 3 episodes of 4 steps each
        batch = stack_observations(obs, envs[0].observation_space)
        act_a, state_a = agent.predict(batch, state_a, starts, deterministic=True)
        act_b, state_b = loaded.predict(batch, state_b, starts, deterministic=True)
        assert act_a.shape == (4,) and act_a.dtype == np.int64
        np.testing.assert_array_equal(act_a, act_b)
        torch.testing.assert_close(state_a, state_b)
        for i, env in enumerate(envs):
            o, _, terminated, truncated, _ = env.step(int(act_a[i]))
            starts[i] = terminated or truncated
            obs[i] = env.reset()[0] if starts[i] else o

    # a checkpoint of another kind is refused by name
    save_checkpoint(tmp_path / "other", agent.net, {"kind": "smt_ppo_agent"})
    with pytest.raises(CheckpointError, match="smt_ppo_agent"):
        GRUPPOAgent.load(tmp_path / "other")


def test_bptt_gradient_reaches_the_first_step_of_a_slice():
    """The loss at a slice's last step depends on the first step's input only through the GRU
    unrolled over the slice: nonzero gradient in the agent's training path (recurrent mode),
    zero when each step reads its stored state (what a non-BPTT update would do)."""
    agent = GRUPPOAgent(small_cfg(), tmaze(2), device="cpu")
    length, hidden = 6, agent.cfg.gru_ppo.gru_hidden

    def slice_td() -> TensorDict:
        gen = torch.Generator().manual_seed(0)
        is_init = torch.zeros(2, length, 1, dtype=torch.bool)
        is_init[:, 0] = True
        return TensorDict(
            {
                "observation": torch.eye(4)[torch.randint(4, (2, length), generator=gen)],
                "is_init": is_init,
                STATE_KEY: torch.zeros(2, length, 1, hidden),
                "action": torch.randint(2, (2, length), generator=gen),
                "action_log_prob": torch.full((2, length), -0.69),
                "advantage": torch.randn(2, length, 1, generator=gen),
                "value_target": torch.randn(2, length, 1, generator=gen),
                "state_value": torch.zeros(2, length, 1),
            },
            batch_size=[2, length],
        )

    for term in ("loss_objective", "loss_critic"):
        td = slice_td()
        obs = td["observation"].requires_grad_(True)
        out = agent.minibatch_loss(td)
        assert out[term].shape == (2, length)
        out[term][:, -1].sum().backward()
        assert obs.grad[:, 0].abs().sum() > 0, term  # through length - 1 GRU steps
        gru_grad = agent.net.gru.gru.weight_hh_l0.grad
        assert gru_grad is not None and gru_grad.abs().sum() > 0
        agent.optimizer.zero_grad(set_to_none=True)

    # the contrast: one GRU step per stored state (no unroll) gives the last step no gradient
    # from the first (ClipPPOLoss itself always runs in recurrent mode, so check the actor)
    for mode, expect_grad in ((False, False), (True, True)):
        td = slice_td()
        obs = td["observation"].requires_grad_(True)  # the module writes a view back into td
        with set_recurrent_mode(mode):
            log_prob = agent.actor.get_dist(td).log_prob(td["action"])
        log_prob[:, -1].sum().backward()
        assert bool(obs.grad[:, 0].abs().sum() > 0) == expect_grad


def test_slices_replay_the_collected_steps_exactly():
    """Unrolling the GRU over the training slices (from each slice's stored first state, with
    resets inside slices) reproduces the collector's log-probabilities and values, and the value
    of each next observation equals the next step's stored value within an episode."""
    agent = GRUPPOAgent(small_cfg(), tmaze(3), device="cpu")  # 5-step episodes, 32-step rows
    env = agent.make_env()
    env.set_seed(0)
    collector = Collector(
        env,
        agent.collect_policy,
        frames_per_batch=256,
        total_frames=512,
        auto_register_policy_transforms=False,
    )
    try:
        batches = list(collector)
    finally:
        collector.shutdown()
    data = batches[-1]  # the second batch starts from states carried over from the first
    assert data.shape == (8, 32)
    assert data[STATE_KEY][:, 0].abs().sum() > 0  # rows start inside episodes
    agent.add_advantages(data)
    going_on = ~data["next", "done"].squeeze(-1)[:, :-1]
    torch.testing.assert_close(
        data["next", "state_value"][:, :-1][going_on], data["state_value"][:, 1:][going_on]
    )
    seqs = agent.slices(data)
    assert seqs.shape == (16, 16)
    assert seqs["is_init"][:, 1:].any()  # and episodes start inside slices
    with torch.no_grad(), set_recurrent_mode(True):
        dist = agent.actor.get_dist(seqs.clone())
        values = agent.critic(seqs.clone())["state_value"]
    torch.testing.assert_close(dist.log_prob(seqs["action"]), seqs["action_log_prob"])
    torch.testing.assert_close(values, seqs["state_value"])
    out = agent.minibatch_loss(seqs)
    assert float(out["kl_approx"]) == pytest.approx(0.0, abs=1e-6)


def test_spaces_and_settings_are_checked():
    cfg = small_cfg()
    obs_space = spaces.Dict(
        {"image": spaces.Box(0, 255, (3, 3, 2), np.uint8), "direction": spaces.Discrete(4)}
    )
    agent = GRUPPOAgent(cfg, observation_space=obs_space, action_space=spaces.Discrete(3))
    batch = stack_observations([obs_space.sample() for _ in range(5)], obs_space)
    actions, state = agent.predict(batch, None, None, deterministic=False)
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1, 2}
    assert state.shape == (5, 1, cfg.gru_ppo.gru_hidden)
    single, _ = agent.predict(obs_space.sample())
    assert np.ndim(single) == 0

    with pytest.raises(ValueError, match="action_space"):
        GRUPPOAgent(cfg, observation_space=obs_space, action_space=spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="observation_space"):
        GRUPPOAgent(cfg, observation_space=spaces.Text(5), action_space=spaces.Discrete(2))
    with pytest.raises(ConfigError, match="slice_len"):
        GRUPPOAgent(small_cfg(slice_len=12), tmaze(2))
    with pytest.raises(ValueError, match="env_fn"):
        GRUPPOAgent(cfg)


def test_gru_ppo_solves_a_short_tmaze():
    """PassiveTMaze length 4 (the cue must be held 5 steps): a GRU that is reset, fed or trained
    wrongly stays at chance (0.5). 40 batches of 256 steps."""
    env_fn = tmaze(4)
    agent = GRUPPOAgent(small_cfg(seed=0), env_fn, device="cpu")
    lines = []
    agent.logger = lambda step, metrics: lines.append(metrics)
    agent.learn(10_240)
    assert lines[0]["rollout/success_rate"] < 0.7
    assert lines[-1]["rollout/success_rate"] >= 0.9
    result = evaluate_agent(agent, env_fn, 100, seed=1000, deterministic=True)
    assert result["eval/success_rate"] >= 0.9
