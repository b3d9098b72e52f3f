"""The online teacher (``online_teacher.enabled: true``): episode layout and online learning."""

from __future__ import annotations

import json

import torch
from tensordict import TensorDict

from agents.online_teacher import EpisodeBuffer, finished_episode
from agents.pipeline import train
from smt_rl.smt.targets import predictive_targets


def _inputs(length: int) -> list[TensorDict]:
    return [
        TensorDict(
            {
                "observation": torch.full((3,), float(t)),
                "prev_action": torch.tensor(max(t - 1, 0) * 10),
                "prev_reward": torch.tensor(float(t)),
                "is_init": torch.tensor(t == 0),
                "step_count": torch.tensor(t),
            },
            batch_size=[],
        )
        for t in range(length)
    ]


def test_finished_episode_has_the_dataset_layout():
    episode = finished_episode(
        _inputs(4),
        [torch.tensor(10 * t) for t in range(4)],
        [0.0, 0.0, 0.0, 1.0],
        terminated=True,
        final_observation=torch.full((3,), 4.0),
    )
    assert episode.batch_size == torch.Size([4])
    assert episode["next", "observation"][:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert episode["action"].tolist() == [0, 10, 20, 30]
    assert episode["action"].dtype == episode["prev_action"].dtype
    assert episode["next", "reward"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert episode["next", "terminated"].tolist() == [False, False, False, True]
    assert episode["mask"].all()
    truncated = finished_episode(
        _inputs(2), [torch.tensor(0)] * 2, [0.0, 0.0], False, torch.zeros(3)
    )
    assert not truncated["next", "terminated"].any()


def test_episode_buffer_pads_with_masked_steps_and_forgets_the_oldest():
    buffer = EpisodeBuffer(capacity=2)
    for length in (2, 5, 3):
        buffer.add(
            finished_episode(
                _inputs(length),
                [torch.tensor(0)] * length,
                [0.0] * length,
                True,
                torch.zeros(3),
            )
        )
    assert len(buffer) == 2
    assert sorted(e.shape[0] for e in buffer.episodes) == [3, 5]  # the length-2 one is gone
    batch = buffer.sample(8, max_length=4, generator=torch.Generator().manual_seed(0))
    assert batch.batch_size == torch.Size([8, 4])
    lengths = batch["mask"].sum(1)
    assert set(lengths.tolist()) <= {3, 4}
    targets = predictive_targets(batch, horizon=2)
    # a target beyond an episode's end is never valid
    assert not (targets["future_valid"] & ~batch["mask"][..., None]).any()


def _teacher_weights(run_dir):
    from agents.smt_ppo import SMTPPO

    agent = SMTPPO.load(run_dir / "checkpoint")
    return {k: v.clone() for k, v in agent.model.teacher.state_dict().items()}


def test_continued_teacher_learns_online_and_frozen_teacher_does_not(tmp_path):
    """No SMT pretraining at all: the teacher learns only from the agent's own episodes."""
    common = [
        "env.kwargs.length=5",
        "data.episodes=32",
        "smt.updates=0",
        "offline_dmt.updates=0",
        "smt.eval_every=1000",
        "total_timesteps=6144",
        "ppo.n_steps=64",
        "eval.episodes=10",
    ]
    continued = tmp_path / "continued"
    train(
        "configs/tmaze.yaml",
        [
            *common,
            f"out={continued}",
            "online_teacher.enabled=true",
            "online_teacher.lr=0.003",
            "online_teacher.updates_per_rollout=8",
        ],
        progress=False,
    )
    rows = [json.loads(x) for x in (continued / "metrics.jsonl").read_text().splitlines()]
    losses = [r["teacher/pred_loss"] for r in rows if "teacher/pred_loss" in r]
    assert len(losses) >= 10
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.6 * first, (first, last)

    frozen = tmp_path / "frozen"
    train("configs/tmaze.yaml", [*common, f"out={frozen}"], progress=False)
    rows = [json.loads(x) for x in (frozen / "metrics.jsonl").read_text().splitlines()]
    assert not any("teacher/pred_loss" in r for r in rows)
    from smt_rl.smt.model import load_smt_model

    pretrained = load_smt_model(frozen / "pretrain" / "checkpoint").teacher.state_dict()
    after = _teacher_weights(frozen)
    assert all(torch.equal(pretrained[k], after[k]) for k in after)
    changed = _teacher_weights(continued)
    start = load_smt_model(continued / "pretrain" / "checkpoint").teacher.state_dict()
    assert any(not torch.equal(start[k], changed[k]) for k in changed)
