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

    def transition_parameters(self) -> list[nn.Parameter]:
        """What DMT trains: the parameters of the transition and the initial state."""
        return list(self.parameters())

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


class WindowedCell(MemoryCell):
    """A memory whose first ``window`` tokens hold the last ``window`` steps exactly: token i is
    the projection of ``x_{t-i}`` (a FIFO, shifted by one slot per step, nothing learned to keep
    it), and whose other tokens are an ordinary learned cell's.

    What a task asks to repeat a few steps later then needs no learned shift that loses a little at
    every step; the teacher's labels of these tokens are built the same way (:meth:`labels`), so
    the student reproduces them exactly.

    Args:
        inner: the cell of the learned tokens (``(N, K - window, d)``).
        window: W, the steps kept exactly.
        input_dim: D, the width of ``x_t``.
    """

    def __init__(self, inner: MemoryCell, window: int, input_dim: int) -> None:
        nn.Module.__init__(self)
        self.inner, self.window = inner, window
        self.token_dim, self.input_dim = inner.token_dim, input_dim
        self.num_tokens = window + inner.num_tokens
        self.project = nn.Linear(input_dim, inner.token_dim)
        self.window_initial = nn.Parameter(torch.randn(window, inner.token_dim))

    @property
    def initial(self) -> torch.Tensor:
        """The learned initial tokens, window first: ``(K, d)``."""
        return torch.cat([self.window_initial, self.inner.initial], 0)

    def transition_parameters(self) -> list[nn.Parameter]:
        """The learned cell's only: the window is shared with the teacher's labels, which DMT
        holds fixed (an update of it would move its own targets)."""
        return self.inner.transition_parameters()

    def initial_state(self, batch_size: int) -> torch.Tensor:
        window = rms_normalize(self.window_initial).expand(batch_size, -1, -1)
        return torch.cat([window, self.inner.initial_state(batch_size)], 1)

    def token(self, x: torch.Tensor) -> torch.Tensor:
        """The window token of step inputs ``x (..., D)``: ``(..., d)``."""
        return rms_normalize(self.project(x).unsqueeze(-2)).squeeze(-2)

    def step(self, memory: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        fifo = torch.cat([self.token(x).unsqueeze(1), memory[:, : self.window - 1]], 1)
        learned = self.inner.step(memory[:, self.window :], x)
        return torch.cat([fifo, learned], 1)

    def labels(
        self,
        x: torch.Tensor,
        boundary: torch.Tensor,
        before: torch.Tensor | None = None,
        continues: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The window tokens a student reset at each episode start holds after every step of
        ``x (B, T, D)``: ``(B, T, W, d)``. ``boundary (B, T)``: True where an episode (or the
        window, when it starts mid-episode) begins; before it, the learned initial tokens, or
        ``before (B, W, d)`` (the window tokens before the first step) where ``continues (B, T)``
        (the step's episode began before the first step)."""
        batch, steps = boundary.shape
        boundary = boundary.clone()
        boundary[:, 0] = True
        index = torch.arange(steps, device=x.device).expand(batch, -1)
        start = torch.cummax(torch.where(boundary, index, torch.zeros_like(index)), 1).values
        since = index - start  # steps since the episode began (0 at its first step)
        tokens = self.token(x)  # (B, T, d)
        initial = rms_normalize(self.window_initial)  # (W, d)
        slots = []
        for i in range(self.window):
            shifted = torch.cat([tokens[:, :1].expand(-1, i, -1), tokens[:, : steps - i]], 1)
            older = (i - since - 1).clamp(0, self.window - 1)  # (B, T): the slot it came from
            fill = initial[older]  # (B, T, d)
            if before is not None and continues is not None:
                carried = torch.gather(before, 1, older[..., None].expand(-1, -1, before.shape[-1]))
                fill = torch.where(continues[..., None], carried.to(fill.dtype), fill)
            slots.append(torch.where((since >= i).unsqueeze(-1), shifted, fill))
        return torch.stack(slots, 2)


CELLS: dict[str, type[MemoryCell]] = {
    "gated": GatedResidualCell,
    "transformer": TransformerCell,
    "gru": GRUMemoryCell,
}
