"""Embed the step input ``x_t`` = (o_t, a_{t-1}, r_{t-1}, episode-start flag, step index).

Built from gymnasium spaces: ``Box`` (vectors; ``(H, W, C)`` images through a conv stem),
``Discrete``, ``MultiDiscrete``, ``MultiBinary`` and ``Dict`` of these. Other spaces raise
:class:`smt_rl.errors.SpaceError` naming the field.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDictBase
from torch import nn

from smt_rl.models.common import sinusoidal_features, symlog
from smt_rl.spaces import check_space

STEP_INPUT_KEYS = ("observation", "prev_action", "prev_reward", "is_init", "step_count")


def is_image_space(space: spaces.Space) -> bool:
    """A ``Box`` of shape ``(H, W, C)`` with C in 1..4 and H, W >= 5 is embedded as an image."""
    return (
        isinstance(space, spaces.Box)
        and len(space.shape) == 3
        and space.shape[-1] <= 4
        and min(space.shape[:2]) >= 5
    )


class BoxScaler(nn.Module):
    """Maps Box values to roughly [-1, 1]: by the bounds where finite, else by symlog."""

    def __init__(self, space: spaces.Box) -> None:
        super().__init__()
        low = np.broadcast_to(space.low, space.shape).astype(np.float64)
        high = np.broadcast_to(space.high, space.shape).astype(np.float64)
        finite = np.isfinite(low) & np.isfinite(high) & (high > low)
        low, high = np.where(finite, low, -1.0), np.where(finite, high, 1.0)
        center, half = (high + low) / 2, (high - low) / 2
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32), False)
        self.register_buffer("half_range", torch.as_tensor(half, dtype=torch.float32), False)
        self.register_buffer("finite", torch.as_tensor(finite), False)
        self.all_finite, self.none_finite = bool(finite.all()), not bool(finite.any())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.all_finite:  # the common cases take one path, not both and a select
            return (x - self.center) / self.half_range
        if self.none_finite:
            return symlog(x)
        return torch.where(self.finite, (x - self.center) / self.half_range, symlog(x))


class ImageStem(nn.Module):
    """``(..., H, W, C)`` image -> ``(..., out_dim)`` with two small convolutions."""

    def __init__(self, space: spaces.Box, out_dim: int, channels: int = 32) -> None:
        super().__init__()
        height, width, in_channels = space.shape
        self.scale = BoxScaler(space)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.GELU(),
        )
        flat = channels * math.ceil(height / 2) * math.ceil(width / 2)
        self.out = nn.Linear(flat, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        x = self.scale(x).reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
        return self.out(self.conv(x).flatten(1)).reshape(*lead, -1)


class SpaceEmbedding(nn.Module):
    """Embeds samples of one space: ``(..., *space.shape)`` -> ``(..., dim)``.

    A ``Dict`` space is embedded as the sum of its members' embeddings (a nested TensorDict in).

    Args:
        space: the gymnasium space.
        dim: embedding width.
        field: name used in error messages (e.g. ``"observation_space"``).
    """

    def __init__(self, space: spaces.Space, dim: int, field: str = "space") -> None:
        super().__init__()
        check_space(space, field)
        self.space = space
        self.dim = dim
        if isinstance(space, spaces.Dict):
            self.members = nn.ModuleDict(
                {k: SpaceEmbedding(s, dim, f"{field}[{k!r}]") for k, s in space.spaces.items()}
            )
        elif is_image_space(space):
            self.net = ImageStem(space, dim)
        elif isinstance(space, spaces.Box):
            self.scale = BoxScaler(space)
            self.net = nn.Linear(int(np.prod(space.shape)) or 1, dim)
        elif isinstance(space, spaces.Discrete):
            self.register_buffer("start", torch.tensor(int(space.start)), False)
            self.net = nn.Embedding(int(space.n), dim)
        elif isinstance(space, spaces.MultiDiscrete):
            nvec = torch.as_tensor(space.nvec, dtype=torch.int64).reshape(-1)
            offsets = torch.cumsum(nvec, 0) - nvec
            self.register_buffer("offsets", offsets, False)
            self.register_buffer("start", torch.as_tensor(space.start).reshape(-1), False)
            self.net = nn.Embedding(int(nvec.sum()), dim)
        elif isinstance(space, spaces.MultiBinary):
            self.net = nn.Linear(int(np.prod(space.shape)), dim)

    def forward(self, x: torch.Tensor | TensorDictBase) -> torch.Tensor:
        space = self.space
        if isinstance(space, spaces.Dict):
            return sum(member(x[k]) for k, member in self.members.items())  # type: ignore[return-value]
        if is_image_space(space):
            return self.net(x)
        shape = space.shape
        lead = x.shape[: x.dim() - len(shape)]
        if isinstance(space, spaces.Box):
            return self.net(self.scale(x).reshape(*lead, -1))
        if isinstance(space, spaces.Discrete):
            return self.net((x.long() - self.start).clamp(0, int(space.n) - 1))
        if isinstance(space, spaces.MultiDiscrete):
            idx = (x.long().reshape(*lead, -1) - self.start) + self.offsets
            return self.net(idx).sum(-2)
        return self.net(x.float().reshape(*lead, -1))


class StepEncoder(nn.Module):
    """The ``x_t`` embedding: TensorDict ``(...)`` with :data:`STEP_INPUT_KEYS` -> ``(..., dim)``.

    ``x_t`` = LayerNorm(E_obs(o_t) + E_act(a_{t-1}) + E_rew(symlog r_{t-1}) + E_init(is_init)
    + E_step(sinusoidal(step_count))). At the first step of an episode ``a_{t-1}`` and ``r_{t-1}``
    are zeros and the episode-start embedding tells them apart from real ones.

    Args:
        observation_space: single-environment observation space.
        action_space: single-environment action space.
        dim: embedding width.
        step_features: number of sinusoidal step-index features.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        dim: int,
        step_features: int = 16,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.step_features = step_features
        self.observation = SpaceEmbedding(observation_space, dim, "observation_space")
        self.prev_action = SpaceEmbedding(action_space, dim, "action_space")
        self.prev_reward = nn.Linear(1, dim)
        self.is_init = nn.Embedding(2, dim)
        self.step = nn.Linear(step_features, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, td: TensorDictBase) -> torch.Tensor:
        return self.embed(
            td["observation"], td["prev_action"], td["prev_reward"], td["is_init"], td["step_count"]
        )

    def embed(
        self,
        observation: torch.Tensor | TensorDictBase,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        is_init: torch.Tensor,
        step_count: torch.Tensor,
    ) -> torch.Tensor:
        """``x_t (..., dim)`` from the step input's fields (the forward's TensorDict members,
        ``(...)`` leading dims each): what an act-time caller uses to skip building a TensorDict."""
        x = (
            self.observation(observation)
            + self.prev_action(prev_action)
            + self.prev_reward(symlog(prev_reward.float()).unsqueeze(-1))
            + self.is_init(is_init.long())
            + self.step(sinusoidal_features(step_count, self.step_features))
        )
        return self.norm(x)
