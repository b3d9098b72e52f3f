"""One agent interface for every algorithm: what the pipeline, evaluation and benchmarks call.

:class:`Agent` is the contract (stable-baselines3 habits); :class:`AgentBase` implements the part
every agent shares: saving and loading through one checkpoint helper, and evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from smt_rl.checkpoint import open_checkpoint, write_checkpoint
from smt_rl.config import config_to_dict

if TYPE_CHECKING:  # the train config is built from the registry, which names agent modules
    from agents.config import TrainConfig

EnvFn = Callable[[], gym.Env]
Logger = Callable[[int, dict[str, float]], None]


class Agent(Protocol):
    """What `smt-rl train`, `smt-rl eval` and the benchmark runner need of an algorithm."""

    kind: ClassVar[str]  # checkpoint kind it writes and reads
    resumes_exactly: ClassVar[bool]  # learn(resume_path=...) continues a killed run exactly
    cfg: TrainConfig
    observation_space: spaces.Space
    action_space: spaces.Space
    num_timesteps: int  # environment steps trained on (all environments summed)
    logger: Logger | None  # receives (num_timesteps, metrics) once per rollout
    data_steps: int  # env steps of logged data it consumed before learning (0: none)
    summary: dict[str, Any]  # figures of its preparation for the run's summary (pretraining's)

    @classmethod
    def check_config(
        cls, cfg: TrainConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        """Refuse settings it cannot run with, before the run writes anything."""
        ...

    @classmethod
    def check_run(cls, cfg: TrainConfig, run_dir: Path) -> None:
        """Check, reading only, that a run of ``cfg`` can start (or continue) in ``run_dir``:
        what :meth:`from_config` or :meth:`learn` would refuse there is refused before the run
        writes anything."""
        ...

    @classmethod
    def from_config(cls, cfg: TrainConfig, env_fn: EnvFn, run_dir: Path, progress: bool) -> Agent:
        """A new agent for a run (doing any preparation it needs, e.g. pretraining)."""
        ...

    def learn(
        self,
        total_timesteps: int,
        progress_bar: bool = True,
        resume_path: str | os.PathLike | None = None,
    ) -> Agent:
        """Train until ``num_timesteps`` reaches ``total_timesteps`` (whole rollouts)."""
        ...

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        reward: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """Actions for one observation or a batch, and the state for the next call."""
        ...

    def save(self, path: str | os.PathLike) -> Path:
        """Write the agent to a checkpoint folder (no pickle)."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike, env_fn: EnvFn | None = None, device: str = "auto"):
        """Rebuild a saved agent; never runs code from the files."""
        ...

    def evaluate(
        self, env_fn: EnvFn, episodes: int, seed: int, deterministic: bool = True
    ) -> dict[str, Any]:
        """Returns and success rate over ``episodes`` fresh episodes."""
        ...


class AgentBase:
    """Saving, loading and evaluation, written once for every agent.

    A subclass sets ``kind``, builds itself in ``__init__`` from ``(cfg, env_fn, device,
    observation_space=..., action_space=...)`` (see :meth:`_restore`), and names what it saves in
    :meth:`saved_module` (and where an SMT memory sits in it, in ``memory_prefix``).
    """

    kind: ClassVar[str]
    resumes_exactly: ClassVar[bool] = False
    memory_prefix: ClassVar[str | None] = None  # where an SMT model sits in saved_module()
    data_steps: int = 0
    summary: dict[str, Any] = {}  # noqa: RUF012 (read-only default; instances replace it)

    @classmethod
    def check_config(
        cls, cfg: TrainConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        """Refuse, before a run writes anything, settings this agent cannot run with on a task
        of these spaces (the base checks nothing more than the config schema did)."""

    @classmethod
    def check_run(cls, cfg: TrainConfig, run_dir: Path) -> None:
        """Nothing to check: an agent without preparation or resume state starts anywhere."""

    @classmethod
    def from_config(
        cls, cfg: TrainConfig, env_fn: EnvFn, run_dir: Path, progress: bool
    ) -> AgentBase:
        """A new agent for a run, built from the config (no preparation)."""
        return cls(cfg, env_fn, cfg.device)

    def saved_module(self) -> nn.Module:
        """Every weight the agent needs to act, as one module."""
        raise NotImplementedError

    def saved_config(self) -> TrainConfig:
        """The config written with the weights (enough to rebuild :meth:`saved_module`)."""
        return self.cfg

    def save(self, path: str | os.PathLike) -> Path:
        """Write the agent: weights as safetensors; config, spaces and steps as JSON."""
        return write_checkpoint(
            path,
            self.saved_module(),
            kind=self.kind,
            config=config_to_dict(self.saved_config()),
            observation_space=self.observation_space,
            action_space=self.action_space,
            memory_prefix=self.memory_prefix,
            num_timesteps=int(self.num_timesteps),
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike, env_fn: EnvFn | None = None, device: str = "auto"
    ) -> AgentBase:
        """Rebuild a saved agent from its config and spaces (no env needed to act; ``env_fn``
        lets it keep learning). Never executes code from the files.

        Raises:
            CheckpointError: missing, corrupt or of another kind, or weights that do not fit.
        """
        from agents.config import TrainConfig

        checkpoint = open_checkpoint(path, kinds=(cls.kind,))
        observation_space, action_space = checkpoint.spaces()
        agent = cls._restore(
            checkpoint.config(TrainConfig), env_fn, device, observation_space, action_space
        )
        checkpoint.load_into(agent.saved_module())
        agent.num_timesteps = checkpoint.num_timesteps
        return agent

    @classmethod
    def _restore(
        cls,
        cfg: TrainConfig,
        env_fn: EnvFn | None,
        device: str | torch.device,
        observation_space: spaces.Space,
        action_space: spaces.Space,
    ) -> AgentBase:
        """An agent with fresh weights of the saved shapes (they are loaded next)."""
        return cls(
            cfg, env_fn, device, observation_space=observation_space, action_space=action_space
        )

    def evaluate(
        self, env_fn: EnvFn, episodes: int, seed: int, deterministic: bool = True
    ) -> dict[str, Any]:
        """:func:`agents.evaluate.evaluate_agent` on this agent."""
        from agents.evaluate import evaluate_agent

        return evaluate_agent(self, env_fn, episodes, seed, deterministic)
