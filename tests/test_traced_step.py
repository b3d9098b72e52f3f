"""The traced act-time step of a frozen memory (smt_rl.integrations.traced_step): the same
memories as the eager step for every cell, observation layout and batch size; a trace that
cannot be made, or that gives other numbers, is refused with a warning and the eager step runs;
new or moved weights drop the traces."""

from __future__ import annotations

import pickle
import warnings

import cloudpickle
import pytest
import torch
from gymnasium import spaces

from smt_rl.integrations import PretrainedMemory
from smt_rl.memory import MemoryRunner, MemoryState
from smt_rl.models import CELLS, StepEncoder
from smt_rl.models.cells import WindowedCell
from smt_rl.spaces import batch_to_tensor, stack_observations

ACTIONS = spaces.Discrete(3)
OBSERVATION_SPACES = {
    "box": spaces.Box(-1.0, 1.0, (4,)),
    "unbounded_box": spaces.Box(-float("inf"), float("inf"), (3,)),
    "nested_dict": spaces.Dict(
        {"pos": spaces.Box(0.0, 1.0, (2,)), "more": spaces.Dict({"tag": spaces.Discrete(5)})}
    ),
    "image": spaces.Box(0, 255, (7, 7, 3), dtype="uint8"),
}
CELL_NAMES = [*CELLS, "windowed"]


def make_memory(cell: str, observation_space: spaces.Space, seed: int = 0) -> PretrainedMemory:
    """An untrained memory of 3 learned tokens x 8 (plus 2 window tokens for ``windowed``)."""
    torch.manual_seed(seed)
    encoder = StepEncoder(observation_space, ACTIONS, 16)
    if cell == "windowed":
        memory_cell = WindowedCell(CELLS["gated"](3, 8, 16, hidden=32), 2, 16)
    else:
        memory_cell = CELLS[cell](3, 8, 16, hidden=32)
    return PretrainedMemory(encoder, memory_cell, observation_space, ACTIONS)


def observations(space: spaces.Space, rows: int, seed: int) -> torch.Tensor:
    space.seed(seed)
    return batch_to_tensor(
        space, stack_observations([space.sample() for _ in range(rows)], space), rows
    )


def run(memory: PretrainedMemory, rows: int, steps: int, eager: bool) -> list[torch.Tensor]:
    """Memories of ``rows`` envs over ``steps`` steps, each env restarting every 7 steps (the
    restarts run eagerly; the other steps traced unless ``eager``)."""
    generator = torch.Generator().manual_seed(1)
    state = memory.initial_state(rows)
    out = []
    for t in range(steps):
        obs = observations(memory.observation_space, rows, seed=t)
        if t % 7 == 0:
            state.memory = memory.advance(obs, state, torch.ones(rows, dtype=torch.bool))
            state.step_count = torch.zeros(rows, dtype=torch.int64)
        elif eager:
            state.memory = MemoryRunner.advance(memory, obs, state)
        else:
            state.memory = memory.advance(obs, state)
        out.append(state.memory)
        state.prev_action = torch.randint(0, 3, (rows,), generator=generator)
        state.prev_reward = torch.randn(rows, generator=generator) * 3
        state.step_count = state.step_count + 1
    return out


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("layout", list(OBSERVATION_SPACES))
def test_traced_memories_equal_the_eager_ones(cell, layout):
    memory = make_memory(cell, OBSERVATION_SPACES[layout])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no refused trace
        for rows in (1, 5):
            traced, eager = run(memory, rows, 16, False), run(memory, rows, 16, True)
            for a, b in zip(traced, eager, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(memory.traced_steps) == 2 and memory.traced_steps.failure is None  # rows 1 and 5
    assert not torch.allclose(traced[1], traced[2])  # the memory moves


def _state(memory: PretrainedMemory, rows: int) -> tuple[torch.Tensor, MemoryState]:
    state = memory.initial_state(rows)
    state.step_count += 3
    return observations(memory.observation_space, rows, seed=0), state


def test_a_trace_that_cannot_be_made_runs_the_eager_step(monkeypatch):
    memory = make_memory("gated", OBSERVATION_SPACES["box"])
    obs, state = _state(memory, 4)
    expected = MemoryRunner.advance(memory, obs, state)

    def broken(*args, **kwargs):
        raise RuntimeError("no tracing here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with pytest.warns(RuntimeWarning, match="runs eagerly.*tracing failed.*no tracing here"):
        got = memory.advance(obs, state)
    assert torch.equal(got, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per batch size, not one per step
        assert torch.equal(memory.advance(obs, state), expected)

    monkeypatch.delattr(torch.jit, "trace")
    memory.traced_steps.clear()
    with pytest.warns(RuntimeWarning, match="no torch.jit.trace"):
        assert torch.equal(memory.advance(obs, state), expected)


def test_a_trace_that_gives_other_numbers_is_refused(monkeypatch):
    memory = make_memory("gated", OBSERVATION_SPACES["box"])
    obs, state = _state(memory, 4)
    real_trace = torch.jit.trace

    def off_by_a_bit(module, inputs, **kwargs):
        traced = real_trace(module, inputs, **kwargs)
        return lambda *args: traced(*args) + 1e-3

    monkeypatch.setattr(torch.jit, "trace", off_by_a_bit)
    with pytest.warns(RuntimeWarning, match="differs from the eager step"):
        got = memory.advance(obs, state)
    assert torch.equal(got, MemoryRunner.advance(memory, obs, state))
    assert "differs" in memory.traced_steps.failure

    def baked(module, inputs, **kwargs):  # the first inputs' answer, whatever comes in
        answer = module(*inputs)
        return lambda *args: answer

    monkeypatch.setattr(torch.jit, "trace", baked)
    memory.traced_steps.clear()
    with pytest.warns(RuntimeWarning, match="differs from the eager step"):
        memory.advance(obs, state)


def test_new_or_moved_weights_drop_the_traces():
    memory = make_memory("gated", OBSERVATION_SPACES["box"])
    other = make_memory("gated", OBSERVATION_SPACES["box"], seed=1)
    obs, state = _state(memory, 4)
    before = memory.advance(obs, state)
    assert len(memory.traced_steps) == 1

    memory.load_state_dict(other.state_dict())
    assert len(memory.traced_steps) == 0
    after = memory.advance(obs, state)
    assert torch.equal(after, MemoryRunner.advance(other, obs, state))
    assert not torch.allclose(before, after)

    memory.to("cpu")
    assert len(memory.traced_steps) == 0
    memory.trace = False
    assert torch.equal(memory.advance(obs, state), after) and len(memory.traced_steps) == 0


def test_a_memory_that_has_run_still_pickles():
    """Subprocess vector envs pickle the wrapped memory; traces are dropped and made again."""
    memory = make_memory("gated", OBSERVATION_SPACES["box"])
    obs, state = _state(memory, 4)
    expected = memory.advance(obs, state)
    assert len(memory.traced_steps) == 1
    for copy in (pickle.loads(pickle.dumps(memory)), cloudpickle.loads(cloudpickle.dumps(memory))):
        assert len(copy.traced_steps) == 0 and copy.traced_steps.step_encoder is copy.step_encoder
        assert torch.equal(copy.advance(obs, state), expected)
        assert len(copy.traced_steps) == 1
