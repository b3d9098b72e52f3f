"""The act-time memory step of a frozen memory, traced once per batch size.

A wrapper steps a small memory for a few environments at every environment step. On a CPU that
step is ~50 tiny tensor operations, and their Python and dispatch overhead, not their arithmetic,
sets its cost (PassiveTMaze memory of ``configs/tmaze.yaml``, 8 envs, one thread: ~320 us eager,
~170 us traced; ``benchmarks/sb3_memory_speed.py``). A trace records those operations once and
replays them without the Python in between: the same aten operations on the same weights, so
the same numbers.

Only the common step is traced: no row starts an episode (:func:`smt_rl.memory.continuing_step`).
Steps where an environment restarts run eagerly (they are one in an episode's length).

Why ``torch.jit.trace``: ``torch.compile`` compiles for 10-40 s per batch shape and trips on these
modules (a guard fails on the spaces' numpy integers in torch 2.13), and the module of a
``torch.export`` program runs slower than eager at this size. ``torch.jit`` is deprecated in
torch 2.x: where it is gone, or where a trace does not reproduce the eager numbers on the inputs
it was made from and on perturbed ones, the eager step runs instead (with one warning naming the
reason), so the speed-up can disappear but never change a result.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn

from smt_rl.memory import MemoryState, continuing_step
from smt_rl.models.cells import MemoryCell
from smt_rl.models.common import rms_normalize
from smt_rl.models.step_encoder import StepEncoder

Key = tuple[str, ...]


def observation_leaves(observation: torch.Tensor | TensorDictBase) -> tuple[list[Key] | None, list]:
    """A batch of observations as flat tensors: ``(None, [tensor])`` for a tensor, else the
    TensorDict's leaf keys (tuples, in a fixed order) and its leaves."""
    if isinstance(observation, torch.Tensor):
        return None, [observation]
    keys = sorted(observation.keys(include_nested=True, leaves_only=True), key=_as_tuple)
    return [_as_tuple(k) for k in keys], [observation[k] for k in keys]


def _as_tuple(key: str | Key) -> Key:
    return (key,) if isinstance(key, str) else tuple(key)


def _nest(keys: list[Key], leaves: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Nested dicts from leaf keys and their tensors (what a Dict space's embedding reads)."""
    root: dict[str, Any] = {}
    for key, leaf in zip(keys, leaves, strict=True):
        node = root
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = leaf
    return root


class _ContinuingStep(nn.Module):
    """:func:`continuing_step` with flat tensor arguments (what a trace takes)."""

    def __init__(self, step_encoder: StepEncoder, cell: MemoryCell, keys: list[Key] | None):
        super().__init__()
        self.step_encoder, self.cell, self.keys = step_encoder, cell, keys

    def forward(
        self,
        memory: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        step_count: torch.Tensor,
        *leaves: torch.Tensor,
    ) -> torch.Tensor:
        observation = leaves[0] if self.keys is None else _nest(self.keys, leaves)
        state = MemoryState(memory, prev_action, prev_reward, step_count)
        return continuing_step(self.step_encoder, self.cell, observation, state)


class TracedSteps:
    """Traces of :func:`continuing_step` for one frozen step encoder and cell, one per batch size
    and observation layout, made on first use and checked against the eager step.

    Args:
        step_encoder: the frozen step encoder.
        cell: the frozen memory cell (its weights must not change while traces are kept: call
            :meth:`clear` after changing them, as moving the modules does).
    """

    def __init__(self, step_encoder: StepEncoder, cell: MemoryCell) -> None:
        self.step_encoder, self.cell = step_encoder, cell
        self._traces: dict[tuple, torch.jit.ScriptModule | None] = {}
        self.failure: str | None = None  # why the last trace was refused (None: none was)

    def __len__(self) -> int:
        """The number of batch sizes and layouts seen (traced or refused)."""
        return len(self._traces)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its traces (a trace does not pickle; a copy traces again on use), so
        a memory that has run can still go to subprocess envs."""
        return {**self.__dict__, "_traces": {}}

    def clear(self) -> None:
        """Forget every trace (after the weights moved or changed)."""
        self._traces.clear()

    def __call__(
        self, observation: torch.Tensor | TensorDictBase, state: MemoryState
    ) -> torch.Tensor:
        """``m_t (N, K, d)``: :func:`continuing_step` (no row starts), traced where possible.
        The memory is frozen, so no autograd graph is built either way."""
        keys, leaves = observation_leaves(observation)
        memory = state.memory
        signature = (None if keys is None else tuple(keys), memory.shape[0], memory.device)
        if signature not in self._traces:
            self._traces[signature] = self._trace(keys, state, leaves)
        traced = self._traces[signature]
        if traced is None:
            with torch.no_grad():
                return continuing_step(self.step_encoder, self.cell, observation, state)
        return traced(memory, state.prev_action, state.prev_reward, state.step_count, *leaves)

    @torch.no_grad()
    def _trace(
        self, keys: list[Key] | None, state: MemoryState, leaves: list
    ) -> torch.jit.ScriptModule | None:
        """A trace for this batch size and layout, checked on the inputs it was made from and on
        perturbed ones; None (and one warning) where tracing is unavailable or the trace does not
        give the eager numbers."""
        fields = (state.memory, state.prev_action, state.prev_reward, state.step_count)
        module = _ContinuingStep(self.step_encoder, self.cell, keys)
        trace = getattr(torch.jit, "trace", None)
        if trace is None:
            return self._refuse("this torch has no torch.jit.trace")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # jit's deprecation and tracer warnings
                traced = trace(module, (*fields, *leaves), check_trace=False)
        except Exception as exc:  # any tracing failure means: run eagerly
            return self._refuse(f"tracing failed ({type(exc).__name__}: {exc})")
        for inputs in ((*fields, *leaves), (*_perturbed(fields), *leaves)):
            if not torch.allclose(traced(*inputs), module(*inputs), rtol=1e-5, atol=1e-6):
                return self._refuse("the trace's output differs from the eager step's")
        return traced

    def _refuse(self, reason: str) -> None:
        self.failure = reason
        warnings.warn(
            f"smt_rl: the memory step runs eagerly (slower, same results): {reason}.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


def _perturbed(fields: tuple) -> tuple:
    """Other values of the same shapes: a random unit-RMS memory, the previous reward and step
    count moved (so that a trace that baked in the first inputs' values is caught)."""
    memory, prev_action, prev_reward, step_count = fields
    generator = torch.Generator(device=memory.device).manual_seed(0)
    noise = torch.randn(memory.shape, generator=generator, device=memory.device)
    return (
        rms_normalize(noise).to(memory.dtype),
        prev_action,
        prev_reward * -0.5 + 1.0,
        step_count + 17,
    )
