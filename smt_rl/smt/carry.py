"""Memory carried across teacher windows (``model.carry``): what lets labels reach past
``model.context`` with a training cost per update that does not grow with the episode length.

An episode longer than a training window is cut at multiples of ``stride`` steps. The teacher's
label at the step before a cut, computed while training on the window that covers it, is cached
(detached) and becomes the *carried memory* the teacher reads as a prefix when a later window
starts at that cut. A window may only start at a cut whose carried memory is known, so training
walks each episode forward from its start; the far reward targets of every step reach to the end
of its episode (not of its window), so a label must hold what a reward far past its window
depends on, and the next window's teacher must read it from the carried memory.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from smt_rl.data.dataset import TrajectoryDataset
from smt_rl.smt.targets import far_steps


class CarriedMemoryCache:
    """The carried memory at every cut of every episode of a dataset, and which are known.

    Slot ``j`` of an episode holds ``m*_{j * stride - 1}``, the label before step ``j * stride``;
    slot 0 (the episode start) needs none and is always known.

    Args:
        episode_lengths: ``(N,)`` steps of each episode.
        stride: steps between cuts.
        num_tokens: K.
        token_dim: d.
    """

    def __init__(
        self, episode_lengths: torch.Tensor, stride: int, num_tokens: int, token_dim: int
    ) -> None:
        self.stride = stride
        self.slots = (episode_lengths + stride - 1) // stride  # (N,) cuts per episode
        self.first = torch.cumsum(self.slots, 0) - self.slots  # (N,) flat index of slot 0
        total = int(self.slots.sum())
        self.states = torch.zeros(total, num_tokens, token_dim)
        self.known = torch.zeros(total, dtype=torch.bool)
        self.known[self.first] = True

    def known_fraction(self) -> float:
        """Share of all cuts whose carried memory is known (1.0: every window reachable)."""
        return float(self.known.float().mean())

    def sample_starts(
        self, episodes: torch.Tensor, generator: torch.Generator, start_prob: float = 0.0
    ) -> torch.Tensor:
        """A start step for each of ``episodes (B,)``: the episode's start with probability
        ``start_prob``, else a cut with a known carried memory, uniform among those of its
        episode: ``(B,)`` int64."""
        starts = torch.empty_like(episodes)
        draws = torch.rand(len(episodes), generator=generator)
        at_start = torch.rand(len(episodes), generator=generator) < start_prob
        for i, episode in enumerate(episodes.tolist()):
            first = int(self.first[episode])
            known = self.known[first : first + int(self.slots[episode])].nonzero().squeeze(-1)
            starts[i] = 0 if at_start[i] else known[int(draws[i] * len(known))] * self.stride
        return starts

    def carried(self, episodes: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """The memory before step ``starts`` of ``episodes`` (both ``(B,)``): ``(B, K, d)``; zeros
        at an episode start (nothing is carried into it)."""
        return self.states[self.first[episodes] + starts // self.stride]

    def store(self, episodes: torch.Tensor, starts: torch.Tensor, labels: torch.Tensor) -> None:
        """Cache the labels ``(B, T, K, d)`` of windows of ``episodes`` starting at ``starts`` at
        the cuts inside them (the label of the step before each cut)."""
        steps = labels.shape[1]
        lengths = self.slots * self.stride  # an upper bound of each episode's steps
        for offset in range(self.stride, steps + 1, self.stride):
            cut = starts + offset  # (B,)
            inside = cut < lengths[episodes]
            slot = cut // self.stride
            inside &= slot < self.slots[episodes]
            if not inside.any():
                continue
            flat = (self.first[episodes] + slot)[inside]
            self.states[flat] = labels[inside, offset - 1].detach().float().cpu()
            self.known[flat] = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"states": self.states.clone(), "known": self.known.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["states"].shape != self.states.shape:
            raise ValueError(
                f"carried-memory cache of shape {tuple(state['states'].shape)} does not fit this "
                f"dataset and model ({tuple(self.states.shape)})"
            )
        self.states.copy_(state["states"])
        self.known.copy_(state["known"])


def far_targets_to_episode_end(
    dataset: TrajectoryDataset,
    episodes: torch.Tensor,
    starts: torch.Tensor,
    mask: torch.Tensor,
    far_last_prob: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Far reward targets of every step of windows ``(B, T)`` reaching to the end of each episode:
    the target step is the episode's last with probability ``far_last_prob``, else uniform
    between the step and the episode's last.

    Args:
        episodes, starts: ``(B,)`` the windows' episodes and first steps.
        mask: ``(B, T)`` real steps of the windows.

    Returns:
        ``far_offset``, ``far_action``, ``far_reward``, ``far_terminated``, ``far_valid``, each
        ``(B, T, ...)`` (the keys :func:`smt_rl.smt.targets.predictive_targets` returns).
    """
    steps = mask.shape[1]
    lengths = dataset.episode_lengths[episodes][:, None]  # (B, 1)
    t = starts[:, None] + torch.arange(steps)[None]  # (B, T) step within the episode
    last = (lengths - 1).expand(-1, steps)
    target = far_steps(t, last, far_last_prob, generator).clamp(max=last).clamp_min(0)
    flat = dataset.episode_starts[episodes][:, None] + target
    rows = dataset._gather(flat, keys=["action", ("next", "reward"), ("next", "terminated")])
    return {
        "far_offset": (target - t).clamp_min(0),
        "far_action": rows["action"],
        "far_reward": rows["next", "reward"],
        "far_terminated": rows["next", "terminated"],
        "far_valid": mask & (target >= t),
    }


class ChainedWindowSampler:
    """Training windows for ``model.carry``: episodes drawn uniformly from ``episode_ids``, each
    cut to ``T = min(seq_len, longest drawn)`` steps starting at the episode's start with
    probability ``start_prob`` (where what must be carried is first seen, in tasks that show it
    early), else at a cut with a known carried memory, with far targets to the episode's end.
    Call :meth:`store` with the labels of each sampled batch so that later windows can start
    where it ends.

    The first ``stream_fraction`` of the batch's rows instead *stream*: each walks one episode
    from its start to its end, window after window, carrying the label the teacher gave one
    update ago, then takes another episode. The cache then holds labels of chains that were
    fresh when written: without streams, a cut deep in a long episode holds a label computed from
    a label cached earlier, computed from another..., each by an older teacher, so its code lags
    the current teacher's by as many refreshes as the chain has hops.
    """

    def __init__(
        self,
        dataset: TrajectoryDataset,
        episode_ids: torch.Tensor,
        seq_len: int,
        cache: CarriedMemoryCache,
        far_last_prob: float,
        generator: torch.Generator,
        start_prob: float = 0.0,
        stream_fraction: float = 0.0,
    ) -> None:
        self.dataset, self.episode_ids, self.seq_len = dataset, episode_ids, seq_len
        self.cache, self.far_last_prob, self.generator = cache, far_last_prob, generator
        self.start_prob, self.stream_fraction = start_prob, stream_fraction
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (episodes, next cut)

    def sample(self, batch_size: int) -> TensorDict:
        """A batch ``(B, T)``: the dataset's keys, the far targets to the episode end and
        ``window_start`` (the window's first step; :meth:`carried` looks up what it carries)."""
        pick = torch.randint(len(self.episode_ids), (batch_size,), generator=self.generator)
        episodes = self.episode_ids[pick]
        starts = self.cache.sample_starts(episodes, self.generator, self.start_prob)
        streams = torch.arange(batch_size) < round(self.stream_fraction * batch_size)
        starts = torch.where(streams, 0, starts)  # a stream begins its episode at its start
        if self.previous is not None and len(self.previous[0]) == batch_size:
            before, cut = self.previous
            go_on = streams & (cut >= 0)
            episodes = torch.where(go_on, before, episodes)
            starts = torch.where(go_on, cut, starts)
        self.previous = None  # a stream goes on only after store() saw this batch
        length = min(self.seq_len, int(self.dataset.episode_lengths[episodes].max()))
        batch = self.dataset.windows(episodes, starts, length)
        far = far_targets_to_episode_end(
            self.dataset, episodes, starts, batch["mask"], self.far_last_prob, self.generator
        )
        for key, value in far.items():
            batch.set(key, value)
        batch.set("window_start", starts[:, None].expand(-1, length).clone())
        return batch

    def carried(self, batch: TensorDict) -> torch.Tensor:
        """The memory carried into each window of ``batch``: ``(B, K, d)``."""
        return self.cache.carried(batch["episode"][:, 0].cpu(), batch["window_start"][:, 0].cpu())

    def store(self, batch: TensorDict, labels: torch.Tensor) -> None:
        """Cache the carried memories at the cuts inside ``batch``'s windows, and remember where
        each row would continue (the last cut inside its window; -1 past the episode's end)."""
        episodes, starts = batch["episode"][:, 0].cpu(), batch["window_start"][:, 0].cpu()
        self.cache.store(episodes, starts, labels)
        stride = self.cache.stride
        cut = (starts + labels.shape[1]) // stride * stride
        ends = cut >= self.dataset.episode_lengths[episodes]
        self.previous = (episodes, torch.where(ends | (cut <= starts), -1, cut))
