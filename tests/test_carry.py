"""Memory carried across teacher windows (model.carry): labels past model.context, no gradient
across a window, the cache of carried memories, and the mechanism learning at small scale."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

from agents.pipeline import collect, pretrain
from smt_rl.config import config_from_dict
from smt_rl.data import TrajectoryDataset
from smt_rl.errors import ConfigError
from smt_rl.smt.carry import CarriedMemoryCache, ChainedWindowSampler
from smt_rl.smt.config import ModelConfig, PretrainConfig
from smt_rl.smt.model import SMTModel

TMAZE = "smt_rl/PassiveTMaze-v0"


def _model(**overrides) -> SMTModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        embed_dim=16, memory_tokens=3, token_dim=8, teacher_width=16, context=5, carry=True
    )
    cfg = cfg.model_copy(update=overrides)
    return SMTModel(cfg, spaces.Box(-1, 1, (3,)), spaces.Discrete(2))


def test_labels_past_the_context_chain_window_after_window_without_gradient_across():
    model = _model()
    x = torch.randn(2, 13, 16, requires_grad=True)
    is_init = torch.zeros(2, 13, dtype=torch.bool)
    is_init[:, 0] = True
    labels = model.labels(x, is_init)  # windows [0, 5), [5, 10), [10, 13)
    # the same labels, one window at a time, each reading the last label before it
    first = model.labels(x[:, :5], is_init[:, :5])
    second = model.labels(x[:, 5:10], is_init[:, 5:10], carried=first[:, -1])
    third = model.labels(x[:, 10:], is_init[:, 10:], carried=second[:, -1])
    torch.testing.assert_close(labels, torch.cat([first, second, third], 1))
    # what the memory carries reaches later windows: change step 0, the last label moves ...
    changed = x.detach().clone()
    changed[:, 0] += 3.0
    assert not torch.allclose(model.labels(changed, is_init)[:, -1], labels[:, -1])
    # ... but no gradient crosses a window boundary (O(1) gradient path per window)
    (grad,) = torch.autograd.grad(labels[:, -1].sum(), x)
    assert grad[:, :10].abs().sum() == 0 and grad[:, 10:].abs().sum() > 0


def test_only_steps_of_an_episode_begun_before_the_window_read_the_carried_memory():
    model = _model()
    x = torch.randn(1, 5, 16)
    starts_here = torch.tensor([[True, False, False, False, False]])
    a = model.labels(x, starts_here, carried=torch.randn(1, 3, 8))
    torch.testing.assert_close(a, model.labels(x, starts_here, carried=torch.randn(1, 3, 8)))
    # several episodes in a row (segments): the one that continues reads it, the next does not
    segments = torch.tensor([[0, 0, 1, 1, 1]])
    continues = torch.zeros_like(starts_here)
    b = model.labels(x, continues, segments, carried=torch.randn(1, 3, 8))
    c = model.labels(x, continues, segments, carried=torch.randn(1, 3, 8))
    assert not torch.allclose(b[:, :2], c[:, :2])
    torch.testing.assert_close(b[:, 2:], c[:, 2:])


def test_window_tokens_continue_across_windows_as_the_student_holds_them():
    model = _model(memory_tokens=4, window_tokens=2)
    x = torch.randn(2, 12, 16)
    is_init = torch.zeros(2, 12, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[1, 7] = True  # a second episode in row 1, starting inside the second window
    labels = model.labels(x, is_init)
    student = model.cell.scan(x, is_init)
    torch.testing.assert_close(labels[:, :, :2], student[:, :, :2])


def test_the_cache_walks_each_episode_forward_from_its_start():
    lengths = torch.tensor([20, 7])
    cache = CarriedMemoryCache(lengths, stride=4, num_tokens=2, token_dim=3)
    assert cache.slots.tolist() == [5, 2] and cache.known.sum() == 2  # only the starts
    generator = torch.Generator().manual_seed(0)
    assert cache.sample_starts(torch.tensor([0, 0, 1]), generator).tolist() == [0, 0, 0]
    labels = torch.arange(2 * 8 * 2 * 3, dtype=torch.float32).view(2, 8, 2, 3)
    cache.store(torch.tensor([0, 1]), torch.tensor([0, 0]), labels)  # windows [0, 8) of both
    # episode 0: cuts at steps 4 and 8 (labels of steps 3 and 7); episode 1: only the cut at 4
    assert cache.known.tolist() == [True, True, True, False, False, True, True]
    torch.testing.assert_close(
        cache.carried(torch.tensor([0, 0, 1]), torch.tensor([4, 8, 4])),
        torch.stack([labels[0, 3], labels[0, 7], labels[1, 3]]),
    )
    starts = cache.sample_starts(torch.zeros(200, dtype=torch.int64), generator)
    assert set(starts.tolist()) == {0, 4, 8}  # known cuts only, each reachable
    restored = CarriedMemoryCache(lengths, stride=4, num_tokens=2, token_dim=3)
    restored.load_state_dict(cache.state_dict())
    assert torch.equal(restored.states, cache.states) and torch.equal(restored.known, cache.known)
    with pytest.raises(ValueError, match="does not fit"):
        CarriedMemoryCache(lengths, 2, 2, 3).load_state_dict(cache.state_dict())


def test_carry_refuses_settings_it_cannot_serve():
    with pytest.raises(ConfigError, match=r"model\.far_context"):
        config_from_dict(PretrainConfig, {"model": {"carry": True, "far_context": True}})
    with pytest.raises(ConfigError, match=r"smt\.carry_stride"):
        config_from_dict(
            PretrainConfig, {"model": {"carry": True}, "smt": {"seq_len": 16, "carry_stride": 32}}
        )


@pytest.fixture(scope="module")
def tmaze60(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tmaze60"
    collect(TMAZE, episodes=400, out=path, num_envs=8, env_kwargs={"length": 60}, progress=False)
    return path


def test_far_targets_of_chained_windows_reach_the_episode_end(tmaze60):
    dataset = TrajectoryDataset(tmaze60)
    cache = CarriedMemoryCache(dataset.episode_lengths, 8, 4, 16)
    cache.known[:] = True
    generator = torch.Generator().manual_seed(0)
    sampler = ChainedWindowSampler(dataset, torch.arange(64), 16, cache, 1.0, generator)
    batch = sampler.sample(64)
    assert batch.shape == (64, 16) and (batch["window_start"][:, 0] > 0).any()
    step = batch["window_start"] + torch.arange(16)
    last = dataset.episode_lengths[batch["episode"]] - 1
    real = batch["mask"]
    assert torch.equal(batch["far_valid"], real)
    assert torch.equal((step + batch["far_offset"])[real], last[real])  # far_last_prob=1
    assert (batch["far_reward"][real].abs() == 1).all()  # the junction reward, past the window


def test_streaming_rows_walk_their_episode_window_after_window_with_fresh_carried_memory(tmaze60):
    dataset = TrajectoryDataset(tmaze60)
    cache = CarriedMemoryCache(dataset.episode_lengths, 8, 4, 16)
    generator = torch.Generator().manual_seed(0)
    sampler = ChainedWindowSampler(dataset, torch.arange(64), 16, cache, 0.5, generator, 0.0, 1.0)
    first = sampler.sample(8)
    assert (first["window_start"][:, 0] == 0).all()  # nothing known yet but the starts
    labels = torch.randn(8, 16, 4, 16)
    sampler.store(first, labels)
    second = sampler.sample(8)  # every row goes on where its window ended (a cut at step 16)
    assert torch.equal(second["episode"][:, 0], first["episode"][:, 0])
    assert (second["window_start"][:, 0] == 16).all()
    episodes = first["episode"][:, 0].tolist()
    writer = [max(j for j, e in enumerate(episodes) if e == episode) for episode in episodes]
    torch.testing.assert_close(sampler.carried(second), labels[writer, 15])  # one update old
    for _ in range(3):  # 16, 32, 48: the episode (62 steps) ends inside the window at 48 ...
        sampler.store(second, torch.randn(8, 16, 4, 16))
        second = sampler.sample(8)
    assert (second["window_start"][:, 0] == 0).all()  # ... so each row starts a new one


@pytest.mark.slow
@pytest.mark.parametrize("carry", [True, False])
def test_the_memory_carries_the_cue_across_teacher_windows(tmp_path, tmaze60, carry):
    """Length 60 (62 steps) with a 16-step teacher window: the cue at step 0 must cross three
    window boundaries to reach the junction. With model.carry the memory module alone predicts
    the junction reward's sign; without it, no label can carry the cue and it stays at chance."""
    overrides = {
        "env.kwargs.length": 60,
        "data.path": str(tmaze60),
        "out": str(tmp_path / "run"),
        "model.context": 16,
        "model.carry": carry,
        "smt.seq_len": 16,
        "smt.carry_stride": 8,
        "smt.updates": 800,
        "smt.eval_every": 10_000,
        "offline_dmt.updates": 100,
        "data.val_max_episodes": 64,
    }
    summary = pretrain(
        "configs/tmaze.yaml", [f"{k}={v}" for k, v in overrides.items()], progress=False
    )
    if carry:
        assert summary["probe/junction_reward_sign"] >= 0.95
        assert summary["loss/pred_far"] < 0.1
    else:
        assert summary["probe/junction_reward_sign"] <= 0.75
