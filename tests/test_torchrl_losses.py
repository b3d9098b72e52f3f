"""SMT and DMT as torchrl LossModules: the same losses as the project's trainer on the same data,
an SMT memory pretrained from a torchrl ReplayBuffer, and on-policy DMT on collected states."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import SliceSampler

from agents.config import TrainConfig
from agents.probes import TMazeProbe
from smt_rl.config import load_config
from smt_rl.data import TrajectoryDataset
from smt_rl.data.torchrl_io import dataset_to_replay_buffer, dataset_to_tensordict
from smt_rl.errors import DatasetError
from smt_rl.integrations import DMTLoss, SMTLoss
from smt_rl.integrations.torchrl_losses import training_batch
from smt_rl.smt.dmt import dmt_loss
from smt_rl.smt.losses import previous_memory, smt_loss
from smt_rl.smt.model import SMTModel


def _rows(dataset: TrajectoryDataset, episodes: list[int]) -> TensorDict:
    """The steps of whole episodes of one length, in torchrl's layout: batch (B, L)."""
    steps = dataset_to_tensordict(dataset)
    starts = dataset.episode_starts[episodes]
    length = int(dataset.episode_lengths[episodes[0]])
    return torch.stack([steps[int(s) : int(s) + length] for s in starts], 0)


def _model(dataset: TrajectoryDataset, **overrides) -> tuple[SMTModel, TrainConfig]:
    cfg = load_config(TrainConfig, "configs/tmaze.yaml", [f"{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    model = SMTModel(cfg.model, dataset.observation_space, dataset.action_space)
    model.decoder.reward_scale.fill_(dataset.reward_scale())
    return model, cfg


def test_training_batch_is_the_datasets_own_window_layout(tmaze10_dataset):
    dataset = TrajectoryDataset(tmaze10_dataset)
    episodes = [0, 3, 5]
    ours = dataset.windows(torch.tensor(episodes), torch.zeros(3, dtype=torch.int64), 12)
    theirs = training_batch(
        _rows(dataset, episodes), dataset.observation_space, dataset.action_space
    )
    for key in ours.exclude("episode").keys(True, True):
        torch.testing.assert_close(theirs.get(key), ours.get(key), msg=str(key))
    with pytest.raises(DatasetError, match="slices of batch"):
        training_batch(_rows(dataset, episodes)[0], dataset.observation_space, dataset.action_space)


def test_smt_loss_module_gives_the_trainers_loss_and_gradients(tmaze10_dataset):
    dataset = TrajectoryDataset(tmaze10_dataset)
    model, cfg = _model(dataset)
    episodes = list(range(8))
    batch = dataset.windows(torch.tensor(episodes), torch.zeros(8, dtype=torch.int64), 12)
    ours, _ = smt_loss(model, batch, cfg.smt, torch.Generator().manual_seed(1))
    ours_grad = torch.autograd.grad(ours, list(model.parameters()), allow_unused=True)
    module = SMTLoss(model, cfg.smt, torch.Generator().manual_seed(1))
    out = module(_rows(dataset, episodes))
    assert set(out.keys()) == {"loss_smt", "smt/total", "smt/pred", "smt/dyn", "smt/unif"} | {
        f"smt/pred_{k}" for k in ("obs", "reward", "terminated", "far")
    }
    theirs_grad = torch.autograd.grad(out["loss_smt"], list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(out["loss_smt"], ours)
    for a, b in zip(ours_grad, theirs_grad, strict=True):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(a, b)


def test_a_torchrl_loop_pretrains_a_memory_that_recalls_the_cue(tmaze10_dataset):
    """Pretraining in plain torchrl: a ReplayBuffer of the logged data, a SliceSampler of whole
    episodes, SMTLoss and an optimiser: the memory module alone then holds the cue."""
    dataset = TrajectoryDataset(tmaze10_dataset)
    model, cfg = _model(dataset)
    buffer = dataset_to_replay_buffer(
        dataset,
        sampler=SliceSampler(slice_len=12, traj_key=("collector", "traj_ids"), strict_length=True),
        batch_size=16 * 12,
    )
    loss_fn = SMTLoss(model, cfg.smt, torch.Generator().manual_seed(0))
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.smt.lr)
    torch.manual_seed(0)
    first = None
    for _ in range(300):
        loss = loss_fn(buffer.sample().reshape(16, 12))["loss_smt"]
        first = float(loss.detach()) if first is None else first
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.smt.grad_clip)
        optimiser.step()
    assert float(loss.detach()) < 0.5 * first
    held_out = dataset.windows(torch.arange(150, 200), torch.zeros(50, dtype=torch.int64), 12)
    assert TMazeProbe()(model, held_out)["probe/junction_reward_sign"] >= 0.95


def test_dmt_loss_module_learns_from_the_acted_on_states(tmaze10_dataset):
    dataset = TrajectoryDataset(tmaze10_dataset)
    model, _ = _model(dataset)
    for p in model.cell.parameters():  # as PretrainedMemory leaves them
        p.requires_grad_(False)
    module = DMTLoss(model, anchor_coef=1.0)
    assert all(p.requires_grad for p in model.cell.transition_parameters())
    episodes = list(range(8))
    rows = _rows(dataset, episodes)
    batch = dataset.windows(torch.tensor(episodes), torch.zeros(8, dtype=torch.int64), 12)
    with torch.no_grad():
        x = model.step_encoder(batch)
        student = previous_memory(model, model.cell.scan(x, batch["is_init"]), batch["is_init"])
        labels = model.labels(x, batch["is_init"])
    rows.set("recurrent_state", student)  # what SMTMemoryModule stores: m_{t-1}
    out = module(rows)
    expected = dmt_loss(
        model.cell,
        student,
        x,
        labels,
        valid=batch["mask"],
        teacher_prev=previous_memory(model, labels, batch["is_init"]),
        anchor_coef=1.0,
    )
    torch.testing.assert_close(out["loss_dmt"], expected)
    # a few updates of the cell alone bring the student's memory closer to the teacher's
    own = rows.exclude("recurrent_state")  # without the state: the cell's own scan
    optimiser = torch.optim.Adam(model.cell.transition_parameters(), lr=1e-3)
    before = module(own)
    for _ in range(30):
        loss = module(own)["loss_dmt"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = module(own)
    assert float(after["loss_dmt"].detach()) < 0.5 * float(before["loss_dmt"].detach())
    assert float(after["dmt/memory_mse"]) < float(before["dmt/memory_mse"])
