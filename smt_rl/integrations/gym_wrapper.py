"""A gymnasium wrapper that appends a pretrained SMT memory to every observation.

With it any feed-forward learner (stable-baselines3's PPO, A2C, DQN, ...) becomes memory-capable
without recurrent code: the wrapper runs the frozen memory ``m_t = f(m_{t-1}, x_t)`` one step per
environment step and hands the policy ``(o_t, m_t)``. Each wrapped env keeps its own memory state,
so it works under any vector env (e.g. ``make_vec_env(..., wrapper_class=SMTMemoryWrapper,
wrapper_kwargs={"memory": ckpt})``)::

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
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from smt_rl.errors import ConfigError, SpaceError
from smt_rl.integrations.memory import PretrainedMemory
from smt_rl.memory import MemoryState
from smt_rl.spaces import batch_to_tensor, check_space, space_to_dict, stack_observations

MODES = ("dict", "flat")


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
        if mode not in MODES:
            raise ConfigError(f"mode: {mode!r} is not a mode; use mode='dict' or mode='flat'.")
        if not isinstance(memory, PretrainedMemory):
            memory = PretrainedMemory.from_checkpoint(memory, device)
        _check_same_spaces(env, memory)
        self.memory = memory
        self.mode, self.memory_key, self.observation_key = mode, memory_key, observation_key
        memory_box = spaces.Box(-np.inf, np.inf, (memory.memory_size,), np.float32)
        if mode == "dict":
            self.observation_space = _dict_space(
                env.observation_space, memory_box, memory_key, observation_key
            )
        else:
            self.observation_space = _flat_space(env.observation_space, memory_box)
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
        observation = batch_to_tensor(space, stack_observations([obs], space), 1)
        is_init_t = torch.tensor([is_init], device=mem.device)
        inputs = mem.inputs(observation.to(mem.device), state, is_init_t)
        state.memory = mem.transition(inputs, state.memory)[2]

    def _augment(self, obs: Any) -> Any:
        """The wrapped observation: ``obs`` with ``m_t`` as a float32 ``(Z,)`` vector."""
        z = self._state.memory.reshape(-1).cpu().numpy().astype(np.float32)
        if self.mode == "flat":
            flat = spaces.flatten(self.env.observation_space, obs)
            return np.concatenate([np.asarray(flat, dtype=np.float32), z])
        if isinstance(self.env.observation_space, spaces.Dict):
            return {**obs, self.memory_key: z}
        return {self.observation_key: obs, self.memory_key: z}


def _check_same_spaces(env: gym.Env, memory: PretrainedMemory) -> None:
    """Raise :class:`SpaceError` when ``env``'s spaces are not the ones ``memory`` was built for."""
    for field in ("observation_space", "action_space"):
        env_space, mem_space = getattr(env, field), getattr(memory, field)
        check_space(env_space, f"env.{field}")
        if space_to_dict(env_space) != space_to_dict(mem_space):
            raise SpaceError(
                f"env.{field} is {env_space} but the memory's checkpoint was trained on a task "
                f"with {field} {mem_space}: it was pretrained on another task. Wrap the env the "
                "checkpoint was pretrained on, or pretrain a memory on this env "
                "(smt-rl pretrain CONFIG env.id=...)."
            )


def _dict_space(
    original: spaces.Space, memory_box: spaces.Box, memory_key: str, observation_key: str
) -> spaces.Dict:
    """Dict mode: ``{observation_key: original, memory_key: memory_box}``, or a Dict's members
    plus ``memory_key``."""
    if isinstance(original, spaces.Dict):
        if memory_key in original.spaces:
            raise ConfigError(
                f"memory_key: {memory_key!r} is already a member of the Dict observation "
                f"(members: {list(original.spaces)}); pass another memory_key."
            )
        return spaces.Dict({**original.spaces, memory_key: memory_box})
    if memory_key == observation_key:
        raise ConfigError(
            f"memory_key and observation_key are both {memory_key!r}; give them different names."
        )
    return spaces.Dict({observation_key: original, memory_key: memory_box})


def _flat_space(original: spaces.Space, memory_box: spaces.Box) -> spaces.Box:
    """Flat mode: ``Box`` over ``concat(flatten(original), memory)`` (float32)."""
    try:
        flat = spaces.flatten_space(original)
    except NotImplementedError:
        flat = None
    if not isinstance(flat, spaces.Box):
        raise SpaceError(
            f"env.observation_space: {original} cannot be flattened into a Box; use mode='dict'."
        )
    low = np.concatenate([flat.low.astype(np.float32), memory_box.low])
    high = np.concatenate([flat.high.astype(np.float32), memory_box.high])
    return spaces.Box(low, high, dtype=np.float32)
