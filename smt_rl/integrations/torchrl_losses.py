"""SMT and DMT as torchrl ``LossModule``\\ s, for training an SMT memory inside a torchrl loop.

- :class:`SMTLoss`: the joint SMT loss (teacher, decoder and memory cell together;
  :func:`smt_rl.smt.losses.smt_loss`) on trajectory slices ``(B, T)``, e.g. sampled from a
  ``ReplayBuffer`` holding logged data (:func:`smt_rl.data.torchrl_io.dataset_to_replay_buffer`
  with ``SliceSampler(slice_len=T, traj_key=("collector", "traj_ids"))``), or from a Collector's
  batches once cut into one trajectory per row (``split_trajectories``).
- :class:`DMTLoss`: on-policy DMT (:func:`smt_rl.smt.dmt.dmt_loss`) on what a policy running
  :class:`smt_rl.integrations.torchrl.SMTMemoryModule` collected: the frozen teacher labels every
  visited step and the memory cell learns ``f(sg(m_{t-1}), x_t) -> m*_t`` from the state the
  policy acted on (the tensordict's ``recurrent_state``). Give it the *same* model whose cell the
  memory module runs, so the policy acts on the refined memory at the next collection.

Both return a TensorDict with one ``loss_*`` entry (what a torchrl trainer sums and
backpropagates) and their diagnostics under other names. They read torchrl's layout: the
observation under ``observation`` (or a Dict observation's members at the root), ``action``,
``("next", "reward" | "done" | "terminated" | "observation")``, ``is_init`` (``InitTracker``)
and ``step_count`` (``StepCounter``), and, when present, ``prev_action`` / ``prev_reward``
(:class:`smt_rl.integrations.torchrl.PreviousActionReward`) and a padding mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from smt_rl.data.torchrl_io import per_step, step_fields
from smt_rl.errors import DatasetError
from smt_rl.memory import zero_where
from smt_rl.smt.config import SMTConfig
from smt_rl.smt.dmt import dmt_loss, episode_segments
from smt_rl.smt.losses import previous_memory, smt_loss
from smt_rl.smt.model import SMTModel
from smt_rl.spaces import action_indices, torch_dtype

NestedKey = str | tuple[str, ...]


def training_batch(
    data: TensorDictBase,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    mask_key: NestedKey = ("collector", "mask"),
) -> TensorDict:
    """Rows ``(B, T)`` of torchrl-layout steps as the batch the project's losses read (the layout
    of :meth:`smt_rl.data.TrajectoryDataset.windows`): ``observation``, ``action``, ``is_init``,
    ``step_count``, ``prev_action``, ``prev_reward``, ``mask`` and the ``next`` entries.

    ``prev_action`` / ``prev_reward`` come from the tensordict when it has them, else from the
    step before in the same row (zeros at an episode start and at a row's first step). Steps
    where ``mask_key`` (when present) is False are padding.

    Raises:
        DatasetError: a missing key or a shape that does not fit the spaces (named).
    """
    if data.ndim != 2:
        raise DatasetError(
            f"expected trajectory slices of batch (B, T), got batch {tuple(data.batch_size)}; "
            "sample with SliceSampler and reshape to (num_slices, slice_len), or cut a "
            "Collector batch with torchrl.collectors.utils.split_trajectories."
        )
    fields = step_fields(data, observation_space, action_space)
    rows, steps = data.shape
    mask = (
        per_step(data.get(mask_key), 2).bool()
        if mask_key in data.keys(True)
        else torch.ones(rows, steps, dtype=torch.bool)
    )
    is_init = fields["starts"]
    if "step_count" in data:
        step_count = per_step(data.get("step_count"), 2).long()
    else:
        index = torch.arange(steps).expand(rows, -1)
        start = torch.cummax(torch.where(is_init, index, torch.zeros_like(index)), 1).values
        step_count = index - start
    action = fields["action"]
    first = is_init.clone()
    first[:, 0] = True  # nothing before a row's first step in the row
    if "prev_action" in data:
        prev_action = action_indices(action_space, data.get("prev_action"), 2)
        prev_action = prev_action.to(torch_dtype(action_space))
    else:
        prev_action = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)
    if "prev_reward" in data:
        prev_reward = per_step(data.get("prev_reward"), 2).float()
    else:
        reward = fields["reward"]
        prev_reward = torch.cat([torch.zeros_like(reward[:, :1]), reward[:, :-1]], 1)
    prev_action = zero_where(is_init if "prev_action" in data else first, prev_action)
    prev_reward = zero_where(is_init if "prev_reward" in data else first, prev_reward)
    flags = fields["flags"]
    batch = TensorDict(
        {
            "observation": fields["observation"],
            "action": action,
            "is_init": is_init,
            "step_count": step_count,
            "prev_action": prev_action,
            "prev_reward": prev_reward,
            "mask": mask,
            ("next", "observation"): fields["next_observation"],
            ("next", "reward"): fields["reward"],
            ("next", "terminated"): flags["terminated"],
            ("next", "truncated"): flags["truncated"],
            ("next", "done"): fields["ends"],
        },
        batch_size=[rows, steps],
    )
    padding = ~mask
    return batch.apply(lambda x: zero_where(padding, x))  # as TrajectoryDataset.windows leaves it


class SMTLoss(LossModule):
    """The joint SMT loss of an :class:`SMTModel` on trajectory slices ``(B, T)``.

    Out: ``loss_smt`` (minimise it over all of the model's parameters) and ``smt/*`` diagnostics
    (the predictive, dynamics and uniformity terms).

    Args:
        model: the SMT model (step encoder, teacher, decoder, memory cell).
        cfg: the loss weights (``smt.*`` of a config; defaults when None).
        generator: draws the far targets (seed it for a repeatable run).
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable keys (:meth:`set_keys`)."""

        mask: NestedKey = ("collector", "mask")

    default_keys = _AcceptedKeys

    def __init__(
        self,
        model: SMTModel,
        cfg: SMTConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg or SMTConfig()
        self.generator = generator

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # no value estimator

    @property
    def in_keys(self) -> list[NestedKey]:
        return ["observation", "action", "is_init", "step_count", ("next", "reward")]

    @property
    def out_keys(self) -> list[str]:
        return ["loss_smt", "smt/pred", "smt/dyn", "smt/unif"]

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        model = self.model
        batch = training_batch(
            tensordict, model.observation_space, model.action_space, self.tensor_keys.mask
        ).to(next(model.parameters()).device)
        loss, metrics = smt_loss(model, batch, self.cfg, self.generator)
        out = {"loss_smt": loss}
        out.update({f"smt/{k.split('/', 1)[1]}": torch.tensor(v) for k, v in metrics.items()})
        return TensorDict(out, batch_size=[])


class DMTLoss(LossModule):
    """On-policy DMT on collected rows ``(B, T)``: the memory cell learns the frozen teacher's
    labels from the states the policy acted on.

    In (besides the layout of :func:`training_batch`): ``state_key`` ``(B, T, K, d)``, the memory
    before each step (``m_{t-1}``, as :class:`SMTMemoryModule` stores it; the cell's initial state
    where ``is_init``). Without it the student is the cell scanned over each row from its initial
    state. Each step of a row is labelled by the teacher attending to its own episode only; an
    episode already running at a row's first step is labelled from that step on (give rows that
    start at episode starts, or long rows, for exact labels).

    Out: ``loss_dmt`` (minimise it over ``model.cell.transition_parameters()``, which this loss
    makes trainable) and ``dmt/memory_mse``, the drift of the acted-on memory from the labels.

    Args:
        model: the SMT model whose cell the policy's memory module runs.
        anchor_coef: weight of the anchor term ``|| f(m*_{t-1}, x_t) - m*_t ||^2``.
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable keys (:meth:`set_keys`)."""

        state: NestedKey = "recurrent_state"
        mask: NestedKey = ("collector", "mask")

    default_keys = _AcceptedKeys

    def __init__(self, model: SMTModel, anchor_coef: float = 1.0) -> None:
        super().__init__()
        self.model, self.anchor_coef = model, anchor_coef
        for p in model.cell.transition_parameters():
            p.requires_grad_(True)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # no value estimator

    @property
    def in_keys(self) -> list[NestedKey]:
        return ["observation", "action", "is_init", "step_count", self.tensor_keys.state]

    @property
    def out_keys(self) -> list[str]:
        return ["loss_dmt", "dmt/memory_mse"]

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        model = self.model
        device = next(model.parameters()).device
        batch = training_batch(
            tensordict, model.observation_space, model.action_space, self.tensor_keys.mask
        ).to(device)
        mask, is_init = batch["mask"], batch["is_init"]
        with torch.no_grad():
            x = model.step_encoder(batch)
            segments = episode_segments(is_init, mask)
            labels = model.labels(x, is_init, segments)
            teacher_prev = previous_memory(model, labels, is_init)
            state_key = self.tensor_keys.state
            if state_key in tensordict.keys(True):
                prev = tensordict.get(state_key).to(device)  # (B, T, K, d)
                restarted = model.cell.reset_where(prev.flatten(0, 1), is_init.flatten())
                prev = restarted.view_as(prev)
            else:
                prev = previous_memory(model, model.cell.scan(x, is_init), is_init)
        loss = dmt_loss(
            model.cell,
            prev,
            x,
            labels,
            valid=mask,
            teacher_prev=teacher_prev,
            anchor_coef=self.anchor_coef,
        )
        drift = ((prev - teacher_prev).pow(2).mean((-2, -1)) * mask).sum() / mask.sum()
        return TensorDict({"loss_dmt": loss, "dmt/memory_mse": drift.detach()}, batch_size=[])
