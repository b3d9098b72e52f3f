"""Small shared functions: memory normalisation, symlog, feature scaling."""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import nn


def rms_normalize(memory: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale each memory token (last dim) to unit root-mean-square: ``(..., K, d)`` in and out."""
    return memory * torch.rsqrt(memory.pow(2).mean(-1, keepdim=True) + eps)


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: compresses large magnitudes, keeps small ones linear."""
    return torch.sign(x) * torch.log1p(x.abs())


@functools.cache
def _frequencies(half: int, max_period: float, device: torch.device) -> torch.Tensor:
    """``(half,)`` geometric frequencies from 1 down to ``1 / max_period`` (computed once)."""
    steps = torch.arange(half, device=device, dtype=torch.float32) / half
    return torch.exp(-math.log(max_period) * steps)


def sinusoidal_features(index: torch.Tensor, num_features: int, max_period: float = 4096.0):
    """Integer positions ``(...,)`` -> sin/cos features ``(..., num_features)``."""
    freqs = _frequencies(num_features // 2, max_period, index.device)
    angles = index.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], -1)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
