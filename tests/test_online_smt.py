"""SMT during RL (``online_smt``): the agent's episodes on disk, the mixed batches, and an agent
that learns with no logged data at all."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from agents.pipeline import pretrain, train
from smt_rl.data import TrajectoryDataset, collect_episodes, env_description
from smt_rl.data.experience import ExperienceStore
from smt_rl.errors import ConfigError
from smt_rl.smt.online import MixedSampler, sample_windows

OBS = spaces.Box(-1.0, 1.0, (2,), np.float32)
ACT = spaces.Discrete(3)
TASK = env_description("test/Online", {}, None)


def _episode(length: int, tag: float) -> TensorDict:
    """One finished episode ``(L,)`` as the agent's rollouts give it; ``observation`` = ``tag``."""
    t = torch.arange(length)
    last = t == length - 1
    return TensorDict(
        {
            "observation": torch.full((length, 2), tag),
            "prev_action": (t > 0).long(),
            "prev_reward": torch.zeros(length),
            "is_init": t == 0,
            "step_count": t,
            "action": torch.ones(length, dtype=torch.int64),
            "next": {
                "observation": torch.full((length, 2), tag),
                "reward": last.float() * tag,
                "terminated": last,
                "truncated": torch.zeros(length, dtype=torch.bool),
                "done": last,
            },
            "mask": torch.ones(length, dtype=torch.bool),
        },
        batch_size=[length],
    )


def _store(folder, capacity: int, evict_on_save: bool = False) -> ExperienceStore:
    return ExperienceStore(folder, TASK, OBS, ACT, capacity, evict_on_save=evict_on_save)


def test_the_store_keeps_the_newest_episodes_on_disk_as_a_dataset(tmp_path):
    store = _store(tmp_path / "exp", capacity=5)
    for rollout in range(4):  # chunks of 3 episodes tagged by rollout
        store.add([_episode(4 + i, tag=0.1 * rollout) for i in range(3)])
    assert len(store) == 5  # the newest five: two of rollout 2's, all of rollout 3's
    tags = [float(e["observation"][0, 0]) for e in store.episodes]
    assert tags == pytest.approx([0.2, 0.2, 0.3, 0.3, 0.3])
    dataset = TrajectoryDataset(tmp_path / "exp")  # a valid dataset: chunks 2-3 (0-1 evicted)
    assert dataset.num_episodes == 6
    assert [c["name"] for c in dataset.meta["chunks"]] == ["chunk-000002", "chunk-000003"]
    assert sorted(p.name for p in (tmp_path / "exp" / "chunks").iterdir()) == [
        "chunk-000002",
        "chunk-000003",
    ]
    assert store.reward_scale() == pytest.approx(0.3)
    store.add([_episode(5, tag=0.5)])  # the next chunk's name follows the last one's
    assert TrajectoryDataset(tmp_path / "exp").meta["chunks"][-1]["name"] == "chunk-000004"


def test_a_resumed_store_has_the_window_and_the_chunks_of_its_state(tmp_path):
    store = _store(tmp_path / "exp", capacity=4, evict_on_save=True)
    for rollout in range(3):
        store.add([_episode(3, tag=0.1 * rollout), _episode(5, tag=0.1 * rollout + 0.05)])
    assert len(TrajectoryDataset(tmp_path / "exp").meta["chunks"]) == 3  # nothing deleted yet
    state = store.state_dict()  # deletes chunk 0, whose episodes left the window
    assert [c["name"] for c in store.writer.meta["chunks"]] == ["chunk-000001", "chunk-000002"]
    window = [e.clone() for e in store.episodes]
    store.add([_episode(6, tag=0.9)])  # written after the state: forgotten on resume
    again = _store(tmp_path / "exp", capacity=4, evict_on_save=True)
    again.load_state_dict(state)
    assert [c["name"] for c in again.writer.meta["chunks"]] == ["chunk-000001", "chunk-000002"]
    assert len(again.episodes) == len(window) == 4
    for restored, kept in zip(again.episodes, window, strict=True):
        for key in ("observation", "action", "is_init", "step_count", "prev_action", "mask"):
            assert torch.equal(restored[key], kept[key]), key
        assert torch.equal(restored["next", "reward"], kept["next", "reward"])


def test_windows_and_mixed_batches(tmp_path):
    episodes = [_episode(n, tag=n / 10) for n in (2, 7, 9)]
    windows = sample_windows(episodes, 16, seq_len=5, generator=torch.Generator().manual_seed(0))
    assert windows.batch_size == torch.Size([16, 5])
    lengths = windows["mask"].sum(1)
    assert set(lengths.tolist()) <= {2, 5}  # the 2-step episode padded, the others cut
    short = lengths == 2
    assert not windows["mask"][short, 2:].any()
    # a batch of 10 with 30% logged: the logged episodes are the random policy's (tag-free)
    data = collect_episodes(
        _RandomEnv, env=TASK, episodes=20, out=tmp_path / "logged", num_envs=2, progress=False
    )
    assert data.episodes == 20
    store = _store(tmp_path / "exp", capacity=10)
    store.add([_episode(6, tag=0.5) for _ in range(4)])
    sampler = MixedSampler(
        TrajectoryDataset(tmp_path / "logged"), store, 0.3, 8, torch.Generator().manual_seed(1)
    )
    batch = sampler.sample(10)
    assert batch.batch_size[0] == 10
    from_experience = (batch["observation"][:, 0] == 0.5).all(-1)
    assert int(from_experience.sum()) == 7
    empty = MixedSampler(None, _store(tmp_path / "none", 3), 0.3, 8, torch.Generator())
    empty.experience.add([_episode(3, tag=0.2)])
    assert (empty.sample(4)["observation"][:, 0] == 0.2).all()  # no logged data: all experience


class _RandomEnv:
    """Six-step episodes of uniform observations in OBS."""

    def __new__(cls):
        import gymnasium as gym

        class Env(gym.Env):
            observation_space, action_space = OBS, ACT

            def reset(self, seed=None, options=None):
                super().reset(seed=seed)
                self.t = 0
                return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

            def step(self, action):
                self.t += 1
                obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
                return obs, 0.0, self.t >= 6, False, {}

        return Env()


# ---------------------------------------------------------------------- no logged data
NO_DATA = [
    "env.kwargs.length=5",
    "data.episodes=0",
    "online_smt.enabled=true",
    "online_smt.updates_per_step=0.02",
    "ppo.n_steps=64",
    "total_timesteps=20480",
    "eval.episodes=100",
]


def test_an_agent_with_no_logged_data_learns_the_tmaze_from_its_own_experience(tmp_path):
    """No collection, no pretraining: the first rollouts feed the first SMT updates."""
    out = tmp_path / "run"
    summary = train("configs/tmaze.yaml", [*NO_DATA, f"out={out}"], progress=False)
    assert summary["eval/success_rate"] >= 0.9
    assert "pretrain_env_steps" not in summary
    assert not (out / "data").exists() and not (out / "pretrain").exists()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [x for x in lines if x["phase"] == "rl"]
    learned = [x["online_smt/pred_reward"] for x in rl if "online_smt/pred_reward" in x]
    assert learned[0] > 0.1 and learned[-1] < 0.02  # the teacher links cue and reward online
    assert rl[0]["rollout/success_rate"] < 0.7 <= 0.9 <= rl[-1]["rollout/success_rate"]
    experience = TrajectoryDataset(out / "experience")
    assert 1000 <= experience.num_episodes <= summary["env_steps"] // 7


def test_no_logged_data_without_online_smt_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"data\.episodes=0 .*online_smt\.enabled=true"):
        train("configs/tmaze.yaml", ["data.episodes=0", f"out={out}"], progress=False)
    with pytest.raises(ConfigError, match=r"data\.episodes=0 .*no data"):
        pretrain("configs/tmaze.yaml", ["data.episodes=0", f"out={out}"], progress=False)
    assert not out.exists()
