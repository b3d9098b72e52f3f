"""A gymnasium wrapper that appends a pretrained SMT memory to every observation.

With it any feed-forward learner (stable-baselines3's PPO, A2C, DQN, ...) becomes memory-capable
without recurrent code: the wrapper runs the frozen memory ``m_t = f(m_{t-1}, x_t)`` one step per
environment step and hands the policy ``(o_t, m_t)``. Each wrapped env keeps its own memory state,
so it works under any vector env (e.g. ``make_vec_env(..., wrapper_class=SMTMemoryWrapper,
wrapper_kwargs={"memory": ckpt})``); :class:`smt_rl.integrations.sb3_vec.SMTMemoryVecWrapper`
gives the same observations from one batched memory call per vector step::

    env = gymnasium.make("smt_rl/PassiveTMaze-v0", length=30)
    env = SMTMemoryWrapper(env, "runs/tm30/checkpoint")  # from smt-rl pretrain
    PPO("MultiInputPolicy", env).learn(4096)

Step inputs fed to the memory (the ones the SMT agent builds):

- ``reset()``: ``x_0 = (o_0, prev_action=0, prev_reward=0, is_init=True, step_count=0)``;
- ``step(a_t)`` returning ``o_{t+1}, r_t``: ``x_{t+1} = (o_{t+1}, a_t, r_t, False, t+1)``.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.error import ResetNeeded

from smt_rl.integrations.memory import PretrainedMemory
from smt_rl.integrations.memory_obs import attach_memory, memory_numpy
from smt_rl.memory import MemoryState
from smt_rl.spaces import batch_to_tensor, stack_observations


class SMTMemoryWrapper(gym.Wrapper):
    """Observations become ``(observation, memory)``; rewards, terminations and infos pass through.

    Args:
        env: the single (not vectorised) environment; its observation and action spaces must be
            the ones the memory was pretrained on.
        memory: a :class:`PretrainedMemory`, or a checkpoint folder (a pretraining checkpoint,
            ``RUN_DIR/pretrain/checkpoint`` or ``RUN_DIR/checkpoint``, or an SMT agent's) loaded
            with :meth:`PretrainedMemory.from_checkpoint`. One module may be shared by many
            wrappers: it holds no per-episode state.
        mode: ``"dict"``: a ``Dict`` observation ``{observation_key: o_t, memory_key: m_t}`` (a Dict
            observation keeps its members and gains ``memory_key``), for SB3's
            ``MultiInputPolicy``; ``"flat"``: one float32 vector ``concat(flatten(o_t), m_t)``, for
            ``MlpPolicy`` and algorithms that take a ``Box`` only.
        memory_key: the key of the memory ``(Z,)`` in dict mode.
        observation_key: the key of the original observation in dict mode (unused when the
            original observation is already a Dict).
        device: where the memory runs when ``memory`` is a path (``"auto"``: CUDA when present).
            A given :class:`PretrainedMemory` runs where it is (move it with ``.to()``).

    Raises:
        SpaceError: the env's spaces differ from the memory's, or (flat mode) the observation
            space cannot be flattened.
        ConfigError: unknown ``mode`` or a key clash in dict mode.
        smt_rl.checkpoint.CheckpointError: ``memory`` is a path that holds no usable checkpoint.
    """

    def __init__(
        self,
        env: gym.Env,
        memory: PretrainedMemory | str | os.PathLike,
        mode: str = "dict",
        memory_key: str = "memory",
        observation_key: str = "observation",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(env)
        keys = (mode, memory_key, observation_key)
        self.memory, self._wrap = attach_memory(env, memory, *keys, device)
        self.mode, self.memory_key, self.observation_key = keys
        self.observation_space = self._wrap.space
        self._state: MemoryState | None = None  # what the next step input reads; None: no reset

    @property
    def memory_state(self) -> torch.Tensor:
        """A copy of the current memory ``m_t``: ``(K, d)``, on the memory's device."""
        if self._state is None:
            raise ResetNeeded("SMTMemoryWrapper.memory_state: call reset() first.")
        return self._state.memory[0].clone()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env and the memory; the observation carries ``m_0`` (after ``o_0``)."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._state = self.memory.initial_state(1)
        self._advance(obs, is_init=True)
        return self._augment(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """Step the env, then the memory on ``(o_{t+1}, a_t, r_t)``."""
        if self._state is None:
            raise ResetNeeded("SMTMemoryWrapper.step() called before reset(); call reset() first.")
        obs, reward, terminated, truncated, info = self.env.step(action)
        state, space = self._state, self.memory.action_space
        state.prev_action = batch_to_tensor(space, np.asarray(action), 1).to(state.memory.device)
        state.prev_reward = torch.tensor([float(reward)], device=state.memory.device)
        state.step_count = state.step_count + 1
        self._advance(obs, is_init=False)
        return self._augment(obs), reward, terminated, truncated, info

    # ------------------------------------------------------------------ internals
    def _advance(self, obs: Any, is_init: bool) -> None:
        """``m_t = f(m_{t-1}, x_t)`` for the observation ``o_t`` read after the current state."""
        mem, state = self.memory, self._state
        space = mem.observation_space
        observation = batch_to_tensor(space, stack_observations([obs], space), 1).to(mem.device)
        starts = torch.ones(1, dtype=torch.bool, device=mem.device) if is_init else None
        state.memory = mem.advance(observation, state, starts)

    def _augment(self, obs: Any) -> Any:
        """The wrapped observation: ``obs`` with ``m_t`` as a float32 ``(Z,)`` vector."""
        return self._wrap.single(obs, memory_numpy(self._state.memory)[0])
