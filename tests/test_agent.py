"""The SMT agent end to end: PPO on the memory module's own state, DMT, save/load/predict."""

from __future__ import annotations

import functools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.cli import main
from agents.pipeline import train
from agents.smt_ppo import SMTPPO
from envs import make_env
from smt_rl.errors import ConfigError, SpaceError

TMAZE = "smt_rl/PassiveTMaze-v0"


# PassiveTMaze length 20, small enough for the default test run (pretraining settings)
TM20 = [
    "env.kwargs.length=20",
    "data.episodes=500",
    "smt.updates=200",
    "offline_dmt.updates=50",
    "smt.eval_every=1000",
    "ppo.n_steps=64",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """PassiveTMaze length 20 trained from scratch through the whole pipeline."""
    out = tmp_path_factory.mktemp("runs") / "tm20"
    overrides = [*TM20, f"out={out}", "total_timesteps=8192", "eval.episodes=100"]
    summary = train("configs/tmaze.yaml", overrides, progress=False)
    return out, summary


def test_pipeline_solves_tmaze_20_from_scratch(trained_run):
    out, summary = trained_run
    assert summary["eval/success_rate"] >= 0.9
    assert summary["eval/episodes"] == 100
    assert summary["eval/return_mean"] >= 0.8
    for key in ("env_id", "algo", "seed", "env_steps", "wall_s", "eval/return_std"):
        assert key in summary
    assert summary["env_steps"] >= 8192
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoint/model.safetensors",
        "pretrain/summary.json",
    ):
        assert (out / name).is_file(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [x for x in lines if x["phase"] == "rl"]
    assert rl and {"ppo/policy_loss", "dmt/loss", "dmt/memory_mse"} <= set(rl[-1])
    # the stochastic policy learned too (not only its greedy version): it starts near 0.5
    assert rl[0]["rollout/success_rate"] < 0.8 and rl[-1]["rollout/success_rate"] >= 0.85
    # on-policy memory stays close to the teacher: the last rollout's drift was 0.068, 0.076,
    # 0.080 and 0.058 for seeds 0-3 (a diverging DMT reaches 0.3-1; see BENCHMARKS.md)
    assert rl[-1]["dmt/memory_mse"] < 0.15


def test_save_load_predict_gives_the_same_actions(trained_run, tmp_path):
    out, _ = trained_run
    agent = SMTPPO.load(out / "checkpoint")
    agent.save(tmp_path / "copy")
    again = SMTPPO.load(tmp_path / "copy")
    env = make_env(TMAZE, {"length": 20})
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        state_a = state_b = None
        start, reward, done = np.array([True]), np.zeros(1), False
        while not done:
            act_a, state_a = agent.predict(obs[None], state_a, start, True, reward=reward)
            act_b, state_b = again.predict(obs[None], state_b, start, True, reward=reward)
            assert np.array_equal(act_a, act_b)
            torch.testing.assert_close(state_a.memory, state_b.memory)
            obs, r, term, trunc, info = env.step(int(act_a[0]))
            start, reward, done = np.array([False]), np.array([r]), term or trunc
        assert info["success"]  # the loaded agent solves it too
    # `smt-rl eval` on the run folder
    assert main(["eval", str(out), "--episodes", "20"]) == 0
    assert json.loads((out / "eval.json").read_text())["eval/success_rate"] >= 0.9


def test_ppo_update_never_backpropagates_into_the_memory(trained_run, monkeypatch):
    import agents.smt_ppo.agent as agent_module

    out, _ = trained_run
    agent = SMTPPO.load(out / "checkpoint", functools.partial(make_env, TMAZE, {"length": 20}))
    agent.cfg.onpolicy_dmt.enabled = False
    seen = {}
    original = agent_module.ppo_update

    def spy(policy, optimizer, steps, cfg, generator, where=""):
        seen["requires_grad"] = [k for k, v in steps.items() if v.requires_grad]
        result = original(policy, optimizer, steps, cfg, generator, where)
        seen["cell_grads"] = [p.grad for p in agent.model.cell.parameters()]
        seen["encoder_grads"] = [p.grad for p in agent.model.step_encoder.parameters()]
        seen["policy_grads"] = [p.grad for p in agent.policy.parameters()]
        return result

    monkeypatch.setattr(agent_module, "ppo_update", spy)
    agent.learn(agent.num_timesteps + 8 * agent.cfg.ppo.n_steps, progress_bar=False)
    assert seen["requires_grad"] == []  # stored memories and inputs carry no graph
    assert all(g is None for g in seen["cell_grads"] + seen["encoder_grads"])
    assert any(g is not None for g in seen["policy_grads"])


class _TextEnv(gym.Env):
    observation_space = gym.spaces.Text(5)
    action_space = gym.spaces.Discrete(2)


def test_bad_input_fails_before_training(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"ppo\.lrr"):
        train("configs/tmaze.yaml", ["ppo.lrr=1", f"out={tmp_path / 'a'}"], progress=False)
    monkeypatch.setattr("envs.registry.gym.make", lambda *a, **k: _TextEnv(), raising=False)
    with pytest.raises(SpaceError, match="observation_space"):
        train("configs/tmaze.yaml", [f"out={tmp_path / 'b'}"], progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_dataset_of_another_task_fails_before_training(tmp_path):
    from agents.pipeline import collect
    from smt_rl.errors import DatasetError

    data = tmp_path / "tm5"
    collect(TMAZE, episodes=4, out=data, env_kwargs={"length": 5}, progress=False)
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match=r"data\.path.*length"):
        train(
            "configs/tmaze.yaml",
            ["env.kwargs.length=7", f"data.path={data}", f"out={out}"],
            progress=False,
        )
    assert not (out / "pretrain").exists() and not (out / "checkpoint").exists()


@pytest.mark.parametrize(
    "path", sorted(__import__("glob").glob("configs/*.yaml")), ids=lambda p: p.split("/")[-1]
)
def test_every_shipped_config_loads_and_builds_its_agent(path, tmp_path):
    """Each config in configs/ is valid for `smt-rl train` and its task fits the encoder."""
    from agents.config import TrainConfig
    from smt_rl.config import load_config
    from smt_rl.smt.model import SMTModel

    cfg = load_config(TrainConfig, path, [])
    env = make_env(cfg.env.id, dict(cfg.env.kwargs), cfg.env.entry_point)
    model = SMTModel(cfg.model, env.observation_space, env.action_space)
    agent = SMTPPO(model, cfg, device="cpu")
    obs, _ = env.reset(seed=0)
    action, state = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    assert state.memory.shape == (1, cfg.model.memory_tokens, cfg.model.token_dim)
    env.close()


def test_train_reuses_a_finished_pretraining_with_the_same_settings(trained_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out)  # the shared run stays as it was
    pretrain_summary = out / "pretrain" / "summary.json"
    before = pretrain_summary.stat().st_mtime_ns
    base = [*TM20, f"out={out}", "eval.episodes=10"]
    summary = train("configs/tmaze.yaml", [*base, "total_timesteps=1024"], progress=False)
    assert summary["env_steps"] >= 1024
    assert pretrain_summary.stat().st_mtime_ns == before  # not redone
    # a pretraining made before a config key existed is still reused (the key takes its default)
    spec_path = out / "pretrain" / "checkpoint" / "checkpoint.json"
    spec = json.loads(spec_path.read_text())
    del spec["config"]["smt"]["c_term"]
    spec_path.write_text(json.dumps(spec))
    train("configs/tmaze.yaml", [*base, "total_timesteps=1024"], progress=False)
    assert pretrain_summary.stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match=r"smt differ.*out="):
        train("configs/tmaze.yaml", [*base, "smt.updates=201"], progress=False)


def test_decoder_prior_adds_the_predicted_rewards_to_the_logits_and_needs_them_as_features():
    from gymnasium import spaces

    from agents.config import TrainConfig
    from agents.policy import ActorCritic
    from smt_rl.config import load_config
    from smt_rl.smt.model import SMTModel

    torch.manual_seed(0)
    plain = ActorCritic(6, spaces.Discrete(2), 8)
    prior = ActorCritic(6, spaces.Discrete(2), 8, reward_prior=3.0)
    prior.load_state_dict(plain.state_dict())
    features = torch.randn(5, 6)
    features[:, -2:] = torch.tensor([1.0, -1.0])  # the decoder: action 0 pays, action 1 costs
    base = plain(features)[0].parts[0].logits
    shifted = prior(features)[0].parts[0].logits
    # logits are normalised log-probabilities: compare the gap between the two actions
    torch.testing.assert_close(
        (shifted[:, 0] - shifted[:, 1]) - (base[:, 0] - base[:, 1]), torch.full((5,), 6.0)
    )
    assert (prior(features)[0].parts[0].probs[:, 0] > 0.99).all()  # acts on it from the start
    with pytest.raises(SpaceError, match="decoder_prior"):
        ActorCritic(6, spaces.Box(-1, 1, (2,)), 8, reward_prior=1.0)
    cfg = load_config(TrainConfig, "configs/tmaze.yaml", ["ppo.decoder_prior=2.0"])
    env = make_env("smt_rl/PassiveTMaze-v0", {"length": 3})
    model = SMTModel(cfg.model, env.observation_space, env.action_space)
    with pytest.raises(ConfigError, match="decoder_features=true"):
        SMTPPO(model, cfg)
