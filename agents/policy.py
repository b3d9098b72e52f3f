"""Actor and critic heads that read a memory state and the step embedding (never backprop into
either: they arrive detached), with action distributions per action space."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical, Normal

from smt_rl.errors import SpaceError
from smt_rl.models.common import mlp


class ActorCritic(nn.Module):
    """``features (N, F) -> (action distribution, value (N,))``.

    Supported action spaces: Discrete, MultiDiscrete (independent categoricals), Box (diagonal
    Gaussian with a learned state-independent log std; actions are clipped to the bounds by the
    caller).

    Args:
        feature_dim: F = memory size Z + step-embedding width D (+ n predicted rewards).
        action_space: the environment's action space.
        hidden: MLP width.
        reward_prior: Discrete actions whose last n features are a predicted reward per action
            only: that many times those rewards are added to the logits (0: none). A prior the
            policy starts from and PPO corrects, not a feature it must learn to read.
    """

    def __init__(
        self,
        feature_dim: int,
        action_space: spaces.Space,
        hidden: int,
        reward_prior: float = 0.0,
    ) -> None:
        super().__init__()
        self.action_space = action_space
        self.reward_prior = reward_prior
        if reward_prior and not isinstance(action_space, spaces.Discrete):
            raise SpaceError(
                f"action_space: a reward prior on the logits needs Discrete actions, got "
                f"{action_space}; set ppo.decoder_prior=0."
            )
        if isinstance(action_space, spaces.Discrete):
            self.splits = [int(action_space.n)]
        elif isinstance(action_space, spaces.MultiDiscrete):
            self.splits = [int(n) for n in np.asarray(action_space.nvec).reshape(-1)]
        elif isinstance(action_space, spaces.Box):
            self.splits = []
            self.log_std = nn.Parameter(torch.zeros(int(np.prod(action_space.shape))))
        else:
            raise SpaceError(
                f"action_space: the PPO policy supports Discrete, MultiDiscrete and Box actions, "
                f"got {action_space}; wrap the env to one of these."
            )
        out = sum(self.splits) if self.splits else int(np.prod(action_space.shape))
        self.actor = mlp([feature_dim, hidden, hidden, out], nn.Tanh)
        self.critic = mlp([feature_dim, hidden, hidden, 1], nn.Tanh)
        # small initial policy output: near-uniform / near-zero-mean actions at the start
        nn.init.orthogonal_(self.actor[-1].weight, 0.01)
        nn.init.zeros_(self.actor[-1].bias)

    def value(self, features: torch.Tensor) -> torch.Tensor:
        return self.critic(features).squeeze(-1)

    def forward(self, features: torch.Tensor) -> tuple[_Distribution, torch.Tensor]:
        out = self.actor(features)
        if self.reward_prior:
            out = out + self.reward_prior * features[..., -self.splits[0] :]
        return _Distribution(self, out), self.value(features)


class _Distribution:
    """``log_prob``, ``entropy``, ``sample``, ``mode`` over the policy's action space."""

    def __init__(self, head: ActorCritic, out: torch.Tensor) -> None:
        self.space = head.action_space
        if head.splits:
            # no argument validation: the logits come from the network, checked inputs upstream
            self.parts = [
                Categorical(logits=o, validate_args=False) for o in out.split(head.splits, -1)
            ]
        else:
            self.normal = Normal(out, head.log_std.exp().expand_as(out), validate_args=False)

    def sample(self) -> torch.Tensor:
        if isinstance(self.space, spaces.Box):
            return self.normal.sample().view(-1, *self.space.shape)
        if isinstance(self.space, spaces.Discrete):
            return self.parts[0].sample() + int(self.space.start)
        return self._to_actions(torch.stack([p.sample() for p in self.parts], -1))

    def mode(self) -> torch.Tensor:
        if isinstance(self.space, spaces.Box):
            return self.normal.mean.view(-1, *self.space.shape)
        return self._to_actions(torch.stack([p.probs.argmax(-1) for p in self.parts], -1))

    def _to_actions(self, index: torch.Tensor) -> torch.Tensor:
        """Category indices ``(N, parts)`` -> actions of the space (its ``start`` added)."""
        if isinstance(self.space, spaces.Discrete):
            return index[:, 0] + int(self.space.start)
        start = torch.as_tensor(self.space.start, device=index.device).reshape(-1)
        return (index + start).view(-1, *self.space.shape)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        if isinstance(self.space, spaces.Box):
            return self.normal.log_prob(actions.flatten(1).float()).sum(-1)
        if isinstance(self.space, spaces.Discrete):
            return self.parts[0].log_prob(actions.long() - int(self.space.start))
        start = torch.as_tensor(self.space.start, device=actions.device).reshape(-1)
        idx = actions.long().reshape(actions.shape[0], -1) - start
        return sum(p.log_prob(idx[:, i]) for i, p in enumerate(self.parts))

    def entropy(self) -> torch.Tensor:
        if isinstance(self.space, spaces.Box):
            return self.normal.entropy().sum(-1)
        return sum(p.entropy() for p in self.parts)
