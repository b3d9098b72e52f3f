"""Memory cells: the recurrent student ``m_t = f(m_{t-1}, x_t)``, O(1) time and memory per step.

Every cell holds K memory tokens of width d (``(B, K, d)``, RMS-normalised per token), a learned
initial state ``m_{-1}``, and three methods:

- ``initial_state(batch) -> (B, K, d)``;
- ``step(memory (B, K, d), x (B, D)) -> (B, K, d)``: one transition, differentiable (SMT and DMT
  apply it to many (memory, input) pairs at once, never in a chain);
- ``scan(x (B, T, D), is_init (B, T), memory=None) -> (B, T, K, d)``: the memory after each step
  of a sequence, resetting to the initial state where ``is_init``; runs under ``no_grad``.
"""

from __future__ import annotations

import torch
from torch import nn

from smt_rl.models.common import mlp, rms_normalize


class MemoryCell(nn.Module):
    """Base class: the learned initial state, reset handling and the no-grad scan."""

    def __init__(self, num_tokens: int, token_dim: int, input_dim: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.input_dim = input_dim
        self.initial = nn.Parameter(torch.randn(num_tokens, token_dim))

    @property
    def memory_size(self) -> int:
        """Z = K * d."""
        return self.num_tokens * self.token_dim

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The learned ``m_{-1}``, normalised: ``(B, K, d)``."""
        return rms_normalize(self.initial).expand(batch_size, -1, -1)

    def step(self, memory: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One transition: ``(B, K, d), (B, D) -> (B, K, d)``."""
        raise NotImplementedError

    def reset_where(self, memory: torch.Tensor, is_init: torch.Tensor) -> torch.Tensor:
        """``memory`` (B, K, d) with rows where ``is_init`` (B,) replaced by the initial state."""
        init = self.initial_state(memory.shape[0]).to(memory.dtype)
        return torch.where(is_init.reshape(-1, 1, 1), init, memory)

    @torch.no_grad()
    def scan(
        self, x: torch.Tensor, is_init: torch.Tensor, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Memories after each step: ``x (B, T, D), is_init (B, T) -> (B, T, K, d)``.

        Args:
            memory: ``(B, K, d)`` state before the first step (default: the initial state).
        """
        batch, steps = x.shape[:2]
        if memory is None:
            memory = self.initial_state(batch)
        out = []
        for t in range(steps):
            memory = self.step(self.reset_where(memory, is_init[:, t]), x[:, t])
            out.append(memory)
        return torch.stack(out, 1)


class GatedResidualCell(MemoryCell):
    """Gated residual MLP: ``m_t = rms(m + g * (u - m))`` with ``u, g = MLP([m, x])``."""

    def __init__(self, num_tokens: int, token_dim: int, input_dim: int, hidden: int = 256) -> None:
        super().__init__(num_tokens, token_dim, input_dim)
        z = num_tokens * token_dim
        self.net = mlp([z + input_dim, hidden, hidden, 2 * z])

    def step(self, memory: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat = memory.flatten(1)
        update, gate = self.net(torch.cat([flat, x], -1)).chunk(2, -1)
        new = flat + torch.sigmoid(gate) * (update - flat)
        return rms_normalize(new.view_as(memory))


class TransformerCell(MemoryCell):
    """A small Transformer over the K memory tokens plus ``step_tokens`` tokens made from ``x``.

    The first K outputs, added to the memory, are the new memory.
    """

    def __init__(
        self,
        num_tokens: int,
        token_dim: int,
        input_dim: int,
        hidden: int = 256,
        layers: int = 2,
        heads: int = 4,
        step_tokens: int = 2,
    ) -> None:
        super().__init__(num_tokens, token_dim, input_dim)
        width = max(token_dim, heads * 8)
        self.step_tokens = step_tokens
        self.memory_in = nn.Linear(token_dim, width)
        self.x_in = nn.Linear(input_dim, step_tokens * width)
        self.position = nn.Parameter(torch.zeros(num_tokens + step_tokens, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, hidden, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, token_dim)

    def step(self, memory: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat(
            [self.memory_in(memory), self.x_in(x).view(x.shape[0], self.step_tokens, -1)], 1
        )
        hidden = self.blocks(tokens + self.position)
        return rms_normalize(memory + self.out(hidden[:, : self.num_tokens]))


class GRUMemoryCell(MemoryCell):
    """A GRU cell over the flattened memory (for comparison with the other cells)."""

    def __init__(self, num_tokens: int, token_dim: int, input_dim: int, hidden: int = 256) -> None:
        super().__init__(num_tokens, token_dim, input_dim)
        self.gru = nn.GRUCell(input_dim, num_tokens * token_dim)

    def step(self, memory: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        new = self.gru(x, memory.flatten(1))
        return rms_normalize(new.view_as(memory))


CELLS: dict[str, type[MemoryCell]] = {
    "gated": GatedResidualCell,
    "transformer": TransformerCell,
    "gru": GRUMemoryCell,
}
