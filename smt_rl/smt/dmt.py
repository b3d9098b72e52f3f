"""DAgger Memory Training (DMT), offline and on-policy, in one place.

The memory cell ``f`` learns to stay on the teacher's trajectory from the states it reaches on its
own: ``|| f(sg(m^s_{t-1}), x_t) - m*_t ||^2``, where ``m^s_{t-1}`` is the student's own (detached)
memory and ``m*_t`` the teacher's label of the same history. Nothing is unrolled with gradients.

- :func:`dmt_loss`: that loss, with an optional *anchor* term from the teacher's own previous
  label (SMT's dynamics loss), which keeps ``f`` on the teacher's manifold.
- :func:`offline_dmt_loss`: DMT on logged episodes (the student scanned over them, teacher frozen).
- On-policy DMT during RL: :class:`VisitedHistories` keeps, per environment, the steps of its
  current episode that the teacher's window can see, so that :func:`teacher_labels` labels every
  step of a rollout in one pass; :class:`DMTReplay` aggregates the labelled states of recent
  rollouts (DAgger); :class:`OnPolicyDMT` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase

from smt_rl.errors import NonFiniteError
from smt_rl.models.cells import MemoryCell
from smt_rl.smt.carry import ChainedWindowSampler
from smt_rl.smt.evaluate import decision_metrics
from smt_rl.smt.losses import masked_mean, previous_memory
from smt_rl.smt.model import SMTModel
from smt_rl.spaces import torch_dtype


def dmt_loss(
    cell: MemoryCell,
    prev: torch.Tensor,
    x: torch.Tensor,
    label: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    teacher_prev: torch.Tensor | None = None,
    anchor_coef: float = 0.0,
    match: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    match_coef: float = 0.0,
) -> torch.Tensor:
    """``|| f(prev, x) - label ||^2`` (+ ``anchor_coef * || f(teacher_prev, x) - label ||^2``
    + ``match_coef * match(f(prev, x), label)``).

    One application of ``f`` per position, never a chain.

    Args:
        cell: the memory cell ``f``.
        prev: ``(*B, K, d)`` the student's own ``m_{t-1}`` (detached by the caller).
        x: ``(*B, D)`` step inputs.
        label: ``(*B, K, d)`` the teacher's ``m*_t``.
        valid: ``(*B,)`` bool; when given the loss is the mean over valid positions of the
            per-position mean squared error, else the mean over every element.
        teacher_prev: ``(*B, K, d)`` the teacher's ``m*_{t-1}``, for the anchor term.
        anchor_coef: weight of the anchor term (0: none).
        match: per-position distance ``(*B)`` between what two memories ``(*B, K, d)`` make the
            decoder predict (:func:`prediction_match`), for the match term.
        match_coef: weight of the match term (0: none).
    """

    def reduce(error: torch.Tensor) -> torch.Tensor:  # (*B) per position -> scalar
        return error.mean() if valid is None else masked_mean(error, valid)

    def step(start: torch.Tensor) -> torch.Tensor:
        lead = start.shape[:-2]
        pred = cell.step(start.reshape(-1, *start.shape[-2:]), x.reshape(-1, x.shape[-1]))
        return pred.view(*lead, *pred.shape[1:])

    pred = step(prev)
    sq = (pred - label).pow(2)
    loss = sq.mean() if valid is None else masked_mean(sq.mean((-2, -1)), valid)
    if anchor_coef > 0 and teacher_prev is not None:
        loss = loss + anchor_coef * reduce((step(teacher_prev) - label).pow(2).mean((-2, -1)))
    if match_coef > 0 and match is not None:
        loss = loss + match_coef * reduce(match(pred, label))
    return loss


def prediction_match(model: SMTModel) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The distance ``(*B)`` between the decoder's features from a student memory and from the
    teacher's label ``(*B, K, d)`` (the teacher side detached), for every action of a Discrete
    action space repeated over the horizon, else for no action (zeros): what the memory makes the
    decoder predict, which is what the agent acts on, rather than the memory's coordinates."""
    decoder, horizon, space = model.decoder, model.cfg.horizon, model.action_space
    if isinstance(space, spaces.Discrete):
        actions = [int(space.start) + a for a in range(int(space.n))]
    else:
        actions = [None]

    def match(student: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        total = student.new_zeros(student.shape[:-2])
        for action in actions:
            shape = (*student.shape[:-2], horizon, *space.shape)
            future = (
                torch.full(shape, action, device=student.device)
                if action is not None
                else torch.zeros(shape, dtype=torch_dtype(space), device=student.device)
            )
            with torch.no_grad():
                target = decoder.features(label, future)
            total = total + (decoder.features(student, future) - target).pow(2).mean((-2, -1))
        return total / len(actions)

    return match


def offline_dmt_loss(
    model: SMTModel,
    batch: TensorDictBase,
    match_coef: float = 0.0,
    chain: ChainedWindowSampler | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DMT on logged windows ``(B, T)`` with the teacher frozen; returns (loss, metrics).

    The student is the cell scanned alone (no grad) over each window from its initial state, or,
    with ``chain`` (``model.carry``), from the memory carried into the window; only the cell
    learns. Without ``chain``, rows whose window does not start at an episode start are left out
    (the student would lack their history).
    """
    mask, is_init = batch["mask"], batch["is_init"]
    carried = None if chain is None else chain.carried(batch).to(mask.device)
    with torch.no_grad():
        x = model.step_encoder(batch)
        labels = model.labels(x, is_init, carried=carried)
        student = model.cell.scan(x, is_init, memory=carried)
    prev = previous_memory(model, student, is_init, carried)  # the initial state keeps its grad
    loss = dmt_loss(
        model.cell,
        prev,
        x,
        labels,
        valid=mask if carried is not None else mask & is_init[:, :1],
        match=prediction_match(model) if match_coef > 0 else None,
        match_coef=match_coef,
    )
    return loss, {"dmt/loss": float(loss.detach())}


def _check_finite(loss: torch.Tensor, what: str, lr_key: str) -> None:
    """Stop with a NonFiniteError before a NaN or infinite loss reaches the weights."""
    if not torch.isfinite(loss):
        raise NonFiniteError(
            f"{what}: the loss is {float(loss.detach()):.4g}; the run stops before the weights "
            f"turn to NaN. Lower {lr_key} or look for extreme values in the data."
        )


# --------------------------------------------------------------------------------------------
# On-policy DMT


def episode_segments(is_init: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Segment ids ``(N, S)`` of rows that may hold several episodes: a new id at every episode
    start, at every invalid (padding) step, and at the first valid step after padding."""
    after_padding = valid & ~torch.cat([valid.new_zeros(valid.shape[0], 1), valid[:, :-1]], 1)
    return torch.cumsum((is_init.bool() | ~valid | after_padding).long(), 1)


class VisitedHistories:
    """Per environment, the step inputs of its current episode so far, cut to the last ``keep``
    steps: all that the teacher's window needs to label the next rollout's steps exactly as it
    would label them on the whole episode.

    With a teacher that reads carried memories (``model.carry``), also the teacher's label of the
    step before each kept tail (:meth:`remember`), carried into the next labelling: so labels
    chain across rollouts and hold what the episode showed before the teacher's window.

    Args:
        keep: steps kept per environment (the teacher's context minus one, at least one so that
            the label before a rollout's first step is known).
    """

    def __init__(self, keep: int) -> None:
        self.keep = max(1, keep)
        self.tail: TensorDict | None = None  # (N, P) step inputs, padding first
        self.valid: torch.Tensor | None = None  # (N, P) bool, False on padding
        self.carried: torch.Tensor | None = None  # (N, K, d): the label before each tail
        self._tail_start: torch.Tensor | None = None  # (N,) column of the tail in the last sequence

    def extend(
        self, steps: TensorDictBase
    ) -> tuple[TensorDict, torch.Tensor, int, torch.Tensor | None]:
        """Append a rollout's step inputs ``(T, N)``.

        Returns:
            ``(sequence (N, P + T), segments (N, P + T), P, carried)``: each environment's kept
            steps followed by the rollout's, their segment ids (:func:`episode_segments`), the
            column where the rollout's steps begin, and the memory carried into the first column
            (``(N, K, d)``, or None before anything was remembered).
        """
        steps = steps.permute(1, 0).contiguous()  # (N, T)
        n, t = steps.shape
        carried = self.carried
        if self.tail is None:
            sequence, valid, offset = steps, torch.ones(n, t, dtype=torch.bool), 0
        else:
            sequence = torch.cat([self.tail, steps], 1)
            valid = torch.cat([self.valid, torch.ones(n, t, dtype=torch.bool)], 1)
            offset = self.tail.shape[1]
        valid = valid.to(steps.device)
        segments = episode_segments(sequence["is_init"], valid)
        self._keep_current(sequence, segments, valid)
        return sequence, segments, offset, carried

    def remember(self, labels: torch.Tensor) -> None:
        """Keep the teacher's label ``(N, S, K, d)`` of the last extended sequence at the step
        before each environment's new tail (what the next labelling carries in)."""
        assert self._tail_start is not None, "remember() follows extend()"
        rows = torch.arange(labels.shape[0], device=labels.device)
        before = (self._tail_start - 1).clamp_min(0).to(labels.device)
        self.carried = labels[rows, before].detach().clone()

    def _keep_current(
        self, sequence: TensorDict, segments: torch.Tensor, valid: torch.Tensor
    ) -> None:
        """Keep the last ``keep`` steps of each environment's current (last) episode."""
        current = (segments == segments[:, -1:]) & valid  # contiguous at the end of each row
        kept = current.sum(1).clamp_max(self.keep)  # (N,)
        width = int(kept.max())
        columns = torch.arange(width, device=valid.device)
        self.tail = sequence[:, sequence.shape[1] - width :].clone()
        self.valid = columns[None, :] >= (width - kept)[:, None]
        self._tail_start = sequence.shape[1] - kept

    def state_dict(self) -> dict[str, Any]:
        if self.tail is None:
            return {"tail": None, "batch_size": None, "valid": None}
        return {
            "tail": self.tail.cpu().to_dict(),
            "batch_size": list(self.tail.batch_size),
            "valid": self.valid.cpu(),
            "carried": None if self.carried is None else self.carried.cpu(),
            "tail_start": None if self._tail_start is None else self._tail_start.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        if state["tail"] is None:
            self.tail = self.valid = self.carried = self._tail_start = None
            return
        self.tail = TensorDict(state["tail"], batch_size=state["batch_size"]).to(device)
        self.valid = state["valid"].to(device)
        carried, start = state.get("carried"), state.get("tail_start")
        self.carried = None if carried is None else carried.to(device)
        self._tail_start = None if start is None else start.to(device)


@torch.no_grad()
def teacher_labels(
    model: SMTModel,
    sequence: TensorDictBase,
    segments: torch.Tensor,
    offset: int,
    carried: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's ``(m*_t, m*_{t-1})`` for the steps of rows ``(N, S)`` from column ``offset``.

    Each step attends only to its own episode (``segments``); ``m*_{-1}`` at an episode start is
    the cell's initial state. ``carried (N, K, d)``: the memory before the first column, read by
    a teacher built with ``model.carry`` (None: the first column starts an episode or is taken as
    one).

    Returns:
        Two ``(S - offset, N, K, d)`` tensors, time first (the rollout's layout), and the labels
        of every column ``(N, S, K, d)`` (:meth:`VisitedHistories.remember` keeps what it needs).
    """
    x = model.step_encoder(sequence)
    if not model.cfg.carry:
        carried = None
    elif carried is None:
        carried = model.cell.initial_state(x.shape[0]).to(x.dtype)
    labels = model.labels(x, sequence["is_init"], segments, carried)  # (N, S, K, d)
    previous = previous_memory(model, labels, sequence["is_init"].bool(), carried)
    return (
        labels[:, offset:].transpose(0, 1).contiguous(),
        previous[:, offset:].transpose(0, 1).contiguous(),
        labels,
    )


class DMTReplay:
    """Ring buffer of the last ``capacity`` labelled on-policy steps (DAgger aggregation).

    Rows: ``prev`` (the student's ``m^s_{t-1}``, ``(K, d)``), ``x`` (``(D,)``), ``label``
    (``m*_t``) and ``teacher_prev`` (``m*_{t-1}``). Sampling draws from the caller's generator,
    so a run repeats exactly and its state can be saved without pickle.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data: TensorDict | None = None  # (capacity,) once the first rows arrive
        self.next = 0  # row the next added step goes to
        self.count = 0  # rows filled so far

    def add(self, rows: TensorDictBase) -> None:
        """Append ``rows`` ``(M,)``, overwriting the oldest when full."""
        if self.data is None:
            self.data = rows[:1].expand(self.capacity).clone().zero_()
        index = (self.next + torch.arange(rows.shape[0])) % self.capacity
        self.data[index.to(self.data.device)] = rows
        self.next = int((self.next + rows.shape[0]) % self.capacity)
        self.count = min(self.capacity, self.count + rows.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> TensorDict:
        """``n`` rows drawn uniformly with replacement."""
        index = torch.randint(self.count, (n,), generator=generator)
        return self.data[index.to(self.data.device)]

    def state_dict(self) -> dict[str, Any]:
        data = None if self.data is None else self.data.cpu().to_dict()
        return {"data": data, "next": self.next, "count": self.count}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        data = state["data"]
        self.data = None if data is None else TensorDict(data, [self.capacity]).to(device)
        self.next, self.count = int(state["next"]), int(state["count"])


class OnPolicyDMT:
    """After each rollout: the teacher labels every visited step, the labelled steps join the
    replay, and the cell takes ``updates_per_rollout`` steps of :func:`dmt_loss` on replay samples.

    Args:
        model: the SMT model; only its cell is trained here.
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adamw"``.
        lr: learning rate.
        updates_per_rollout: cell updates after each rollout.
        batch_size: replay rows per update.
        replay_size: labelled steps kept.
        anchor_coef: weight of the anchor term of :func:`dmt_loss`.
        match_coef: weight of its match term (:func:`prediction_match`).
    """

    def __init__(
        self,
        model: SMTModel,
        *,
        optimizer: str,
        lr: float,
        updates_per_rollout: int,
        batch_size: int,
        replay_size: int,
        anchor_coef: float,
        match_coef: float = 0.0,
    ) -> None:
        self.model = model
        self.match_coef = match_coef
        self.match = prediction_match(model) if match_coef > 0 else None
        self.updates_per_rollout, self.batch_size = updates_per_rollout, batch_size
        self.anchor_coef = anchor_coef
        params = model.cell.transition_parameters()
        self.optimizer = (
            torch.optim.SGD(params, lr=lr, momentum=0.9)
            if optimizer == "sgd"
            else torch.optim.AdamW(params, lr=lr)
        )
        self.replay = DMTReplay(replay_size)

    def update(
        self,
        rollout: TensorDictBase,
        history: tuple[TensorDict, torch.Tensor, int],
        generator: torch.Generator,
        remember: Callable[[torch.Tensor], None] | None = None,
    ) -> dict[str, float]:
        """Label ``rollout`` ``(T, N)`` (keys ``prev``, ``x``, ``memory``) from ``history`` (what
        :meth:`VisitedHistories.extend` returned for it), add it to the replay, train the cell.
        ``remember`` (:meth:`VisitedHistories.remember`) receives the labels of every column.

        Returns ``dmt/loss`` (mean over the updates) and ``dmt/memory_mse`` (the drift of the
        memory the agent acted on from the teacher's labels, before the updates).
        """
        labels, teacher_prev, every_label = teacher_labels(self.model, *history)
        if remember is not None:
            remember(every_label)
        drift = float((rollout["memory"] - labels).pow(2).mean())
        decisions = decision_metrics(self.model, rollout["memory"], labels, rollout)
        rows = TensorDict(
            {
                "prev": rollout["prev"],
                "x": rollout["x"],
                "label": labels,
                "teacher_prev": teacher_prev,
            },
            batch_size=rollout.batch_size,
        )
        self.replay.add(rows.flatten(0, 1))
        cell = self.model.cell
        losses = []
        for _ in range(self.updates_per_rollout):
            sample = self.replay.sample(self.batch_size, generator)
            loss = dmt_loss(
                cell,
                sample["prev"],
                sample["x"],
                sample["label"],
                teacher_prev=sample["teacher_prev"],
                anchor_coef=self.anchor_coef,
                match=self.match,
                match_coef=self.match_coef,
            )
            _check_finite(loss, "on-policy DMT", "onpolicy_dmt.lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(cell.transition_parameters(), 1.0)
            self.optimizer.step()
            losses.append(float(loss.detach()))
        mean_loss = sum(losses) / len(losses) if losses else float("nan")
        metrics = {"dmt/loss": mean_loss, "dmt/memory_mse": drift}
        metrics.update({f"dmt/{k}": v for k, v in decisions.items()})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "replay": self.replay.state_dict()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"], device)
