"""stable-baselines3 baselines: memoryless ``PPO`` (``algo: ppo``) and sb3-contrib's LSTM
``RecurrentPPO`` (``algo: recurrent_ppo``), behind the agent surface of
:mod:`agents.baselines` (the one :class:`agents.smt_ppo.SMTPPO` offers). sb3-contrib is the
optional extra ``smt-rl[baselines]``, imported only when a RecurrentPPO agent is built.

Observations: SB3's Mlp policies read one flat vector, so every environment made by ``env_fn`` is
wrapped once more: an observation that is not already a 1-D float32 ``Box`` becomes a flat float32
vector (``gymnasium.spaces.flatten``: Discrete / MultiDiscrete parts one-hot, Box and MultiBinary
parts as they are, Dict members concatenated in key order; uint8 images become floats unscaled).
Nothing else changes, so the baselines train on the same task as the SMT agent. Note that they
see the observation only: unlike the SMT agent's step encoder, they are not given the previous
action and reward (RecurrentPPO's LSTM must remember what it needs from observations alone).

Checkpoints hold the SB3 policy's weights as safetensors plus a JSON description (config, the
original spaces, steps): no pickle. A loaded agent rebuilds the policy from the config and spaces,
so it predicts without an environment; it can keep learning only when given ``env_fn``.
"""

from __future__ import annotations

import functools
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import ConstantSchedule
from stable_baselines3.common.vec_env import DummyVecEnv
from tqdm.auto import tqdm

from agents.base import AgentBase
from agents.baselines.config import RecurrentPPOConfig, SB3PPOConfig
from agents.config import TrainConfig
from smt_rl.device import resolve_device
from smt_rl.errors import SpaceError
from smt_rl.extras import require
from smt_rl.spaces import (
    check_space,
    is_single_observation,
    unbatch_observations,
)

STATS_WINDOW = 100  # finished episodes averaged in rollout/return_mean and rollout/success_rate

# SB3 train metric -> (our name, sign): the names SMTPPO logs, so runs compare key by key
_TRAIN_METRICS = {
    "train/policy_gradient_loss": ("ppo/policy_loss", 1.0),
    "train/value_loss": ("ppo/value_loss", 1.0),
    "train/entropy_loss": ("ppo/entropy", -1.0),  # SB3 logs the entropy loss, -entropy
    "train/approx_kl": ("ppo/approx_kl", 1.0),
    "train/clip_fraction": ("ppo/clip_fraction", 1.0),
    "train/explained_variance": ("ppo/explained_variance", 1.0),
    "train/learning_rate": ("ppo/lr", 1.0),
}


# ---------------------------------------------------------------------------- observations
def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise :class:`SpaceError` (a ValueError) naming the field when SB3 cannot use a space."""
    check_space(observation_space, "observation_space")
    check_space(action_space, "action_space")
    if isinstance(action_space, spaces.Dict):
        raise SpaceError(
            f"action_space: the SB3 baselines take Box, Discrete, MultiDiscrete or MultiBinary "
            f"actions, got {action_space}; combine the parts into one MultiDiscrete (or Box) "
            "with a gymnasium ActionWrapper, or use algo: smt_ppo."
        )


def needs_flattening(space: spaces.Space) -> bool:
    """False only for what SB3's Mlp policies read as is: a 1-D float32 ``Box``."""
    return not (
        isinstance(space, spaces.Box) and len(space.shape) == 1 and space.dtype == np.float32
    )


def flat_space(space: spaces.Space) -> spaces.Box:
    """The float32 ``Box (D,)`` that :func:`flatten_batch` maps ``space``'s samples into."""
    flat = spaces.flatten_space(space)
    return spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32)


class FlatFloatObservation(gym.ObservationWrapper):
    """``gymnasium.wrappers.FlattenObservation`` that also casts to float32 (integer and uint8
    image parts included), so SB3's Mlp policies get one ``Box (D,) float32``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.original_space = env.observation_space
        self.observation_space = flat_space(self.original_space)

    def observation(self, observation: Any) -> np.ndarray:
        """``(D,)`` float32."""
        return spaces.flatten(self.original_space, observation).astype(np.float32)


def flatten_batch(space: spaces.Space, items: list[Any]) -> np.ndarray:
    """``(N, D)`` float32 from N single observations of ``space``, as the env wrapper does it."""
    return np.stack([spaces.flatten(space, item) for item in items]).astype(np.float32)


class AnnealedLR:
    """Learning rate decayed linearly to 0 at the end of training, as SMTPPO does: the update
    after rollout k of R uses ``lr * (1 - (k - 1) / R)``. (SB3 computes its schedules after the
    rollout, so a plain linear schedule would give the last update ``lr = 0``; ``rollout_fraction``,
    one rollout's share of the step count this ``learn`` call ends at, shifts it back.)"""

    def __init__(self, lr: float) -> None:
        self.lr, self.rollout_fraction = lr, 0.0

    def __call__(self, progress_remaining: float) -> float:
        return self.lr * min(1.0, progress_remaining + self.rollout_fraction)


def _prepare_env(env: gym.Env) -> gym.Env:
    """The env as SB3 trains on it: flat float observations, episode stats from ``Monitor``."""
    if needs_flattening(env.observation_space):
        env = FlatFloatObservation(env)
    return Monitor(env)


# ---------------------------------------------------------------------------- logging callback
class _RolloutMetrics(BaseCallback):
    """Hands one metrics dict per rollout to ``agent.logger`` and drives a tqdm bar.

    SB3 runs ``train()`` after the rollout callbacks, so a rollout's line is sent when the next
    rollout starts (or training ends), once the train metrics of its update can be read.
    """

    def __init__(self, agent: _SB3Agent, total: int, progress_bar: bool) -> None:
        super().__init__()
        self.agent = agent
        self.returns: deque[float] = deque(maxlen=STATS_WINDOW)
        self.successes: deque[float] = deque(maxlen=STATS_WINDOW)
        self.pending = False
        self.bar = tqdm(total=total, disable=not progress_bar, desc="train", unit="step")
        self.started, self.first_step = time.perf_counter(), 0

    def _on_training_start(self) -> None:
        self.started, self.first_step = time.perf_counter(), self.model.num_timesteps

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                if "episode" in info:  # Monitor's episode summary
                    self.returns.append(float(info["episode"]["r"]))
                if "success" in info:
                    self.successes.append(float(bool(info["success"])))
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        self.pending = True

    def _on_rollout_start(self) -> None:
        if self.pending:
            self._emit()

    def _on_training_end(self) -> None:
        if self.pending:
            self._emit()
        self.bar.close()

    def _emit(self) -> None:
        self.pending = False
        steps = self.model.num_timesteps
        metrics = {
            "rollout/return_mean": float(np.mean(self.returns)) if self.returns else float("nan"),
            "time/steps_per_s": (steps - self.first_step) / (time.perf_counter() - self.started),
        }
        if self.successes:
            metrics["rollout/success_rate"] = float(np.mean(self.successes))
        recorded = self.model.logger.name_to_value
        for key, (name, sign) in _TRAIN_METRICS.items():
            if key in recorded:
                metrics[name] = sign * float(recorded[key])
        self.bar.set_postfix(ret=f"{metrics['rollout/return_mean']:.3f}", refresh=False)
        if self.agent.logger is not None:
            self.agent.logger(steps, metrics)


# ---------------------------------------------------------------------------- agents
class _SB3Agent(AgentBase):
    """Shared body of the SB3 agents; subclasses name the algorithm, policy and config section.

    Args:
        cfg: the train config (``env.num_envs``, ``seed`` and the subclass's section are read).
        env_fn: builds one environment; needed by :meth:`learn`. Without it, give
            ``observation_space`` and ``action_space`` (what :meth:`load` does).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        observation_space: the env's own (unflattened) observation space, when no ``env_fn``.
        action_space: the env's action space, when no ``env_fn``.
    """

    kind: ClassVar[str]  # checkpoint kind
    policy_name: ClassVar[str]  # SB3 policy alias
    section: ClassVar[str]  # the TrainConfig field with this agent's settings

    def __init__(
        self,
        cfg: TrainConfig,
        env_fn: Callable[[], gym.Env] | None = None,
        device: str | torch.device = "auto",
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.cfg, self.env_fn = cfg, env_fn
        self.settings: SB3PPOConfig = getattr(cfg, self.section)
        self.logger: Callable[[int, dict[str, float]], None] | None = None
        self.model: OnPolicyAlgorithm | None = None
        self._steps_without_model = 0
        if env_fn is not None:
            self.model = self._build_model(env_fn)
            self.policy: ActorCriticPolicy = self.model.policy
            return
        if observation_space is None or action_space is None:
            raise ValueError(
                f"{type(self).__name__} needs env_fn, or observation_space and action_space "
                "(the environment's own spaces) to act without an environment."
            )
        check_spaces(observation_space, action_space)
        self.observation_space, self.action_space = observation_space, action_space
        policy_class = self.algorithm().policy_aliases[self.policy_name]
        self.policy = policy_class(
            flat_space(observation_space),
            action_space,
            ConstantSchedule(self.settings.lr),
            **self._policy_kwargs(),
        ).to(self.device)

    @classmethod
    def algorithm(cls) -> type[OnPolicyAlgorithm]:
        """The SB3 algorithm class (PPO or RecurrentPPO), imported when first needed."""
        raise NotImplementedError

    def _policy_kwargs(self) -> dict[str, Any]:
        hidden = self.settings.hidden
        return {"net_arch": {"pi": [hidden, hidden], "vf": [hidden, hidden]}}

    def _build_model(self, env_fn: Callable[[], gym.Env]) -> OnPolicyAlgorithm:
        """The SB3 algorithm on ``env.num_envs`` wrapped envs (env i seeded with ``seed + i``)."""
        envs = [env_fn() for _ in range(self.cfg.env.num_envs)]
        self.observation_space = envs[0].observation_space
        self.action_space = envs[0].action_space
        try:
            check_spaces(self.observation_space, self.action_space)
        except SpaceError:
            for env in envs:
                env.close()
            raise
        vec_env = DummyVecEnv([functools.partial(_prepare_env, env) for env in envs])
        s = self.settings
        lr = AnnealedLR(s.lr) if s.anneal_lr else s.lr
        # seed= seeds python/numpy/torch and, through VecEnv.seed, env i with seed + i
        return self.algorithm()(
            self.policy_name,
            vec_env,
            learning_rate=lr,
            n_steps=s.n_steps,
            batch_size=s.batch_size,
            n_epochs=s.n_epochs,
            gamma=s.gamma,
            gae_lambda=s.gae_lambda,
            clip_range=s.clip_range,
            ent_coef=s.ent_coef,
            vf_coef=s.vf_coef,
            max_grad_norm=s.max_grad_norm,
            policy_kwargs=self._policy_kwargs(),
            seed=self.cfg.seed,
            device=self.device,
            verbose=0,
        )

    @property
    def num_timesteps(self) -> int:
        """Environment steps trained on so far (summed over environments)."""
        return self.model.num_timesteps if self.model is not None else self._steps_without_model

    @num_timesteps.setter
    def num_timesteps(self, value: int) -> None:
        if self.model is not None:
            self.model.num_timesteps = int(value)
        else:
            self._steps_without_model = int(value)

    # ------------------------------------------------------------------ acting
    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        reward: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Actions for a batch of observations (or one), stable-baselines3 style.

        Args:
            observation: one observation or a batch of N (numpy ``(N, ...)`` or a dict of them, as
                :func:`smt_rl.spaces.stack_observations` builds it) in the env's own space.
            state: the state returned by the previous call (None: start of episodes). For the LSTM
                agent ``(h, c)``, each ``(n_lstm_layers, N, lstm_hidden_size)``; None otherwise.
            episode_start: (N,) bool, True where ``observation`` begins an episode (all True when
                not given, as for :class:`agents.smt_ppo.SMTPPO`).
            deterministic: greedy actions.
            reward: ignored (the baselines read observations only).

        Returns:
            (actions ``(N, *action_shape)``, or one action for one observation; next state).
        """
        del reward
        single = is_single_observation(observation, self.observation_space)
        items = (
            [observation] if single else unbatch_observations(observation, self.observation_space)
        )
        n = len(items)
        starts = (
            np.ones(n, dtype=bool)
            if state is None or episode_start is None
            else np.asarray(episode_start, dtype=bool).reshape(n)
        )
        flat = flatten_batch(self.observation_space, items)  # (N, D)
        actions, new_state = self.policy.predict(flat, state, starts, deterministic)
        return (actions[0] if single else actions), new_state

    # ------------------------------------------------------------------ learning
    def learn(
        self,
        total_timesteps: int,
        progress_bar: bool = False,
        resume_path: str | os.PathLike | None = None,
    ) -> _SB3Agent:
        """Train until ``num_timesteps`` reaches ``total_timesteps`` environment steps (SB3 rounds
        up to whole rollouts). ``resume_path`` is not used: a killed run starts its RL over.

        ``self.logger`` (when set) gets, after every rollout and its update, ``(num_timesteps,
        metrics)`` with ``rollout/return_mean`` and ``rollout/success_rate`` (last 100 finished
        episodes; success only when the task reports ``info["success"]``), ``time/steps_per_s``
        and SB3's update statistics as ``ppo/policy_loss``, ``ppo/value_loss``, ``ppo/entropy``,
        ``ppo/approx_kl``, ``ppo/clip_fraction``, ``ppo/explained_variance``, ``ppo/lr``.
        """
        if self.model is None:
            raise ValueError(
                f"{type(self).__name__}.learn needs an environment: pass env_fn when building "
                "the agent (or to load)."
            )
        remaining = int(total_timesteps) - self.model.num_timesteps
        if remaining <= 0:
            return self
        if isinstance(self.model.learning_rate, AnnealedLR):
            rollout = self.model.n_steps * self.model.n_envs
            self.model.learning_rate.rollout_fraction = rollout / int(total_timesteps)
        callback = _RolloutMetrics(self, remaining, progress_bar)
        try:
            # log_interval=None: SB3 never dumps (clears) its logger, so the callback reads the
            # train metrics; reset_num_timesteps=False: steps add up over learn calls
            self.model.learn(
                remaining,
                callback=callback,
                log_interval=None,
                reset_num_timesteps=False,
            )
        finally:
            callback.bar.close()
        return self

    # ------------------------------------------------------------------ saving
    def saved_module(self) -> torch.nn.Module:
        return self.policy


class SB3PPOAgent(_SB3Agent):
    """stable-baselines3 ``PPO`` with an MLP policy: no memory, the lower bound (``algo: ppo``).

    Settings from ``cfg.sb3_ppo`` (:class:`agents.baselines.config.SB3PPOConfig`).
    """

    kind = "sb3_ppo_agent"
    policy_name = "MlpPolicy"
    section = "sb3_ppo"

    @classmethod
    def algorithm(cls) -> type[OnPolicyAlgorithm]:
        return PPO


class RecurrentPPOAgent(_SB3Agent):
    """sb3-contrib ``RecurrentPPO`` with ``MlpLstmPolicy``: an LSTM trained by BPTT over each
    rollout's sequences (``algo: recurrent_ppo``).

    Settings from ``cfg.recurrent_ppo`` (:class:`agents.baselines.config.RecurrentPPOConfig`).
    """

    kind = "recurrent_ppo_agent"
    policy_name = "MlpLstmPolicy"
    section = "recurrent_ppo"

    @classmethod
    def algorithm(cls) -> type[OnPolicyAlgorithm]:
        """sb3-contrib's ``RecurrentPPO`` (the optional extra ``smt-rl[baselines]``)."""
        return require("sb3_contrib", "algo=recurrent_ppo").RecurrentPPO

    def _policy_kwargs(self) -> dict[str, Any]:
        s: RecurrentPPOConfig = self.settings  # type: ignore[assignment]
        return {
            **super()._policy_kwargs(),
            "lstm_hidden_size": s.lstm_hidden_size,
            "n_lstm_layers": s.n_lstm_layers,
            "enable_critic_lstm": s.enable_critic_lstm,
        }
