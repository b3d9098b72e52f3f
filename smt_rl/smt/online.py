"""SMT during RL: the teacher, the decoder and the memory module keep learning the full SMT loss
on the agent's own experience (mixed with any logged data), a few updates per environment step.

Pretraining learns what random-policy data shows; an agent that does what the task requires visits
other histories (the start object looked at, then the right end reached). Training the teacher on
them is DAgger for the teacher's data, as DMT is DAgger for the student's states: a world model
trained on replay, as Dreamer trains its own. With no logged data at all the first rollouts feed
the first updates. It runs the same :class:`~smt_rl.smt.phases.PhaseRunner` as pretraining, a few
updates at a time, at a constant learning rate.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict

from smt_rl.data.dataset import TrajectoryDataset
from smt_rl.data.experience import ExperienceStore
from smt_rl.distributed import DistContext
from smt_rl.smt.config import SMTConfig
from smt_rl.smt.losses import smt_loss
from smt_rl.smt.model import SMTModel
from smt_rl.smt.phases import Phase, PhaseRunner, PhaseSettings
from smt_rl.smt.trainer import EpisodeSampler

# what the SMT loss reads of a window (both sources are cut to these before they are merged)
WINDOW_KEYS = (
    "observation",
    "prev_action",
    "prev_reward",
    "is_init",
    "step_count",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "done"),
    "mask",
)
FOREVER = 2**62  # an online phase has no end of its own: the RL loop stops calling it


def sample_windows(
    episodes: list[TensorDict], n: int, seq_len: int, generator: torch.Generator
) -> TensorDict:
    """``n`` windows ``(n, T)`` of episodes drawn uniformly with replacement from ``episodes``
    (each ``(L,)`` with ``mask``): ``T = min(seq_len, longest drawn)``; an episode longer than T
    gives a window at a uniformly random start; shorter ones are padded with ``mask`` False (their
    last step repeated)."""
    picks = torch.randint(len(episodes), (n,), generator=generator).tolist()
    lengths = torch.tensor([episodes[i].shape[0] for i in picks])
    length = min(seq_len, int(lengths.max()))
    room = (lengths - length).clamp_min(0) + 1
    starts = (torch.rand(n, generator=generator) * room).long().tolist()
    windows = []
    for i, start in zip(picks, starts, strict=True):
        window = episodes[i][start : start + length].select(*WINDOW_KEYS)
        windows.append(_pad(window, length))
    return torch.stack(windows)


def _pad(window: TensorDict, length: int) -> TensorDict:
    """``window (L,)`` padded to ``(length,)`` by repeating its last step, ``mask`` False there."""
    missing = length - window.shape[0]
    if missing == 0:
        return window
    padding = window[-1:].expand(missing).clone()
    padding["mask"] = torch.zeros(missing, dtype=torch.bool)
    return torch.cat([window, padding], 0)


class MixedSampler:
    """Training windows ``(B, T)``: a share ``logged_fraction`` from the logged dataset (when there
    is one), the rest from the agent's experience.

    Args:
        logged: the logged dataset, or None.
        experience: the agent's experience.
        logged_fraction: the share of each batch drawn from ``logged``.
        seq_len: the longest window.
        generator: the random stream of every draw.
    """

    def __init__(
        self,
        logged: TrajectoryDataset | None,
        experience: ExperienceStore,
        logged_fraction: float,
        seq_len: int,
        generator: torch.Generator,
    ) -> None:
        self.experience, self.seq_len, self.generator = experience, seq_len, generator
        self.logged_fraction = logged_fraction if logged is not None else 0.0
        self.logged = None
        if logged is not None:
            ids = torch.arange(logged.num_episodes)
            self.logged = EpisodeSampler(logged, ids, seq_len, generator)

    def sample(self, batch_size: int) -> TensorDict:
        n_logged = round(batch_size * self.logged_fraction) if len(self.experience) else batch_size
        parts = []
        if n_logged:
            parts.append(self.logged.sample(n_logged).select(*WINDOW_KEYS))
        if batch_size - n_logged:
            parts.append(
                sample_windows(
                    self.experience.episodes, batch_size - n_logged, self.seq_len, self.generator
                )
            )
        length = max(p.shape[1] for p in parts)
        return torch.cat([torch.stack([_pad(row, length) for row in p]) for p in parts], 0)


class OnlineSMT:
    """The SMT loss on experience (and logged data), ``updates_per_step`` updates per env step.

    Args:
        model: the SMT model; every part of it learns (step encoder, teacher, decoder, cell).
        smt: the loss weights and window length of pretraining (``smt.*``).
        experience: the agent's experience.
        logged: the logged dataset, or None.
        lr: AdamW learning rate (constant).
        batch_size: windows per update.
        updates_per_step: SMT updates per environment step (all environments counted).
        logged_fraction: the share of each batch drawn from the logged data.
        min_episodes: finished episodes in the experience before the first update.
        weight_decay / grad_clip: AdamW weight decay, max gradient norm.
        generator: the random stream of the batches (and of the SMT loss's far targets).
        device: where the model trains.
    """

    def __init__(
        self,
        model: SMTModel,
        smt: SMTConfig,
        experience: ExperienceStore,
        logged: TrajectoryDataset | None,
        *,
        lr: float,
        batch_size: int,
        updates_per_step: float,
        logged_fraction: float,
        min_episodes: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        self.model, self.experience, self.logged = model, experience, logged
        self.batch_size, self.updates_per_step = batch_size, updates_per_step
        self.min_episodes, self.device = min_episodes, device
        self.owed = 0.0  # updates earned by env steps and not run yet
        sampler = MixedSampler(logged, experience, logged_fraction, smt.seq_len, generator)
        phase = Phase(
            "online_smt",
            FOREVER,
            list(model.parameters()),
            lr,
            lambda batch: smt_loss(model, batch, smt, generator),
            "online_smt.lr",
        )
        settings = PhaseSettings(
            weight_decay=smt.weight_decay,
            grad_clip=smt.grad_clip,
            warmup=0,
            log_every=FOREVER,  # the RL loop logs the averages with its own lines
            eval_every=FOREVER,
            checkpoint_every=0,
        )
        self.runner = PhaseRunner(
            phase,
            model,
            lambda: sampler.sample(batch_size).to(device),
            settings,
            DistContext(rank=0, world_size=1, local_rank=0, device=device),
            schedule=lambda _: 1.0,
        )

    def update(self, env_steps: int) -> dict[str, float]:
        """Run the updates that ``env_steps`` more environment steps earned; their mean metrics
        (``online_smt/...``; nothing while the experience is too small)."""
        self.owed += env_steps * self.updates_per_step
        due = int(self.owed)
        if due == 0 or len(self.experience) < self.min_episodes:
            return {}
        self.owed -= due
        scale = self.experience.reward_scale()
        if self.logged is not None:
            scale = max(scale, self.logged.reward_scale())
        self.model.decoder.reward_scale.fill_(scale)
        self.runner.run(due)
        averages = self.runner.take_averages()
        metrics = {f"online_smt/{k.removeprefix('loss/')}": v for k, v in averages.items()}
        metrics["online_smt/updates"] = float(self.runner.update)
        metrics["online_smt/experience_episodes"] = float(len(self.experience))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner.state_dict(),
            "owed": self.owed,
            "reward_scale": self.model.decoder.reward_scale.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.runner.load_state_dict(state["runner"])
        self.owed = float(state["owed"])
        self.model.decoder.reward_scale.copy_(state["reward_scale"])
