"""A stable-baselines3 vector-env wrapper that steps a pretrained SMT memory for all envs at once.

The batched twin of :class:`smt_rl.integrations.gym_wrapper.SMTMemoryWrapper`: same observations,
same step inputs, one memory call per vector step instead of one per sub-environment. Wrap the
task's own vector env (its per-env spaces are the memory's) and put observation or reward
normalisation outside::

    venv = make_vec_env("smt_rl/PassiveTMaze-v0", n_envs=8, env_kwargs={"length": 30})
    venv = SMTMemoryVecWrapper(venv, "runs/tm30/checkpoint")  # from smt-rl pretrain
    model = PPO("MultiInputPolicy", venv).learn(4096)
    venv.save("runs/ppo/memory")  # then SMTMemoryVecWrapper.load("runs/ppo/memory", venv2)

Step inputs fed to env i's memory (the ones the SMT agent builds):

- ``reset()``: ``x_0 = (o_0, prev_action=0, prev_reward=0, is_init=True, step_count=0)``;
- ``step(a)`` returning ``o_{t+1}, r_t``: ``x_{t+1} = (o_{t+1}, a_t, r_t, False, t+1)``;
- where env i's episode ends, SB3 resets it and returns the next episode's first observation:
  the memory steps on the terminal observation (``infos[i]["terminal_observation"]`` becomes the
  wrapped terminal observation, for bootstrapping at truncations) and restarts on the new one
  (``is_init=True``, ``step_count=0``), both in the same batched call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from gymnasium.error import ResetNeeded
from stable_baselines3.common.vec_env import (
    VecEnv,
    VecEnvWrapper,
    VecNormalize,
    unwrap_vec_wrapper,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from tensordict import TensorDict

from smt_rl.checkpoint import CheckpointError
from smt_rl.errors import ConfigError
from smt_rl.integrations.memory import PretrainedMemory
from smt_rl.integrations.memory_obs import attach_memory, memory_numpy
from smt_rl.io import atomic_write_json, read_format_json
from smt_rl.memory import MemoryState
from smt_rl.records import Record, check_record
from smt_rl.spaces import batch_to_tensor, stack_observations, unbatch_observations

SETTINGS_FILE = "sb3_memory_wrapper.json"
MEMORY_FOLDER = "memory"
FORMAT = "smt_rl.sb3_memory_wrapper"
SAVE_FIX = "save the wrapper again (wrapper.save(path))."


class WrapperSettings(Record):
    """The fields of ``sb3_memory_wrapper.json``, checked when it is loaded."""

    mode: Literal["dict", "flat"]
    memory_key: str
    observation_key: str


class SMTMemoryVecWrapper(VecEnvWrapper):
    """Observations become ``(observation, memory)`` for every sub-environment; rewards, dones and
    infos pass through (``terminal_observation`` wrapped).

    Args:
        venv: an SB3 vector env (``DummyVecEnv``, ``SubprocVecEnv``, ``make_vec_env(...)``) of the
            task the memory was pretrained on, without ``VecNormalize`` (put it outside).
        memory: a :class:`PretrainedMemory`, or a checkpoint folder loaded with
            :meth:`PretrainedMemory.from_checkpoint` (needed for :meth:`save`).
        mode: ``"dict"`` (for ``MultiInputPolicy``) or ``"flat"`` (for ``MlpPolicy``): as in
            :class:`~smt_rl.integrations.gym_wrapper.SMTMemoryWrapper`.
        memory_key: the key of the memory ``(Z,)`` in dict mode.
        observation_key: the key of the original observation in dict mode (unused when the
            original observation is already a Dict).
        device: where the memory runs when ``memory`` is a path (``"auto"``: CUDA when present).

    Raises:
        ConfigError: ``venv`` is not an SB3 vector env or holds ``VecNormalize``; unknown
            ``mode``; a key clash in dict mode.
        SpaceError: ``venv``'s per-env spaces differ from the memory's, or (flat mode) the
            observation space cannot be flattened.
        smt_rl.checkpoint.CheckpointError: ``memory`` is a path that holds no usable checkpoint.
    """

    def __init__(
        self,
        venv: VecEnv,
        memory: PretrainedMemory | str | os.PathLike,
        mode: str = "dict",
        memory_key: str = "memory",
        observation_key: str = "observation",
        device: str | torch.device = "cpu",
    ) -> None:
        _check_venv(venv)
        keys = (mode, memory_key, observation_key)
        self.memory, self._wrap = attach_memory(venv, memory, *keys, device, "venv")
        self.mode, self.memory_key, self.observation_key = keys
        super().__init__(venv, observation_space=self._wrap.space)
        self._state: MemoryState | None = None  # what the next step input reads; None: no reset
        self._actions: np.ndarray | None = None

    @property
    def memory_state(self) -> torch.Tensor:
        """A copy of the current memories ``m_t``: ``(N, K, d)``, on the memory's device."""
        if self._state is None:
            raise ResetNeeded("SMTMemoryVecWrapper.memory_state: call reset() first.")
        return self._state.memory.clone()

    def reset(self) -> Any:
        """Reset every env and memory; the observations carry ``m_0`` (after ``o_0``)."""
        obs = self.venv.reset()
        mem, n = self.memory, self.num_envs
        self._state = mem.initial_state(n)
        is_init = torch.ones(n, dtype=torch.bool, device=mem.device)
        self._state.memory = mem.advance(self._observations(obs, n), self._state, is_init)
        return self._wrap.batch(obs, memory_numpy(self._state.memory))

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step the envs, then every memory on ``(o_{t+1}, a_t, r_t)`` in one batched call (and
        the restarted envs' memories on their new first observations, in the same call)."""
        if self._state is None or self._actions is None:
            raise ResetNeeded("SMTMemoryVecWrapper.step() called before reset(); call reset().")
        obs, rewards, dones, infos = self.venv.step_wait()
        mem, n, device, state = self.memory, self.num_envs, self.memory.device, self._state
        state.prev_action = batch_to_tensor(mem.action_space, self._actions, n).to(device)
        state.prev_reward = torch.as_tensor(rewards, dtype=torch.float32).reshape(n).to(device)
        state.step_count = state.step_count + 1
        ended = np.flatnonzero(dones)  # the D envs whose episode ended (and restarted)
        if ended.size == 0:  # the common step: no resets to make
            state.memory = mem.advance(self._observations(obs, n), state)
            return self._wrap.batch(obs, memory_numpy(state.memory)), rewards, dones, infos

        # N + D rows: each env's step (on the terminal observation where it ended), then the
        # ended envs' first steps of their new episodes (is_init: the memory restarts there)
        firsts = unbatch_observations(obs, mem.observation_space)
        lasts = list(firsts)
        for i in ended:
            lasts[i] = _terminal_observation(infos[i], i)
        rows = torch.as_tensor(ended, device=device)
        both = MemoryState(**{k: torch.cat([v, v[rows]]) for k, v in vars(state).items()})
        is_init = torch.zeros(n + ended.size, dtype=torch.bool, device=device)
        is_init[n:] = True
        batch = stack_observations(lasts + [firsts[i] for i in ended], mem.observation_space)
        stepped = mem.advance(self._observations(batch, n + ended.size), both, is_init)
        z = memory_numpy(stepped)  # (N + D, Z)
        for j, i in enumerate(ended):
            infos[i]["terminal_observation"] = self._wrap.single(lasts[i], z[i].copy())
            z[i] = z[n + j]
        state.memory = stepped[:n].clone()
        state.memory[rows] = stepped[n:]
        state.step_count[rows] = 0
        return self._wrap.batch(obs, z[:n]), rewards, dones, infos

    def _observations(self, obs: Any, rows: int) -> torch.Tensor | TensorDict:
        """A batch of ``rows`` observations (numpy, as a vector env returns it) on the memory's
        device."""
        return batch_to_tensor(self.memory.observation_space, obs, rows).to(self.memory.device)

    # -------------------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder ``path``: ``memory/`` (a copy of the memory's checkpoint: JSON and
        safetensors) and ``sb3_memory_wrapper.json`` (mode and keys), written last.

        Raises:
            smt_rl.checkpoint.CheckpointError: the memory was not loaded from a checkpoint
                folder, or that folder changed since.
        """
        path = Path(path)
        self.memory.save(path / MEMORY_FOLDER)
        settings = {
            "format": FORMAT,
            "mode": self.mode,
            "memory_key": self.memory_key,
            "observation_key": self.observation_key,
        }
        atomic_write_json(path / SETTINGS_FILE, settings)
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, venv: VecEnv, device: str | torch.device = "cpu"
    ) -> SMTMemoryVecWrapper:
        """Rebuild a wrapper written by :meth:`save` around ``venv`` (reads JSON and safetensors
        only; never runs code from the folder).

        Raises:
            smt_rl.checkpoint.CheckpointError: ``path`` is not a saved wrapper, or a file in it
                is corrupt or incomplete (named).
            SpaceError, ConfigError: as the constructor, for ``venv``.
        """
        path = Path(path)
        settings_path = path / SETTINGS_FILE
        if not settings_path.is_file():
            raise CheckpointError(
                f"{str(path)!r} is not a saved SMTMemoryVecWrapper: it needs {SETTINGS_FILE} and "
                f"{MEMORY_FOLDER}/ (written by wrapper.save(path)); check the path."
            )
        fix = f"it was edited or damaged; {SAVE_FIX}"
        settings = read_format_json(
            settings_path, FORMAT, CheckpointError, "SMTMemoryVecWrapper settings file", SAVE_FIX
        )
        check_record(WrapperSettings, settings, settings_path, CheckpointError, fix)
        memory = PretrainedMemory.from_checkpoint(path / MEMORY_FOLDER, device)
        keys = {k: settings[k] for k in ("mode", "memory_key", "observation_key")}
        return cls(venv, memory, **keys)


def _check_venv(venv: Any) -> None:
    """Raise :class:`ConfigError` unless ``venv`` is an SB3 vector env without ``VecNormalize``."""
    if not isinstance(venv, VecEnv):
        raise ConfigError(
            f"venv: {type(venv).__name__} is not a stable-baselines3 VecEnv; build one with "
            "make_vec_env(...) or DummyVecEnv([...]), or wrap a single gymnasium env with "
            "SMTMemoryWrapper."
        )
    if unwrap_vec_wrapper(venv, VecNormalize) is not None:
        raise ConfigError(
            "venv holds VecNormalize: the memory must read the task's own observations and "
            "rewards, as it was pretrained; put VecNormalize outside: "
            "VecNormalize(SMTMemoryVecWrapper(venv, memory))."
        )


def _terminal_observation(info: dict[str, Any], index: int) -> Any:
    """The last observation of env ``index``'s ended episode, which SB3's auto-reset put in
    ``info``."""
    if "terminal_observation" not in info:
        raise ConfigError(
            f"infos[{index}] has no 'terminal_observation' although env {index} is done: the "
            "wrapped VecEnv must reset ended envs itself as SB3's DummyVecEnv and SubprocVecEnv "
            "do; wrap one of them."
        )
    return info["terminal_observation"]
