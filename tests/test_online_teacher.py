"""The online teacher (``online_teacher.enabled: true``): episode layout and online learning."""

from __future__ import annotations

import json

import torch
from tensordict import TensorDict

from agents.pipeline import train
from smt_rl.data.episodes import EpisodeAssembler
from smt_rl.smt.dmt import EpisodeBuffer
from smt_rl.smt.targets import predictive_targets


def _rollout(t0: int, lengths: list[int], steps: int, terminal: bool = True) -> TensorDict:
    """Steps ``t0 .. t0 + steps - 1`` ``(T, N)`` of N environments whose episodes all last
    ``lengths[i]`` steps, in the dataset layout; observation and action encode the episode step."""
    columns = []
    for length in lengths:
        t = torch.arange(t0, t0 + steps) % length  # step within the episode
        last = t == length - 1
        columns.append(
            TensorDict(
                {
                    "observation": t[:, None].float().expand(-1, 3),
                    "prev_action": (t - 1).clamp_min(0) * 10,
                    "prev_reward": t.float(),
                    "is_init": t == 0,
                    "step_count": t,
                    "action": t * 10,
                    "next": {
                        "observation": (t + 1)[:, None].float().expand(-1, 3),
                        "reward": last.float(),
                        "terminated": last & terminal,
                        "truncated": last & (not terminal),
                        "done": last,
                    },
                },
                batch_size=[steps],
            )
        )
    return torch.stack(columns, 1)


def test_episodes_are_cut_whole_across_rollouts_in_the_dataset_layout():
    assembler = EpisodeAssembler(num_envs=2)
    first = assembler.add(_rollout(0, [4, 3], steps=2))
    assert first == []
    episodes = assembler.add(
        _rollout(2, [4, 3], steps=4)
    )  # env 1 ends at 2, env 0 at 3, env 1 at 5
    assert [e.shape[0] for e in episodes] == [3, 4, 3]
    episode = episodes[1]  # env 0's first episode, begun in the first rollout
    assert episode.batch_size == torch.Size([4])
    assert episode["next", "observation"][:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert episode["action"].tolist() == [0, 10, 20, 30]
    assert episode["action"].dtype == episode["prev_action"].dtype
    assert episode["next", "reward"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert episode["next", "terminated"].tolist() == [False, False, False, True]
    assert episode["is_init"].tolist() == [True, False, False, False]
    assert episode["mask"].all()
    truncated = EpisodeAssembler(1).add(_rollout(0, [2], steps=2, terminal=False))[0]
    assert not truncated["next", "terminated"].any()
    # what a resume state keeps: the unfinished steps, back as they were
    again = EpisodeAssembler(num_envs=2)
    again.load_state_dict(assembler.state_dict())
    rest = _rollout(6, [4, 3], steps=2)
    assert [e.shape[0] for e in again.add(rest)] == [e.shape[0] for e in assembler.add(rest)]


def test_episode_buffer_pads_with_masked_steps_and_forgets_the_oldest():
    buffer = EpisodeBuffer(capacity=2)
    for length in (2, 5, 3):
        for episode in EpisodeAssembler(1).add(_rollout(0, [length], steps=length)):
            buffer.add(episode)
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
