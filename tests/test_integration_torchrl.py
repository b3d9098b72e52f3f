"""The SMT memory inside torchrl: module keys and shapes, resets, both recurrent modes, equality
with the SMT agent's own memory, the PPO example (reduced), and datasets to/from torchrl."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from example_scripts import load_example
from tensordict import TensorDict
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import SliceSampler
from torchrl.envs import Compose, GymEnv, InitTracker, SerialEnv, TransformedEnv
from torchrl.envs.utils import RandomPolicy
from torchrl.modules import set_recurrent_mode

import envs  # noqa: F401
from agents.config import TrainConfig
from agents.smt_ppo import SMTPPO
from smt_rl.checkpoint import CheckpointError, save_checkpoint
from smt_rl.data import TrajectoryDataset
from smt_rl.data.torchrl_io import (
    dataset_to_replay_buffer,
    dataset_to_tensordict,
    episodes_from_tensordict,
    write_tensordict,
)
from smt_rl.errors import ConfigError, DatasetError
from smt_rl.integrations import PretrainedMemory
from smt_rl.integrations.torchrl import SMTMemoryModule
from smt_rl.smt.model import load_smt_model

TMAZE = "smt_rl/PassiveTMaze-v0"


def _tmazes(*lengths: int, one_hot: bool = False) -> SerialEnv:
    """One PassiveTMaze per length (different lengths: the episodes end at different steps)."""
    return SerialEnv(
        len(lengths),
        [
            (lambda n=n: GymEnv(TMAZE, length=n, categorical_action_encoding=not one_hot))
            for n in lengths
        ],
    )


@pytest.fixture(scope="module")
def example_run(tmaze30_checkpoint):
    """The example's PPO, reduced to length 30 and 8 batches; keeps the first collected batch."""
    batches = []
    example = load_example("torchrl_ppo")
    policy, env = example.train(
        tmaze30_checkpoint,
        length=30,
        frames=8192,
        num_envs=8,
        frames_per_batch=1024,
        seed=0,
        on_batch=lambda data: batches.append(data.clone()) if not batches else None,
    )
    return example, policy, env, batches[0]


def test_example_ppo_on_smt_memory_solves_tmaze_30(example_run):
    example, policy, env, _ = example_run
    assert example.success_rate(env, policy, 48) >= 0.9


def test_collected_keys_shapes_and_state_hand_over(example_run, tmaze30_checkpoint):
    _, _, _, data = example_run
    k, d = PretrainedMemory.from_checkpoint(tmaze30_checkpoint).memory_shape
    b, t = data.batch_size
    assert (b, t) == (8, 128)
    assert data["memory"].shape == (b, t, k * d)
    assert data["recurrent_state"].shape == (b, t, k, d)
    assert data["next", "recurrent_state"].shape == (b, t, k, d)
    assert data["next", "memory"].shape == (b, t, k * d)  # fill_next
    for key in ("prev_action", "prev_reward", "step_count", "is_init", "advantage"):
        assert key in data
    # the state a step reads is the one the previous step wrote (within an episode; the
    # primer zeroes it at a reset and the module replaces it by its initial state there)
    is_init = data["is_init"].squeeze(-1)
    later = ~is_init[:, 1:]
    torch.testing.assert_close(
        data["recurrent_state"][:, 1:][later], data["next", "recurrent_state"][:, :-1][later]
    )
    torch.testing.assert_close(
        data["memory"][:, 0], data["next", "recurrent_state"][:, 0].flatten(-2)
    )
    # previous action / reward are the last step's, zero at episode starts
    assert is_init[:, 0].all() and is_init[:, 32].all() and not is_init[:, 1:32].any()
    assert (data["prev_action"][:, 1:] == data["action"][:, :-1])[later].all()
    prev_reward = data["prev_reward"][:, 1:].squeeze(-1)
    assert (prev_reward == data["next", "reward"][:, :-1].squeeze(-1))[later].all()
    assert (data["prev_action"][is_init] == 0).all()
    assert (data["step_count"].squeeze(-1)[:, :32] == torch.arange(32)).all()
    # fill_next: the memory after o_{t+1} is the next row's memory within an episode
    torch.testing.assert_close(
        data["next", "memory"][:, :-1][later], data["memory"][:, 1:][later], atol=1e-5, rtol=0
    )


def test_module_equals_the_agents_own_memory(example_run, tmaze30_checkpoint):
    """Step the SMT agent (``SMTPPO.predict``) along the collected trajectory: same memory."""
    _, _, _, data = example_run
    agent = SMTPPO(load_smt_model(tmaze30_checkpoint), TrainConfig(), device="cpu")
    state = None
    for step in range(data.shape[1]):
        row = data[:, step]
        starts = row["is_init"].squeeze(-1).numpy()
        reward = row["prev_reward"].squeeze(-1).numpy()
        _, state = agent.predict(row["observation"].numpy(), state, starts, reward=reward)
        torch.testing.assert_close(state.memory.flatten(1), row["memory"], atol=1e-5, rtol=0)
        state.prev_action = row["action"].clone()  # the action the torchrl policy took


def test_recurrent_mode_scans_whole_trajectories(example_run, tmaze30_checkpoint):
    _, _, _, data = example_run
    module = SMTMemoryModule(tmaze30_checkpoint)
    replay = data.select(*module.in_keys).clone()
    replay["recurrent_state"][:, 1:] = 7.0  # recurrent mode reads only the first step's state
    with set_recurrent_mode(True):
        module(replay)
    torch.testing.assert_close(replay["memory"], data["memory"], atol=1e-5, rtol=0)
    # sequential mode reads each row's stored state: garbage states give other memories
    # except at episode starts, where the state is reset whatever it holds
    garbage = data.select(*module.in_keys).clone()
    garbage["recurrent_state"] = torch.randn_like(garbage["recurrent_state"])
    module(garbage)
    starts = data["is_init"].squeeze(-1)
    torch.testing.assert_close(garbage["memory"][starts], data["memory"][starts])
    assert not torch.allclose(garbage["memory"][~starts], data["memory"][~starts], atol=1e-3)
    with set_recurrent_mode(True), pytest.raises(ValueError, match="time dimension"):
        module(data[0, 0].select(*module.in_keys))


def test_one_hot_actions_partial_resets_and_custom_keys(tmaze30_checkpoint):
    """Envs of different lengths reset at different steps; one-hot actions; a renamed state."""
    module = SMTMemoryModule(tmaze30_checkpoint, state_key="smt_state", out_key="smt_memory")
    assert module.out_keys == ["smt_memory", ("next", "smt_state")]
    env = TransformedEnv(_tmazes(3, 5, one_hot=True), Compose(*module.make_env_transforms()))
    env.set_seed(1)
    rollout = env.rollout(24, lambda td: module(env.rand_action(td)), break_when_any_done=False)
    assert rollout["prev_action"].shape == (2, 24, 2)  # one-hot
    is_init = rollout["is_init"].squeeze(-1)
    assert is_init[0, [0, 5, 10]].all() and is_init[1, [0, 7, 14]].all()
    reference = PretrainedMemory.from_checkpoint(tmaze30_checkpoint)
    inputs = TensorDict(
        {
            "observation": rollout["observation"],
            "prev_action": rollout["prev_action"].argmax(-1),
            "prev_reward": rollout["prev_reward"].squeeze(-1),
            "step_count": rollout["step_count"].squeeze(-1),
            "is_init": is_init,
        },
        batch_size=[2, 24],
    )
    expected = reference.scan(inputs).flatten(-2)
    torch.testing.assert_close(rollout["smt_memory"], expected, atol=1e-5, rtol=0)


def test_loads_an_agent_checkpoint_and_refuses_others(tmaze30_checkpoint, tmp_path):
    model = load_smt_model(tmaze30_checkpoint)
    with torch.no_grad():
        model.cell.initial.add_(1.0)  # the agent's cell differs from the pretrained one
    SMTPPO(model, TrainConfig(), device="cpu").save(tmp_path / "agent")
    memory = PretrainedMemory.from_checkpoint(tmp_path / "agent")
    torch.testing.assert_close(memory.cell.initial, model.cell.initial)
    assert not any(p.requires_grad for p in memory.parameters())
    save_checkpoint(tmp_path / "gru", nn.Linear(2, 2), {"kind": "gru_ppo_agent"})
    with pytest.raises(CheckpointError, match="gru_ppo_agent"):
        SMTMemoryModule(tmp_path / "gru")
    with pytest.raises(CheckpointError, match="does not exist"):
        SMTMemoryModule(tmp_path / "missing")
    with pytest.raises(ConfigError, match="observation_key=None"):
        SMTMemoryModule(memory, observation_key=None)


# ---------------------------------------------------------------------- datasets <-> torchrl
def _collected(frames: int = 60) -> TensorDict:
    env = TransformedEnv(_tmazes(3, 5, one_hot=True), InitTracker())
    env.set_seed(0)
    collector = Collector(env, RandomPolicy(env.full_action_spec), frames_per_batch=frames)
    data = next(iter(collector))
    collector.shutdown()
    return data


def test_dataset_from_a_collected_tensordict_keeps_whole_episodes(tmp_path):
    data = _collected()  # (2, 30): rows of 5-step and 7-step episodes
    space = gym.make(TMAZE, length=3)
    ds = write_tensordict(
        data, tmp_path / "ds", space.observation_space, space.action_space, TMAZE, {"length": 3}
    )
    # 30 steps per row: six whole 5-step episodes, then four 7-step ones (+2 steps cut off)
    assert ds.episode_lengths.tolist() == [5] * 6 + [7] * 4
    first = ds.episode(0)
    torch.testing.assert_close(first["observation"], data["observation"][0, :5])
    assert first["action"].tolist() == data["action"][0, :5].argmax(-1).tolist()
    assert first["prev_action"][1:].tolist() == first["action"][:-1].tolist()
    assert first["next", "done"].tolist() == [False, False, False, False, True]
    assert first["next", "reward"].shape == (5,)
    # appending another task is refused; so is data without episode starts
    other = gym.make("CartPole-v1")
    with pytest.raises(Exception, match=r"observation|holds task"):
        write_tensordict(data, tmp_path / "ds", other.observation_space, other.action_space)
    with pytest.raises(DatasetError, match="InitTracker"):
        episodes_from_tensordict(
            data.exclude("is_init"), space.observation_space, space.action_space
        )
    with pytest.raises(DatasetError, match="no whole episode"):
        episodes_from_tensordict(data[:, :2], space.observation_space, space.action_space)


def test_dataset_exports_to_torchrl_and_round_trips(tmp_path):
    data = _collected()
    space = gym.make(TMAZE, length=3)
    ds = write_tensordict(data, tmp_path / "a", space.observation_space, space.action_space)
    exported = dataset_to_tensordict(ds)
    assert exported["next", "reward"].shape == (ds.num_steps, 1)
    assert exported["collector", "traj_ids"].tolist()[:8] == [0] * 5 + [1] * 3
    again = write_tensordict(exported, tmp_path / "b", space.observation_space, space.action_space)
    assert again.episode_lengths.tolist() == ds.episode_lengths.tolist()
    torch.testing.assert_close(again.to_tensordict(), ds.to_tensordict())
    buffer = dataset_to_replay_buffer(
        tmp_path / "a",
        sampler=SliceSampler(slice_len=4, traj_key=("collector", "traj_ids"), strict_length=True),
        batch_size=16,
    )
    assert len(buffer) == ds.num_steps
    sample = buffer.sample().reshape(4, 4)
    ids = sample["collector", "traj_ids"]
    assert (ids == ids[:, :1]).all()  # each slice stays inside one episode
    assert isinstance(TrajectoryDataset(tmp_path / "a"), TrajectoryDataset)


def test_smt_pretrains_on_a_torchrl_collected_dataset(tmp_path):
    from agents.pipeline import pretrain

    space = gym.make(TMAZE, length=3)
    data = torch.cat([_collected(200), _collected(200)], -1)  # two batches, concatenated on time
    write_tensordict(
        data, tmp_path / "ds", space.observation_space, space.action_space, TMAZE, {"length": 3}
    )
    summary = pretrain(
        "configs/tmaze.yaml",
        [
            "env.kwargs.length=3",
            f"data.path={tmp_path / 'ds'}",
            "smt.updates=5",
            "offline_dmt.updates=2",
            "smt.eval_every=1000",
            f"out={tmp_path / 'run'}",
        ],
        progress=False,
    )
    assert summary["dataset_episodes"] >= 60
    assert (tmp_path / "run/checkpoint/model.safetensors").is_file()
