"""What the PPO x DMT loop carries between rollouts, and its resume state on disk.

The loop's state is everything a rollout continues from: the environments' last observations,
each environment's memory state and episode-start flag, the running episode statistics, and the
actions taken so far (a resumed run rebuilds its environments by resetting them with the run's
seed and replaying those actions, so they must be deterministic given their seed, as gymnasium's
are). The resume file adds the agent's learning state (weights, optimisers, DMT replay, RNG).
Everything is tensors, numbers, strings, lists and dicts: it is written as a tree file
(:mod:`smt_rl.tree_file`, no pickle) and its fields are checked when it is read back
(:class:`LoopResumeState`, :class:`LearnerState`).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smt_rl.checkpoint import CheckpointError
from smt_rl.faults import kill_point
from smt_rl.memory import MemoryState
from smt_rl.records import NonNegativeInt, OptimizerState, Record, Tensor, check_record
from smt_rl.smt.trainer import RunnerState
from smt_rl.tree_file import load_tree, save_tree

STATS_WINDOW = 100  # finished episodes averaged in rollout/return_mean and rollout/success_rate
RESUME_FIX = "delete it to start over (the RL phase starts again; the pretraining is kept)."


@dataclass
class EpisodeStats:
    """Returns and successes of the episodes the agent finished, for the rollout metrics."""

    running: np.ndarray  # (N,) return of each environment's current episode so far
    returns: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    successes: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))

    def record(self, rewards: np.ndarray, done: np.ndarray, success: list[bool | None]) -> None:
        """Add a step's rewards ``(N,)``; close the episodes where ``done`` ``(N,)``."""
        self.running += rewards
        for i in np.flatnonzero(done):
            self.returns.append(float(self.running[i]))
            if success[i] is not None:
                self.successes.append(float(success[i]))
            self.running[i] = 0.0

    def metrics(self) -> dict[str, float]:
        out = {"rollout/return_mean": float(np.mean(self.returns)) if self.returns else np.nan}
        if self.successes:
            out["rollout/success_rate"] = float(np.mean(self.successes))
        return out


@dataclass
class LoopState:
    """Where the loop stands between two steps of N environments."""

    observations: Any  # (N, ...) the last observations, a tensor (a TensorDict for Dict spaces)
    memory: MemoryState  # what each environment's memory carries into its next step
    starts: torch.Tensor  # (N,) bool: the next observation starts an episode
    stats: EpisodeStats
    actions: list[np.ndarray] = field(default_factory=list)  # every step's env actions so far
    rollouts: int = 0  # rollouts completed by this call of learn()


def save_resume_state(path: str | os.PathLike, learner: dict[str, Any], loop: LoopState) -> None:
    """Write the agent's learning state ``learner`` and the loop's state atomically."""
    save_tree(
        path,
        {
            **learner,
            "actions": torch.as_tensor(np.stack(loop.actions)),
            "memory_state": loop.memory.to_dict(),
            "starts": loop.starts.cpu(),
            "running": torch.as_tensor(loop.stats.running),
            "returns": list(loop.stats.returns),
            "successes": list(loop.stats.successes),
        },
    )
    kill_point("resume.saved")


class LoopResumeState(Record):
    """The loop's fields of a resume state (:func:`save_resume_state`; the agent's learning state
    beside them is checked by the agent, :class:`LearnerState`)."""

    total_timesteps: NonNegativeInt
    num_timesteps: NonNegativeInt
    actions: Tensor  # (steps, N, ...) every step's env actions
    memory_state: dict[str, Tensor]
    starts: Tensor
    running: Tensor
    returns: list[float]
    successes: list[float]


class ReplayState(Record):
    """The DMT replay's state (``smt_rl.smt.dmt.DMTReplay.state_dict``)."""

    data: dict[str, Any] | None
    next: NonNegativeInt
    count: NonNegativeInt


class DMTState(Record):
    """On-policy DMT's state (``OnPolicyDMT.state_dict``)."""

    optimizer: OptimizerState
    replay: ReplayState


class HistoriesState(Record):
    """The visited histories' state (``VisitedHistories.state_dict``)."""

    tail: dict[str, Any] | None
    batch_size: list[NonNegativeInt] | None
    valid: Tensor | None
    carried: Tensor | None = None  # the teacher's label before each tail (model.carry)
    tail_start: Tensor | None = None


class OnlineSMTState(Record):
    """Online SMT's state (``OnlineSMT.state_dict``)."""

    runner: RunnerState
    owed: float
    reward_scale: Tensor


class ExperienceState(Record):
    """The experience store's state (``ExperienceStore.state_dict``)."""

    chunks: NonNegativeInt
    window: list[NonNegativeInt]


class PieceState(Record):
    """An unfinished episode's steps (``EpisodeAssembler.state_dict``)."""

    steps: dict[str, Any]
    length: NonNegativeInt


class AssemblerState(Record):
    """The episode assembler's state: one unfinished episode (or None) per environment."""

    pieces: list[PieceState | None]


class LearnerState(Record):
    """The agent's fields of a resume state (``SMTPPO._learner_state``)."""

    total_timesteps: NonNegativeInt
    num_timesteps: NonNegativeInt
    modules: dict[str, Tensor]
    policy_opt: OptimizerState
    dmt: DMTState
    histories: HistoriesState
    online_smt: OnlineSMTState | None
    experience: ExperienceState | None
    episodes: AssemblerState | None
    generator: Tensor
    torch_rng: Tensor


def read_resume_state(
    path: str | os.PathLike,
    total_timesteps: int,
    fix: str = "resume with the same config or delete it.",
) -> dict[str, Any] | None:
    """The resume state at ``path`` (None when there is none), its loop fields checked; ``fix``
    ends the message refusing a state of another ``total_timesteps``.

    Raises:
        CheckpointError: the file is corrupt or not a resume state, a loop field is missing or of
            the wrong type, or it was written for another ``total_timesteps``.
    """
    if not Path(path).is_file():
        return None
    saved = load_tree(path, CheckpointError, RESUME_FIX)
    check_record(LoopResumeState, saved, path, CheckpointError, RESUME_FIX)
    if saved["total_timesteps"] != total_timesteps:
        raise CheckpointError(
            f"the RL resume state {path} was written for total_timesteps="
            f"{saved['total_timesteps']}, this run asks for {total_timesteps}; {fix}"
        )
    return saved


def loop_from_saved(saved: dict[str, Any], observations: Any, device: torch.device) -> LoopState:
    """The loop's state from a resume state, once the environments have replayed its actions
    and returned ``observations``."""
    stats = EpisodeStats(saved["running"].numpy().copy())
    stats.returns.extend(saved["returns"])
    stats.successes.extend(saved["successes"])
    return LoopState(
        observations=observations,
        memory=MemoryState.from_dict(saved["memory_state"], device),
        starts=saved["starts"].to(device),
        stats=stats,
        actions=[a.numpy() for a in saved["actions"]],
    )
