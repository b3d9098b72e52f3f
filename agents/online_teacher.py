"""The teacher keeps learning during RL (``online_teacher.enabled: true``).

The agent's finished episodes are kept in a small buffer in the dataset's key layout, and the
teacher encoder and predictive decoder take a few steps of their predictive loss on them after each
rollout, at a low learning rate. The step encoder stays frozen (the DMT replay stores its outputs).
With ``smt.updates=0`` this is how the teacher learns at all: the "memory trained by DMT alone"
ablation.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from smt_rl.smt.config import SMTConfig
from smt_rl.smt.losses import predictive_loss, uniformity
from smt_rl.smt.model import SMTModel


def finished_episode(
    inputs: list[TensorDict],
    actions: list[torch.Tensor],
    rewards: list[float],
    terminated: bool,
    final_observation: torch.Tensor | TensorDict,
) -> TensorDict:
    """One finished episode ``(L,)`` in the dataset layout (``observation``, ``prev_action``,
    ``prev_reward``, ``is_init``, ``step_count``, ``action``, ``next/{observation, reward,
    terminated}``, ``mask``) from the agent's per-step records.

    Args:
        inputs: the L step-input TensorDicts ``()`` the agent acted on.
        actions: the L actions taken, each of the action space's shape.
        rewards: the L rewards received.
        terminated: whether the last step terminated (else it was truncated).
        final_observation: ``o_L`` of the episode, shaped like one observation ``(*o)``.
    """
    episode = torch.stack(inputs).clone()
    length = episode.shape[0]
    observation = episode["observation"]
    final = final_observation.unsqueeze(0).to(observation.device)
    next_observation = torch.cat([observation[1:], final], 0)
    flags = torch.zeros(length, dtype=torch.bool)
    flags[-1] = terminated
    episode.set("action", torch.stack(actions).to(episode["prev_action"].dtype))
    episode.set(
        "next",
        TensorDict(
            {
                "observation": next_observation,
                "reward": torch.tensor(rewards, dtype=torch.float32),
                "terminated": flags,
            },
            batch_size=[length],
        ),
    )
    episode.set("mask", torch.ones(length, dtype=torch.bool))
    return episode


def stack_padded(episodes: list[TensorDict]) -> TensorDict:
    """Episodes ``(L_i,)`` stacked to ``(E, max L_i)``, each shorter one padded by repeating its
    last step (causal attention never lets a real step see the padding)."""
    longest = max(e.shape[0] for e in episodes)
    return torch.stack(
        [
            torch.cat([e, e[-1:].expand(longest - e.shape[0]).clone()], 0)
            if e.shape[0] < longest
            else e
            for e in episodes
        ]
    )


class EpisodeBuffer:
    """The last ``capacity`` finished on-policy episodes; samples padded batches ``(B, T)``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.episodes: list[TensorDict] = []
        self.next = 0

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episode: TensorDict) -> None:
        if len(self.episodes) < self.capacity:
            self.episodes.append(episode)
        else:
            self.episodes[self.next] = episode
        self.next = (self.next + 1) % self.capacity

    def sample(self, batch_size: int, max_length: int, generator: torch.Generator) -> TensorDict:
        """``batch_size`` episodes (with replacement), each cut to its first ``max_length`` steps,
        padded to the longest with ``mask`` False."""
        picks = torch.randint(len(self.episodes), (batch_size,), generator=generator).tolist()
        chosen = [self.episodes[i][:max_length] for i in picks]
        batch = stack_padded(chosen)
        lengths = torch.tensor([e.shape[0] for e in chosen])
        batch["mask"] = torch.arange(batch.shape[1]) < lengths[:, None]
        return batch


class OnlineTeacher:
    """Predictive-loss updates of the teacher encoder and decoder on the agent's own episodes.

    Args:
        model: the SMT model (its teacher and decoder get ``requires_grad`` back).
        smt: the pretraining optimisation config (loss weights, ``seq_len``).
        lr: AdamW learning rate.
        batch_episodes: episodes per update.
        capacity: finished episodes kept.
    """

    def __init__(
        self, model: SMTModel, smt: SMTConfig, lr: float, batch_episodes: int, capacity: int
    ) -> None:
        self.model, self.smt, self.batch_episodes = model, smt, batch_episodes
        self.params = list(model.teacher.parameters()) + list(model.decoder.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=smt.weight_decay)
        self.buffer = EpisodeBuffer(capacity)

    def update(self, updates: int, generator: torch.Generator, device: torch.device):
        """``updates`` steps on batches from the buffer; mean loss terms (empty before the first
        episode has finished)."""
        if len(self.buffer) == 0 or updates <= 0:
            return {}
        totals: dict[str, float] = {}
        for _ in range(updates):
            batch = self.buffer.sample(self.batch_episodes, self.smt.seq_len, generator).to(device)
            with torch.no_grad():
                x = self.model.step_encoder(batch)
            memory = self.model.teacher(x)
            pred, terms = predictive_loss(self.model, memory, batch, self.smt, generator, x)
            loss = self.smt.c_pred * pred + self.smt.c_unif * uniformity(memory, batch["mask"])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.smt.grad_clip)
            self.optimizer.step()
            for key, value in {"teacher/pred_loss": pred, **terms}.items():
                name = key if key.startswith("teacher/") else f"teacher/pred_{key}"
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / updates
        return totals
