"""The memory at act time: step inputs ``x_t`` and the recurrence ``m_t = f(m_{t-1}, x_t)``.

One step-input builder and one runner serve every place that steps a memory: the SMT agent, the
gymnasium wrapper and the torchrl module.

- :func:`step_inputs` assembles the step-input TensorDict from its fields. Where an episode
  starts (``is_init``) the previous action, previous reward and step index are zeroed, whatever
  the caller left there: a fresh episode looks the same however it was reached.
- :class:`MemoryState` is what a memory carries from one step to the next for N environments.
- :class:`MemoryRunner` holds the step encoder and the memory cell and steps or scans them
  without gradients (training goes through the cell directly, never through this runner).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase
from torch import nn

from smt_rl.models.cells import MemoryCell
from smt_rl.models.step_encoder import StepEncoder
from smt_rl.spaces import torch_dtype


def zero_where(mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value (*B, ...)`` with the rows where ``mask (*B,)`` is True set to zero."""
    mask = mask.reshape(*mask.shape, *([1] * (value.dim() - mask.dim())))
    return torch.where(mask, torch.zeros_like(value), value)


def step_inputs(
    observation: torch.Tensor | TensorDictBase,
    prev_action: torch.Tensor,
    prev_reward: torch.Tensor,
    step_count: torch.Tensor,
    is_init: torch.Tensor,
) -> TensorDict:
    """The step input ``x_t``'s fields as a TensorDict of batch shape ``is_init.shape`` (``*B``).

    Args:
        observation: ``o_t`` ``(*B, *o)`` (a TensorDict for Dict spaces).
        prev_action: ``a_{t-1}`` ``(*B, *a)``.
        prev_reward: ``r_{t-1}`` ``(*B,)``.
        step_count: ``t`` ``(*B,)``, the step index within the episode.
        is_init: ``(*B,)`` bool, True where ``o_t`` starts an episode; there ``a_{t-1}``,
            ``r_{t-1}`` and ``t`` are zeroed.
    """
    is_init = is_init.bool()
    return TensorDict(
        {
            "observation": observation,
            "prev_action": zero_where(is_init, prev_action),
            "prev_reward": zero_where(is_init, prev_reward.float()),
            "step_count": zero_where(is_init, step_count.long()),
            "is_init": is_init,
        },
        batch_size=is_init.shape,
    )


@dataclass
class MemoryState:
    """What a memory carries between steps for N environments (``predict``'s ``state``)."""

    memory: torch.Tensor  # (N, K, d) m_{t-1}
    prev_action: torch.Tensor  # (N, *a) a_{t-1}
    prev_reward: torch.Tensor  # (N,) r_{t-1}
    step_count: torch.Tensor  # (N,) t, the step index of the next observation

    def to_dict(self) -> dict[str, torch.Tensor]:
        """The fields as CPU tensors (for resume states)."""
        return {f.name: getattr(self, f.name).cpu() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, torch.Tensor], device: torch.device) -> MemoryState:
        return cls(**{f.name: data[f.name].to(device) for f in fields(cls)})


def continuing_step(
    step_encoder: StepEncoder,
    cell: MemoryCell,
    observation: torch.Tensor | TensorDictBase | dict,
    state: MemoryState,
) -> torch.Tensor:
    """``m_t (N, K, d)`` for observations ``o_t (N, *o)`` read after ``state`` where no row starts
    an episode (so nothing is reset or zeroed): :meth:`MemoryRunner.advance`'s common step, also
    what :mod:`smt_rl.integrations.traced_step` traces."""
    no_start = torch.zeros_like(state.prev_reward, dtype=torch.bool)
    rest = (state.prev_action, state.prev_reward, no_start, state.step_count)
    return cell.step(state.memory, step_encoder.embed(observation, *rest))


class MemoryRunner(nn.Module):
    """The step encoder and the memory cell, stepped or scanned without gradients.

    Args:
        step_encoder: embeds a step-input TensorDict ``(*B,)`` into ``x_t`` ``(*B, D)``.
        cell: the memory cell ``f``.
        observation_space: single-environment observation space the encoder was built for.
        action_space: single-environment action space the encoder was built for.
    """

    def __init__(
        self,
        step_encoder: StepEncoder,
        cell: MemoryCell,
        observation_space: spaces.Space,
        action_space: spaces.Space,
    ) -> None:
        super().__init__()
        self.step_encoder, self.cell = step_encoder, cell
        self.observation_space, self.action_space = observation_space, action_space

    @property
    def memory_shape(self) -> tuple[int, int]:
        """``(K, d)``: memory tokens and their width."""
        return self.cell.num_tokens, self.cell.token_dim

    @property
    def memory_size(self) -> int:
        """``Z = K * d``: the flattened memory's width."""
        return self.cell.memory_size

    @property
    def device(self) -> torch.device:
        return self.cell.initial.device

    def initial_state(self, num_envs: int) -> MemoryState:
        """The state before any step: the learned ``m_{-1}``, zero action, reward and index."""
        device = self.device
        return MemoryState(
            memory=self.cell.initial_state(num_envs).detach().clone(),
            prev_action=torch.zeros(
                num_envs,
                *self.action_space.shape,
                dtype=torch_dtype(self.action_space),
                device=device,
            ),
            prev_reward=torch.zeros(num_envs, device=device),
            step_count=torch.zeros(num_envs, dtype=torch.int64, device=device),
        )

    def inputs(
        self,
        observation: torch.Tensor | TensorDictBase,
        state: MemoryState,
        is_init: torch.Tensor,
    ) -> TensorDict:
        """The step inputs ``(N,)`` for observations ``o_t`` read after ``state``."""
        return step_inputs(
            observation, state.prev_action, state.prev_reward, state.step_count, is_init
        )

    @torch.no_grad()
    def transition(
        self, inputs: TensorDictBase, memory: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One transition for N environments, on step inputs built by :func:`step_inputs`.

        Args:
            inputs: step inputs ``(N,)``.
            memory: ``(N, K, d)`` ``m_{t-1}`` (ignored where ``is_init``; None: every row starts).

        Returns:
            ``x_t (N, D)``, ``m_{t-1}`` after the resets ``(N, K, d)``, ``m_t (N, K, d)``.
        """
        x = self.step_encoder(inputs)
        if memory is None:
            prev = self.cell.initial_state(x.shape[0])
        else:
            prev = self.cell.reset_where(memory, inputs["is_init"])
        return x, prev, self.cell.step(prev, x)

    @torch.no_grad()
    def advance(
        self,
        observation: torch.Tensor | TensorDictBase,
        state: MemoryState,
        is_init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``m_t (N, K, d)`` for observations ``o_t (N, *o)`` read after ``state`` (its memory is
        ``m_{t-1}``; its previous action, reward and step count are those of ``o_t``): the act-time
        path of the wrappers, the same numbers as :meth:`step`; its common step (no row starts)
        builds no TensorDict.

        Args:
            is_init: ``(N,)`` bool, where ``o_t`` starts an episode (there the memory restarts and
                the previous action, reward and step count are zeroed); None: no row starts, which
                skips the resets (a vector step where no environment ended).
        """
        if is_init is None:
            return continuing_step(self.step_encoder, self.cell, observation, state)
        return self.transition(self.inputs(observation, state, is_init), state.memory)[2]

    def step(self, inputs: TensorDictBase, memory: torch.Tensor | None = None) -> torch.Tensor:
        """``m_t (N, K, d)`` after step inputs ``(N,)`` given in any form (the previous action,
        reward and step index are zeroed where ``is_init`` first); ``memory`` as in
        :meth:`transition`."""
        return self.transition(_clean(inputs), memory)[2]

    @torch.no_grad()
    def scan(self, inputs: TensorDictBase, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Memories after each step of B sequences ``(B, T)``, resetting where ``is_init``.

        Args:
            inputs: step inputs ``(B, T)`` in any form (cleaned as in :meth:`step`).
            memory: ``(B, K, d)`` state before the first step (None: the initial state).

        Returns:
            ``(B, T, K, d)``.
        """
        inputs = _clean(inputs)
        return self.cell.scan(self.step_encoder(inputs), inputs["is_init"], memory)


def _clean(inputs: TensorDictBase) -> TensorDict:
    """``inputs`` rebuilt by :func:`step_inputs` (zeros where an episode starts)."""
    return step_inputs(
        inputs["observation"],
        inputs["prev_action"],
        inputs["prev_reward"],
        inputs["step_count"],
        inputs["is_init"],
    )
