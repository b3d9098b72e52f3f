"""torchrl recurrent PPO (``algo: gru_ppo``): a GRU policy trained by backpropagation through time.

Built from torchrl components only: every sub-environment is a ``GymWrapper`` around the
gymnasium env (observations flattened by ``FlattenObservation``, ``info["success"]`` read by an
info-dict reader), the ``num_envs`` copies run in one process under ``SerialEnv``, and a
``TransformedEnv`` adds ``InitTracker`` (``is_init``), the ``GRUModule``'s tensordict primer
(``recurrent_state``) and ``RewardSum`` (episode returns). A ``Collector`` steps them with the
policy; ``GAE`` gives advantages; ``ClipPPOLoss`` is minimised under ``set_recurrent_mode(True)``.

Network (one GRU shared by actor and critic; both losses train it)::

    observation (flat float) -> Linear(hidden) + Tanh -> GRUModule(gru_hidden) -> features
    features -> MLP(hidden) -> logits (Categorical actor)      features -> MLP(hidden) -> value

Training, per collected batch ``(num_envs, T)`` with ``T = frames_per_batch / num_envs``:

1. The collector stores, at each step, the GRU state the policy read (``recurrent_state``), the
   action, its log-probability and the value ``V(o_t, h_{t-1})``.
2. GAE reads those stored values plus ``V`` of each step's next observation, computed by one
   GRU step from the stored post-step state ``("next", "recurrent_state")``. This is exact: it
   equals the next step's stored value inside an episode, and it also values the final
   observation of a truncated episode (a recurrent re-run of the batch would value the next
   episode's first observation there instead). The values come from the weights that collected
   the batch, as PPO asks.
3. The batch is cut into slices of ``slice_len`` consecutive steps per environment. Each slice
   starts from the GRU state the collector stored at its first step; episode starts inside a
   slice restart from zeros (``is_init``, honoured by ``GRUModule`` in recurrent mode).
4. ``epochs`` passes over shuffled minibatches of ``minibatch_slices`` slices: the GRU is
   unrolled through each slice with gradients (BPTT over ``slice_len`` steps), advantages are
   normalised per minibatch, and Adam steps with gradient clipping.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import Categorical as CategoricalSpec
from torchrl.data import Composite
from torchrl.envs import (
    Compose,
    GymWrapper,
    InitTracker,
    RewardSum,
    SerialEnv,
    TransformedEnv,
)
from torchrl.envs.gym_like import BaseInfoDictReader
from torchrl.modules import GRUModule, ProbabilisticActor, ValueOperator, set_recurrent_mode
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE
from tqdm.auto import tqdm

from agents.config import TrainConfig
from smt_rl.checkpoint import (
    CheckpointError,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    spec_fields,
)
from smt_rl.config import config_from_dict, config_to_dict
from smt_rl.device import resolve_device
from smt_rl.errors import ConfigError
from smt_rl.spaces import (
    check_space,
    is_single_observation,
    space_from_dict,
    space_to_dict,
    unbatch_observations,
)

KIND = "gru_ppo_agent"
STATE_KEY = "recurrent_state"  # the GRU state the policy reads at a step, (..., 1, gru_hidden)
NEXT_STATE_KEY = ("next", STATE_KEY)  # the GRU state after the step
SUCCESS_KEY = "success"  # info["success"] of the step (False where not reported)
REPORTED_KEY = "success_reported"  # whether the step's info held "success"


class SuccessInfoReader(BaseInfoDictReader):
    """Reads ``info["success"]`` into ``success`` and ``success_reported`` (both ``(1,)`` bool).

    torchrl's ``default_info_dict_reader`` fills a missing key with zeros, which would count every
    step of a task without a success signal as a failure; this reader also records whether the
    key was there, so the success rate is taken over the episodes that report one.
    """

    def __init__(self) -> None:
        flag = CategoricalSpec(2, shape=(1,), dtype=torch.bool)
        self._spec = Composite({SUCCESS_KEY: flag, REPORTED_KEY: flag.clone()}, shape=())

    def __call__(self, info_dict: dict[str, Any], tensordict: TensorDictBase) -> TensorDictBase:
        reported = isinstance(info_dict, dict) and SUCCESS_KEY in info_dict
        success = bool(info_dict[SUCCESS_KEY]) if reported else False
        tensordict.set(SUCCESS_KEY, torch.tensor([success]))
        tensordict.set(REPORTED_KEY, torch.tensor([reported]))
        return tensordict

    @property
    def info_spec(self) -> Composite:
        return self._spec


class GRUActorCritic(nn.Module):
    """All the weights of the agent, and the torchrl modules built on them.

    Args:
        obs_dim: D, the length of the flattened observation.
        n_actions: A, the number of discrete actions.
        hidden: width of the encoder layer and of the heads' hidden layer.
        gru_hidden: H, the GRU width.

    Keys read and written (any batch shape ``*B``; in recurrent mode the last batch dim is time):
    ``observation`` (*B, D) and ``is_init`` (*B, 1) and ``recurrent_state`` (*B, 1, H) in;
    ``features`` (*B, H), ``("next", "recurrent_state")`` (*B, 1, H), ``logits`` (*B, A),
    ``state_value`` (*B, 1) out.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int, gru_hidden: int) -> None:
        super().__init__()
        self.encoder = TensorDictModule(
            nn.Sequential(_ToFloat(), nn.Linear(obs_dim, hidden), nn.Tanh()),
            in_keys=["observation"],
            out_keys=["embed"],
        )
        self.gru = GRUModule(
            input_size=hidden,
            hidden_size=gru_hidden,
            in_keys=["embed", STATE_KEY],
            out_keys=["features", NEXT_STATE_KEY],
        )
        self.actor_head = TensorDictModule(
            _head(gru_hidden, hidden, n_actions), in_keys=["features"], out_keys=["logits"]
        )
        self.critic_head = ValueOperator(_head(gru_hidden, hidden, 1), in_keys=["features"])

    def operators(
        self,
    ) -> tuple[ProbabilisticActor, TensorDictSequential, TensorDictSequential]:
        """``(actor, critic, collect_policy)``: torchrl modules over these weights (kept outside
        this module, so its ``state_dict`` names every tensor once).

        The actor and the critic each run the shared encoder + GRU (the loss calls both); the
        collection policy runs one GRU step, then the action and the value from its features.
        """
        actor = ProbabilisticActor(
            TensorDictSequential(self.encoder, self.gru, self.actor_head),
            in_keys=["logits"],
            distribution_class=torch.distributions.Categorical,
            return_log_prob=True,
        )
        critic = TensorDictSequential(self.encoder, self.gru, self.critic_head)
        return actor, critic, TensorDictSequential(actor, self.critic_head)

    def step_logits(
        self, obs: torch.Tensor, state: torch.Tensor, is_init: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for N environments: ``obs (N, D)``, ``state (N, 1, H)``, ``is_init (N,)`` ->
        ``(logits (N, A), next state (N, 1, H))`` (the state is zeroed where ``is_init``)."""
        td = TensorDict(
            {"observation": obs, STATE_KEY: state, "is_init": is_init.reshape(-1, 1)},
            batch_size=[obs.shape[0]],
        )
        with set_recurrent_mode(False):
            td = self.actor_head(self.gru(self.encoder(td)))
        return td["logits"], td.get(NEXT_STATE_KEY)


class _ToFloat(nn.Module):
    """Casts a flattened observation (float, or integer one-hots / pixels) to float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32)


def _head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, out_dim))


class GRUPPOAgent:
    """Recurrent PPO with a GRU trained by BPTT over slices (torchrl), stable-baselines3-style API.

    Args:
        cfg: the train config (``gru_ppo``, ``env.num_envs``, ``seed`` are read).
        env_fn: builds one gymnasium environment; needed by :meth:`learn`, and for the spaces
            unless ``observation_space`` and ``action_space`` are given.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``... The environments always
            run on the CPU; the network, the batch and the update live on ``device``.
        observation_space, action_space: the env's spaces (for :meth:`load` without an env).

    Raises:
        ValueError: unsupported spaces (the message names ``observation_space`` or
            ``action_space``); :class:`ConfigError` for ``gru_ppo`` settings that do not fit.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        env_fn: Callable[[], gym.Env] | None = None,
        device: str | torch.device = "auto",
        *,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.cfg, self.env_fn = cfg, env_fn
        if observation_space is None or action_space is None:
            if env_fn is None:
                raise ValueError(
                    "GRUPPOAgent needs env_fn, or both observation_space and action_space."
                )
            env = env_fn()
            observation_space, action_space = env.observation_space, env.action_space
            env.close()
        self.observation_space, self.action_space = observation_space, action_space
        _check_spaces(observation_space, action_space)
        self.steps_per_env = _check_settings(cfg)
        self.obs_dim = int(spaces.flatdim(observation_space))
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left alone
            torch.manual_seed(cfg.seed)
            self.net = GRUActorCritic(
                self.obs_dim, int(action_space.n), cfg.gru_ppo.hidden, cfg.gru_ppo.gru_hidden
            ).to(self.device)
        self.actor, self.critic, self.collect_policy = self.net.operators()
        g = cfg.gru_ppo
        self.loss_module = ClipPPOLoss(
            self.actor,
            self.critic,
            clip_epsilon=g.clip,
            entropy_bonus=True,
            entropy_coeff=g.ent_coef,
            critic_coeff=g.vf_coef,
            loss_critic_type="l2",
            normalize_advantage=True,
            reduction="none",  # per-step losses, (B, L); averaged in _update
        )
        self.advantage = GAE(
            gamma=g.gamma, lmbda=g.gae_lambda, value_network=None, device=self.device
        )
        self.optimizer = torch.optim.Adam(self.loss_module.parameters(), lr=g.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.num_timesteps = 0
        self.logger: Callable[[int, dict[str, float]], None] | None = None

    # ------------------------------------------------------------------ environments
    def _make_one_env(self) -> GymWrapper:
        """One sub-environment: the gymnasium env with flat observations, as a torchrl env."""
        env = GymWrapper(
            FlattenObservation(self.env_fn()), categorical_action_encoding=True, device="cpu"
        )
        env.set_info_dict_reader(SuccessInfoReader())
        return env

    def make_env(self) -> TransformedEnv:
        """``num_envs`` sub-environments (``SerialEnv``) with ``is_init``, the GRU primer and
        episode returns; batch size ``(num_envs,)``."""
        if self.env_fn is None:
            raise ValueError(
                "GRUPPOAgent.learn needs an environment: pass env_fn when building it."
            )
        return TransformedEnv(
            SerialEnv(self.cfg.env.num_envs, self._make_one_env),
            Compose(InitTracker(), self.net.gru.make_tensordict_primer(), RewardSum()),
        )

    # ------------------------------------------------------------------ acting
    def initial_state(self, num_envs: int) -> torch.Tensor:
        """The GRU state before any step: zeros ``(N, 1, gru_hidden)``."""
        return torch.zeros(num_envs, 1, self.cfg.gru_ppo.gru_hidden, device=self.device)

    @torch.no_grad()
    def predict(
        self,
        observation: Any,
        state: torch.Tensor | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        reward: np.ndarray | None = None,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Actions for a batch of N observations, stable-baselines3 style.

        Args:
            observation: N observations in the env's own space, batched as
                :func:`smt_rl.spaces.stack_observations` builds them (or a single observation).
            state: the ``(N, 1, gru_hidden)`` GRU state returned by the previous call (None: all
                environments start an episode).
            episode_start: (N,) bool, True where ``observation`` begins an episode (its state is
                reset to zeros).
            deterministic: greedy actions (else sampled).
            reward: ignored (the GRU does not read rewards).

        Returns:
            ``(actions (N,) int64, next state (N, 1, gru_hidden))``; a single observation gives a
            scalar action.
        """
        del reward
        single = is_single_observation(observation, self.observation_space)
        rows = (
            [observation] if single else unbatch_observations(observation, self.observation_space)
        )
        n = len(rows)
        flat = np.stack([spaces.flatten(self.observation_space, row) for row in rows])
        obs = torch.as_tensor(flat).to(self.device)
        if state is None:
            state, episode_start = self.initial_state(n), np.ones(n, dtype=bool)
        starts = np.ones(n, dtype=bool) if episode_start is None else episode_start
        is_init = torch.as_tensor(np.asarray(starts, dtype=bool).reshape(n), device=self.device)
        logits, new_state = self.net.step_logits(obs, state.to(self.device), is_init)
        if deterministic:
            actions = logits.argmax(-1)
        else:
            actions = torch.distributions.Categorical(logits=logits).sample()
        out = actions.cpu().numpy().astype(np.int64)
        return (out[0] if single else out), new_state

    # ------------------------------------------------------------------ learning
    def learn(self, total_timesteps: int, progress_bar: bool = False) -> GRUPPOAgent:
        """Train until ``num_timesteps`` reaches ``total_timesteps`` env steps (all envs summed;
        whole batches, so it may run past it). Seeds the global torch RNG (action sampling)."""
        g = self.cfg.gru_ppo
        remaining = total_timesteps - self.num_timesteps
        if remaining <= 0:
            return self
        frames = self.steps_per_env * self.cfg.env.num_envs
        batches = math.ceil(remaining / frames)
        torch.manual_seed(self.cfg.seed + self.num_timesteps)
        env = self.make_env()
        env.set_seed(self.cfg.seed + self.num_timesteps)
        collector = Collector(
            env,
            self.collect_policy,
            frames_per_batch=frames,
            total_frames=batches * frames,
            env_device="cpu",
            policy_device=self.device,
            storing_device=self.device,
            split_trajs=False,
            auto_register_policy_transforms=False,
        )
        returns: deque[float] = deque(maxlen=100)
        successes: deque[float] = deque(maxlen=100)
        bar = tqdm(total=batches * frames, disable=not progress_bar, desc="gru_ppo", unit="step")
        started, start_steps = time.perf_counter(), self.num_timesteps
        try:
            for data in collector:  # (num_envs, T)
                lr = g.lr * (1.0 - self.num_timesteps / total_timesteps) if g.anneal_lr else g.lr
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.num_timesteps += data.numel()
                _record_episodes(data, returns, successes)
                metrics = self._update(data)
                collector.update_policy_weights_()
                metrics["rollout/return_mean"] = (
                    float(np.mean(returns)) if returns else float("nan")
                )
                if successes:
                    metrics["rollout/success_rate"] = float(np.mean(successes))
                metrics["ppo/lr"] = lr
                metrics["time/steps_per_s"] = (self.num_timesteps - start_steps) / (
                    time.perf_counter() - started
                )
                if self.logger is not None:
                    self.logger(self.num_timesteps, metrics)
                bar.update(data.numel())
                bar.set_postfix(ret=f"{metrics['rollout/return_mean']:.3f}", refresh=False)
        finally:
            bar.close()
            collector.shutdown()
            if not env.is_closed:
                env.close()
        return self

    @torch.no_grad()
    def add_advantages(self, data: TensorDictBase) -> TensorDictBase:
        """Write ``advantage`` and ``value_target`` ``(N, T, 1)`` into a collected batch.

        ``state_value`` is the value stored at collection; ``("next", "state_value")`` is computed
        here by one GRU step on each next observation from the post-step state."""
        nxt = data.get("next").select("observation", STATE_KEY).clone()
        nxt.set("is_init", torch.zeros(*nxt.shape, 1, dtype=torch.bool, device=nxt.device))
        with set_recurrent_mode(False):
            values = self.critic(nxt).get("state_value")
        data.set(("next", "state_value"), values)
        return self.advantage(data)

    def slices(self, data: TensorDictBase) -> TensorDictBase:
        """Cut a batch ``(N, T)`` into ``(N * T / slice_len, slice_len)`` training sequences."""
        keys = ["observation", "is_init", STATE_KEY, "action", "action_log_prob"]
        keys += ["advantage", "value_target", "state_value"]
        seq = data.select(*keys)
        # an episode start restarts from zeros (the collector's primer stores zeros there;
        # this makes the replay independent of that detail)
        is_init = seq.get("is_init").unsqueeze(-1)
        seq.set(STATE_KEY, seq.get(STATE_KEY).masked_fill(is_init, 0.0))
        n, t = seq.shape
        length = self.cfg.gru_ppo.slice_len
        return seq.reshape(n, t // length, length).reshape(-1, length)

    def minibatch_loss(self, minibatch: TensorDictBase) -> TensorDictBase:
        """``ClipPPOLoss`` terms of a minibatch of slices ``(B, L)``, per step ``(B, L)``: the
        GRU is unrolled through every slice from its stored first state (BPTT). (torchrl losses
        enter recurrent mode on their own; the context here only makes it explicit.)"""
        with set_recurrent_mode(True):
            return self.loss_module(minibatch)

    def _update(self, data: TensorDictBase) -> dict[str, float]:
        """GAE, slicing and ``epochs`` passes of clipped PPO over minibatches of slices."""
        g = self.cfg.gru_ppo
        seqs = self.slices(self.add_advantages(data))
        stats: dict[str, list[float]] = {
            k: [] for k in ("loss_objective", "loss_critic", "loss_entropy", "entropy")
        }
        stats.update(kl_approx=[], clip_fraction=[])
        for _ in range(g.epochs):
            order = torch.randperm(seqs.shape[0], generator=self.generator).to(self.device)
            for start in range(0, seqs.shape[0], g.minibatch_slices):
                out = self.minibatch_loss(seqs[order[start : start + g.minibatch_slices]])
                losses = {k: out[k].mean() for k in ("loss_objective", "loss_critic")}
                losses["loss_entropy"] = out["loss_entropy"].mean()
                loss = sum(losses.values())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.loss_module.parameters(), g.max_grad_norm)
                self.optimizer.step()
                for key in stats:
                    stats[key].append(float(out[key].detach().float().mean()))
        return {f"ppo/{k}": float(np.mean(v)) for k, v in stats.items()}

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write the agent: weights as safetensors; config and spaces as JSON (no pickle)."""
        spec = {
            "kind": KIND,
            "config": config_to_dict(self.cfg),
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
            "num_timesteps": self.num_timesteps,
        }
        return save_checkpoint(path, self.net, spec)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        env_fn: Callable[[], gym.Env] | None = None,
        device: str = "auto",
    ) -> GRUPPOAgent:
        """Rebuild a saved agent from its config and spaces (no env needed); never runs code
        from the files."""
        spec, tensors = read_checkpoint(path)
        if spec.get("kind") != KIND:
            raise CheckpointError(
                f"{path} holds a {spec.get('kind')!r} checkpoint, not a {KIND!r} one; load it "
                "with the agent class of its kind."
            )
        with spec_fields(path):
            cfg = config_from_dict(TrainConfig, spec["config"], migrate=True)
            observation_space = space_from_dict(spec["observation_space"])
            action_space = space_from_dict(spec["action_space"])
        agent = cls(
            cfg, env_fn, device, observation_space=observation_space, action_space=action_space
        )
        load_weights(agent.net, tensors, str(path))
        agent.num_timesteps = int(spec.get("num_timesteps", 0))
        return agent


def _record_episodes(data: TensorDictBase, returns: deque, successes: deque) -> None:
    """Append the return (and success, where reported) of every episode that ended in ``data``,
    in time order."""
    done = data.get(("next", "done")).squeeze(-1)  # (N, T)
    if not done.any():
        return
    order = done.t().nonzero()  # (k, 2): (t, env), sorted by time
    ret = data.get(("next", "episode_reward")).squeeze(-1).t()
    success = data.get(("next", SUCCESS_KEY)).squeeze(-1).t()
    reported = data.get(("next", REPORTED_KEY)).squeeze(-1).t()
    for t, i in order.tolist():
        returns.append(float(ret[t, i]))
        if reported[t, i]:
            successes.append(float(success[t, i]))


def _check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    check_space(observation_space, "observation_space")
    if not isinstance(action_space, spaces.Discrete) or int(action_space.start) != 0:
        raise ValueError(
            f"action_space: gru_ppo supports Discrete action spaces starting at 0, got "
            f"{action_space}; use algo: ppo or recurrent_ppo for other action spaces, or wrap "
            "the env to give it one."
        )


def _check_settings(cfg: TrainConfig) -> int:
    """Validate ``gru_ppo`` against ``env.num_envs``; returns the steps per env per batch."""
    g, n = cfg.gru_ppo, cfg.env.num_envs
    if n < 1:
        raise ConfigError(f"env.num_envs must be >= 1, got {n}.")
    for name in ("frames_per_batch", "slice_len", "minibatch_slices", "epochs", "gru_hidden"):
        if getattr(g, name) < 1:
            raise ConfigError(f"gru_ppo.{name} must be >= 1, got {getattr(g, name)}.")
    if g.frames_per_batch % n or (g.frames_per_batch // n) % g.slice_len:
        raise ConfigError(
            f"gru_ppo.frames_per_batch ({g.frames_per_batch}) must be env.num_envs ({n}) x a "
            f"multiple of gru_ppo.slice_len ({g.slice_len}), so that every environment's part of "
            f"a batch cuts into whole slices; e.g. frames_per_batch="
            f"{n * g.slice_len * max(1, round(g.frames_per_batch / (n * g.slice_len)))}."
        )
    return g.frames_per_batch // n
