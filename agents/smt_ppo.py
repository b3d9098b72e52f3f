"""The SMT agent: PPO on the memory module's own state, refined on-policy by DMT. No BPTT.

Acting: ``m_t = f(m_{t-1}, x_t)`` (reset to the learned initial state at episode starts); the
actor and critic read ``[sg(m_t), sg(x_t)]``. Each rollout stores the memory the agent acted on,
so PPO trains on shuffled single steps. After each rollout the teacher labels every visited
history (each environment's whole current episode, across rollout boundaries), and the memory cell
learns ``f(sg(m^s_{t-1}), x_t) -> m*_t`` on a replay of recent on-policy steps (DAgger). The
teacher is frozen, or (``online_teacher.enabled: true``) keeps learning its predictive loss on the
agent's finished episodes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict
from tqdm.auto import tqdm

from agents.config import TrainConfig
from agents.online_teacher import OnlineTeacher, finished_episode, stack_padded
from agents.policy import ActorCritic
from smt_rl.checkpoint import (
    CheckpointError,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    spec_fields,
)
from smt_rl.checks import check_finite
from smt_rl.config import config_from_dict, config_to_dict
from smt_rl.data.vector import InProcessEnvs, as_action_list
from smt_rl.device import resolve_device
from smt_rl.errors import SpaceError
from smt_rl.io import atomic_torch_save, safe_torch_load
from smt_rl.smt.model import SMTModel
from smt_rl.spaces import (
    batch_to_tensor,
    check_same_space,
    is_single_observation,
    space_from_dict,
    space_to_dict,
    stack_observations,
    tensor_to_numpy,
    torch_dtype,
    unbatch_observations,
)


@dataclass
class AgentState:
    """What the agent carries between steps for N environments (``predict``'s ``state``)."""

    memory: torch.Tensor  # (N, K, d) m_{t-1}
    prev_action: torch.Tensor  # (N, *action_shape) a_{t-1}
    prev_reward: torch.Tensor  # (N,) r_{t-1}
    step_count: torch.Tensor  # (N,) t, the step index within the episode

    FIELDS = ("memory", "prev_action", "prev_reward", "step_count")


def _td_to_plain(td: TensorDict) -> dict[str, Any]:
    """A TensorDict as nested dicts of tensors (what ``torch.load(weights_only=True)`` reads)."""
    return {"fields": td.to_dict(), "batch_size": list(td.batch_size)}


def _td_from_plain(plain: dict[str, Any]) -> TensorDict:
    return TensorDict(plain["fields"], batch_size=plain["batch_size"])


class _Modules(torch.nn.Module):
    """Everything the agent saves: the SMT model (encoder, teacher, decoder, cell) and the heads."""

    def __init__(self, smt: SMTModel, policy: ActorCritic) -> None:
        super().__init__()
        self.smt, self.policy = smt, policy


class _Replay:
    """Ring buffer of DMT tuples: the agent's ``m^s_{t-1}`` (K, d), ``x_t`` (D), the teacher's
    ``m*_t`` (K, d) and ``m*_{t-1}`` (K, d; the initial state at episode starts)."""

    def __init__(self, size: int) -> None:
        self.size, self.data, self.next, self.count = size, None, 0, 0

    def add(
        self, prev: torch.Tensor, x: torch.Tensor, label: torch.Tensor, teacher_prev: torch.Tensor
    ) -> None:
        batch = {"prev": prev, "x": x, "label": label, "teacher_prev": teacher_prev}
        if self.data is None:
            self.data = {k: v.new_zeros(self.size, *v.shape[1:]) for k, v in batch.items()}
        n = prev.shape[0]
        idx = (self.next + torch.arange(n)) % self.size
        for key, value in batch.items():
            self.data[key][idx] = value
        self.next = int((self.next + n) % self.size)
        self.count = min(self.size, self.count + n)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.count, (n,), generator=generator)
        return {k: v[idx] for k, v in self.data.items()}


class SMTPPO:
    """PPO x DMT agent on an SMT-pretrained memory module (stable-baselines3-style API).

    Args:
        model: the SMT model (its step encoder stays frozen, its teacher too unless
            ``online_teacher.enabled``; DMT trains its cell).
        cfg: the train config (``ppo``, ``onpolicy_dmt``, ``online_teacher``, ``env.num_envs``,
            ``seed`` are read).
        env_fn: builds one environment; needed by :meth:`learn`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        policy: actor/critic heads (new ones when None).
    """

    def __init__(
        self,
        model: SMTModel,
        cfg: TrainConfig,
        env_fn: Callable[[], gym.Env] | None = None,
        device: str | torch.device = "auto",
        policy: ActorCritic | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.cfg, self.env_fn = cfg, env_fn
        self.model = model.to(self.device)
        for p in list(model.step_encoder.parameters()) + list(model.teacher.parameters()):
            p.requires_grad_(False)
        self.observation_space, self.action_space = model.observation_space, model.action_space
        features = model.cell.memory_size + model.cfg.embed_dim
        self.policy = (policy or ActorCritic(features, self.action_space, cfg.ppo.hidden)).to(
            self.device
        )
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.ppo.lr, eps=1e-5)
        self.cell_opt = (
            torch.optim.SGD(model.cell.parameters(), lr=cfg.onpolicy_dmt.lr, momentum=0.9)
            if cfg.onpolicy_dmt.optimizer == "sgd"
            else torch.optim.AdamW(model.cell.parameters(), lr=cfg.onpolicy_dmt.lr)
        )
        self.replay = _Replay(cfg.onpolicy_dmt.replay_size)
        self.online_teacher = (
            OnlineTeacher(
                model,
                cfg.smt,
                cfg.online_teacher.lr,
                cfg.online_teacher.batch_episodes,
                cfg.online_teacher.buffer_episodes,
            )
            if cfg.online_teacher.enabled
            else None
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.num_timesteps = 0
        self.logger: Callable[[int, dict[str, float]], None] | None = None

    # ------------------------------------------------------------------ acting
    def initial_state(self, num_envs: int) -> AgentState:
        act_shape = self.action_space.shape
        return AgentState(
            memory=self.model.cell.initial_state(num_envs).detach().clone(),
            prev_action=torch.zeros(
                num_envs, *act_shape, dtype=torch_dtype(self.action_space), device=self.device
            ),
            prev_reward=torch.zeros(num_envs, device=self.device),
            step_count=torch.zeros(num_envs, dtype=torch.int64, device=self.device),
        )

    def _step_inputs(self, observations: list[Any], state: AgentState, is_init: torch.Tensor):
        """The step-input TensorDict ``(N,)`` for the current observations."""
        n = len(observations)
        obs = batch_to_tensor(
            self.observation_space, stack_observations(observations, self.observation_space), n
        )
        check_finite(
            {"observation": obs},
            lambda i: f"env {i}, episode step {0 if is_init[i] else int(state.step_count[i])}",
        )
        zero = torch.zeros_like
        return TensorDict(
            {
                "observation": obs.to(self.device),
                "prev_action": torch.where(
                    is_init.view(-1, *[1] * (state.prev_action.dim() - 1)),
                    zero(state.prev_action),
                    state.prev_action,
                ),
                "prev_reward": torch.where(is_init, zero(state.prev_reward), state.prev_reward),
                "is_init": is_init,
                "step_count": torch.where(is_init, zero(state.step_count), state.step_count),
            },
            batch_size=[n],
        )

    @torch.no_grad()
    def _advance(self, inputs: TensorDict, state: AgentState):
        """``(x_t (N, D), m_{t-1} after resets (N, K, d), m_t (N, K, d))``."""
        x = self.model.step_encoder(inputs)
        prev = self.model.cell.reset_where(state.memory, inputs["is_init"])
        return x, prev, self.model.cell.step(prev, x)

    @staticmethod
    def _features(memory: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([memory.flatten(1), x], -1)

    @torch.no_grad()
    def predict(
        self,
        observation: Any,
        state: AgentState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        reward: np.ndarray | None = None,
    ) -> tuple[np.ndarray, AgentState]:
        """Actions for a batch of observations (or one), stable-baselines3 style.

        Args:
            observation: one observation or a batch (as a vector env returns it).
            state: the state returned by the previous call (None: start of episodes).
            episode_start: (N,) bool, True where ``observation`` begins an episode.
            deterministic: greedy actions.
            reward: (N,) rewards received for the previous actions (part of the memory's input;
                zeros when not given).

        Returns:
            (actions, next state).
        """
        single = is_single_observation(observation, self.observation_space)
        observations = (
            [observation] if single else unbatch_observations(observation, self.observation_space)
        )
        n = len(observations)
        if state is None:
            state = self.initial_state(n)
            episode_start = np.ones(n, dtype=bool)
        starts = (
            torch.as_tensor(
                np.ones(n, dtype=bool) if episode_start is None else np.asarray(episode_start, bool)
            )
            .reshape(n)
            .to(self.device)
        )
        if reward is not None:
            state.prev_reward = torch.as_tensor(
                np.asarray(reward), dtype=torch.float32, device=self.device
            ).reshape(n)
        inputs = self._step_inputs(observations, state, starts)
        x, _, memory = self._advance(inputs, state)
        dist, _ = self.policy(self._features(memory, x))
        actions = dist.mode() if deterministic else dist.sample()
        new_state = AgentState(
            memory,
            actions.to(state.prev_action.dtype),
            inputs["prev_reward"],
            inputs["step_count"] + 1,
        )
        out = self._to_env(actions)
        return (out[0] if single else out), new_state

    def _to_env(self, actions: torch.Tensor) -> np.ndarray:
        array = tensor_to_numpy(self.action_space, actions)
        if isinstance(self.action_space, spaces.Box):
            array = np.clip(array, self.action_space.low, self.action_space.high)
        return array

    # ------------------------------------------------------------------ learning
    def learn(
        self,
        total_timesteps: int,
        progress_bar: bool = True,
        resume_path: str | os.PathLike | None = None,
        resume_every: int = 0,
    ) -> SMTPPO:
        """Run PPO x DMT for ``total_timesteps`` environment steps (summed over environments).

        Args:
            total_timesteps: env steps to reach (``num_timesteps`` counts from the agent's start).
            progress_bar: show a progress bar.
            resume_path: a file for the loop's resume state. Written atomically every
                ``resume_every`` rollouts; when it exists at the start, the loop continues from it
                exactly (weights, optimisers, DMT replay, RNG states, counters; the environments
                are brought back by replaying every recorded action from their seeded reset, so
                they must be deterministic given their seed, as gymnasium envs are).
            resume_every: rollouts between resume states (0: none).
        """
        if self.env_fn is None:
            raise ValueError("SMTPPO.learn needs an environment: pass env_fn when building it.")
        cfg, ppo = self.cfg, self.cfg.ppo
        num_envs = cfg.env.num_envs
        envs = InProcessEnvs(self.env_fn, num_envs)
        fix = "build the agent on a model pretrained on this task, or wrap the env to match."
        try:
            check_same_space(
                self.observation_space, envs.single_observation_space, "observation_space", fix
            )
            check_same_space(self.action_space, envs.single_action_space, "action_space", fix)
        except SpaceError:
            envs.close()
            raise
        observations = envs.reset(cfg.seed)
        state = self.initial_state(num_envs)
        starts = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        histories: list[list[TensorDict]] = [[] for _ in range(num_envs)]
        taken: list[list[tuple[torch.Tensor, float]]] = [[] for _ in range(num_envs)]
        returns_now = np.zeros(num_envs)
        done_returns: list[float] = []
        done_success: list[float] = []
        bar = tqdm(total=total_timesteps, disable=not progress_bar, desc="train", unit="step")
        action_log: list[np.ndarray] = []  # every step's env actions (replayed on resume)
        if resume_path is not None and Path(resume_path).is_file():
            saved = safe_torch_load(
                resume_path, CheckpointError, "delete it to start the RL phase over."
            )
            self._restore_loop(saved, total_timesteps)
            action_log = [a.numpy() for a in saved["actions"]]
            for actions in action_log:  # the environments go through the same steps again
                results = envs.step(as_action_list(actions))
                observations = [r.observation for r in results]
            state = AgentState(**{k: v.to(self.device) for k, v in saved["state"].items()})
            starts = saved["starts"].to(self.device)
            histories = [list(_td_from_plain(h).unbind(0)) if h else [] for h in saved["histories"]]
            taken = [list(zip(a.unbind(0), r.tolist(), strict=True)) if a is not None else []
                     for a, r in saved["taken"]]  # fmt: skip
            returns_now = saved["returns_now"].numpy().copy()
            done_returns, done_success = saved["done_returns"], saved["done_success"]
            bar.update(self.num_timesteps)
        rollouts = 0
        started = time.perf_counter()
        try:
            while self.num_timesteps < total_timesteps:
                if ppo.anneal_lr:
                    remaining = 1.0 - self.num_timesteps / total_timesteps
                    for group in self.policy_opt.param_groups:
                        group["lr"] = ppo.lr * remaining
                roll = {
                    k: []
                    for k in ("x", "prev", "memory", "action", "logp", "value", "reward", "done")
                }
                where: list[list[tuple[list, int]]] = []  # per step, per env: (episode, position)
                for _ in range(ppo.n_steps):
                    inputs = self._step_inputs(observations, state, starts)
                    x, prev, memory = self._advance(inputs, state)
                    with torch.no_grad():
                        dist, value = self.policy(self._features(memory, x))
                        action = dist.sample()
                        logp = dist.log_prob(action)
                    env_actions = self._to_env(action.cpu())
                    action_log.append(np.asarray(env_actions))
                    results = envs.step(as_action_list(env_actions))
                    reward = torch.tensor([r.reward for r in results], dtype=torch.float32)
                    check_finite(
                        {"reward": reward},
                        lambda i, t=inputs["step_count"]: f"env {i}, episode step {int(t[i])}",
                    )
                    done = torch.tensor([r.final_observation is not None for r in results])
                    step_where = []
                    for i, res in enumerate(results):
                        histories[i].append(inputs[i].cpu())
                        step_where.append((histories[i], len(histories[i]) - 1))
                        returns_now[i] += res.reward
                        if self.online_teacher is not None:
                            taken[i].append((action[i].cpu(), res.reward))
                        if res.final_observation is not None:
                            if self.online_teacher is not None:
                                self._keep_episode(histories[i], taken[i], res)
                                taken[i] = []
                            done_returns.append(float(returns_now[i]))
                            if res.success is not None:
                                done_success.append(float(res.success))
                            returns_now[i] = 0.0
                            if res.truncated:  # bootstrap from the final observation's value
                                reward[i] += ppo.gamma * self._final_value(
                                    res.final_observation,
                                    memory[i],
                                    action[i],
                                    res.reward,
                                    inputs["step_count"][i],
                                )
                            histories[i] = []
                    where.append(step_where)
                    for key, value_ in (
                        ("x", x),
                        ("prev", prev),
                        ("memory", memory),
                        ("action", action),
                        ("logp", logp),
                        ("value", value),
                        ("reward", reward),
                        ("done", done),
                    ):
                        roll[key].append(value_.to(self.device))
                    observations = [r.observation for r in results]
                    state = AgentState(
                        memory,
                        action.to(state.prev_action.dtype),
                        reward.to(self.device),
                        inputs["step_count"] + 1,
                    )
                    starts = done.to(self.device)
                    self.num_timesteps += num_envs
                    bar.update(num_envs)
                batch = {k: torch.stack(v) for k, v in roll.items()}  # (T, N, ...)
                with torch.no_grad():
                    inputs = self._step_inputs(observations, state, starts)
                    x_next, _, m_next = self._advance(inputs, state)
                    last_value = self.policy.value(self._features(m_next, x_next))
                metrics = self._ppo_update(batch, last_value)
                if self.cfg.onpolicy_dmt.enabled:
                    metrics.update(self._dmt_update(batch, where))
                if self.online_teacher is not None:
                    metrics.update(
                        self.online_teacher.update(
                            self.cfg.online_teacher.updates_per_rollout, self.generator, self.device
                        )
                    )
                metrics["rollout/return_mean"] = (
                    float(np.mean(done_returns[-100:])) if done_returns else float("nan")
                )
                if done_success:
                    metrics["rollout/success_rate"] = float(np.mean(done_success[-100:]))
                metrics["ppo/lr"] = self.policy_opt.param_groups[0]["lr"]
                metrics["time/steps_per_s"] = self.num_timesteps / (time.perf_counter() - started)
                if self.logger is not None:
                    self.logger(self.num_timesteps, metrics)
                bar.set_postfix(ret=f"{metrics['rollout/return_mean']:.3f}", refresh=False)
                rollouts += 1
                if (
                    resume_path is not None
                    and resume_every > 0
                    and rollouts % resume_every == 0
                    and self.num_timesteps < total_timesteps
                ):
                    atomic_torch_save(
                        resume_path,
                        {
                            **self._loop_state(total_timesteps),
                            "actions": torch.as_tensor(np.stack(action_log)),
                            "state": {k: getattr(state, k).cpu() for k in AgentState.FIELDS},
                            "starts": starts.cpu(),
                            "histories": [
                                _td_to_plain(torch.stack(h)) if h else None for h in histories
                            ],
                            "taken": [
                                (torch.stack([a for a, _ in t]), torch.tensor([r for _, r in t]))
                                if t
                                else (None, torch.zeros(0))
                                for t in taken
                            ],
                            "returns_now": torch.as_tensor(returns_now),
                            "done_returns": list(done_returns),
                            "done_success": list(done_success),
                        },
                    )
        finally:
            bar.close()
            envs.close()
        return self

    def _keep_episode(self, inputs: list[TensorDict], taken, result) -> None:
        """Hand a finished episode to the continued teacher's buffer."""
        final = batch_to_tensor(
            self.observation_space,
            stack_observations([result.final_observation], self.observation_space),
            1,
        )[0]
        self.online_teacher.buffer.add(
            finished_episode(
                inputs,
                [a for a, _ in taken],
                [r for _, r in taken],
                bool(result.terminated),
                final,
            )
        )

    @torch.no_grad()
    def _final_value(self, final_obs, memory, action, reward, step_count) -> float:
        """V of the final observation of a truncated episode (for bootstrapping)."""
        state = AgentState(
            memory[None],
            action[None].to(torch_dtype(self.action_space)),
            torch.tensor([reward], dtype=torch.float32, device=self.device),
            step_count[None] + 1,
        )
        inputs = self._step_inputs(
            [final_obs], state, torch.zeros(1, dtype=torch.bool, device=self.device)
        )
        x, _, m = self._advance(inputs, state)
        return float(self.policy.value(self._features(m, x))[0])

    def _ppo_update(self, batch: dict[str, torch.Tensor], last_value: torch.Tensor):
        """Clipped PPO on single steps of one rollout; GAE advantages. Heads only."""
        ppo = self.cfg.ppo
        rewards, dones, values = batch["reward"], batch["done"].float(), batch["value"]
        steps = rewards.shape[0]
        advantages = torch.zeros_like(rewards)
        gae = torch.zeros_like(last_value)
        for t in reversed(range(steps)):
            next_value = last_value if t == steps - 1 else values[t + 1]
            not_done = 1.0 - dones[t]
            delta = rewards[t] + ppo.gamma * next_value * not_done - values[t]
            gae = delta + ppo.gamma * ppo.gae_lambda * not_done * gae
            advantages[t] = gae
        returns = advantages + values
        features = self._features(batch["memory"].flatten(0, 1), batch["x"].flatten(0, 1))
        flat = {
            "features": features,
            "action": batch["action"].flatten(0, 1),
            "logp": batch["logp"].flatten(0, 1),
            "adv": advantages.flatten(),
            "ret": returns.flatten(),
        }
        n = features.shape[0]
        stats: dict[str, list[float]] = {
            "ppo/policy_loss": [],
            "ppo/value_loss": [],
            "ppo/entropy": [],
            "ppo/approx_kl": [],
            "ppo/clip_fraction": [],
        }
        for _ in range(ppo.epochs):
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for start in range(0, n, ppo.minibatch_size):
                idx = order[start : start + ppo.minibatch_size]
                dist, value = self.policy(flat["features"][idx])
                logp = dist.log_prob(flat["action"][idx])
                ratio = (logp - flat["logp"][idx]).exp()
                adv = flat["adv"][idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_loss = -torch.min(
                    ratio * adv, ratio.clamp(1 - ppo.clip, 1 + ppo.clip) * adv
                ).mean()
                value_loss = (value - flat["ret"][idx]).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = policy_loss + ppo.vf_coef * value_loss - ppo.ent_coef * entropy
                self.policy_opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), ppo.max_grad_norm)
                self.policy_opt.step()
                with torch.no_grad():
                    stats["ppo/policy_loss"].append(float(policy_loss))
                    stats["ppo/value_loss"].append(float(value_loss))
                    stats["ppo/entropy"].append(float(entropy))
                    stats["ppo/approx_kl"].append(float(((ratio - 1) - ratio.log()).mean()))
                    stats["ppo/clip_fraction"].append(
                        float(((ratio - 1).abs() > ppo.clip).float().mean())
                    )
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def _dmt_update(self, batch: dict[str, torch.Tensor], where) -> dict[str, float]:
        """Teacher labels for every visited step, then DMT updates of the cell from the replay."""
        labels, teacher_prev = self._teacher_labels(where)  # (T, N, K, d) each
        drift = float((batch["memory"] - labels).pow(2).mean())
        self.replay.add(
            batch["prev"].flatten(0, 1),
            batch["x"].flatten(0, 1),
            labels.flatten(0, 1),
            teacher_prev.flatten(0, 1),
        )
        losses = []
        for _ in range(self.cfg.onpolicy_dmt.updates_per_rollout):
            sample = self.replay.sample(self.cfg.onpolicy_dmt.batch_size, self.generator)
            # DAgger term: from the states the agent actually reached; anchor term: from the
            # teacher's own previous label (SMT's dynamics loss), which keeps f on the teacher's
            # manifold (DAgger alone drifted away and diverged in tests)
            pred = self.model.cell.step(sample["prev"], sample["x"])
            loss = (pred - sample["label"]).pow(2).mean()
            if self.cfg.onpolicy_dmt.anchor_coef > 0:
                anchored = self.model.cell.step(sample["teacher_prev"], sample["x"])
                loss = (
                    loss
                    + self.cfg.onpolicy_dmt.anchor_coef * (anchored - sample["label"]).pow(2).mean()
                )
            self.cell_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.cell.parameters(), 1.0)
            self.cell_opt.step()
            losses.append(float(loss.detach()))
        return {"dmt/loss": float(np.mean(losses)), "dmt/memory_mse": drift}

    @torch.no_grad()
    def _teacher_labels(self, where) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m*_t, m*_{t-1})`` for each (step, env) of a rollout, ``(T, N, K, d)`` each, from each
        episode's whole history so far (``m*_{-1}`` = the cell's initial state)."""
        episodes: dict[int, list[TensorDict]] = {}
        for step in where:
            for history, _ in step:
                episodes[id(history)] = history
        keys = list(episodes)
        batch = stack_padded([torch.stack(episodes[k]) for k in keys]).to(self.device)  # (E, L)
        labels = self.model.teacher(self.model.step_encoder(batch))  # (E, L, K, d)
        init = self.model.cell.initial_state(1)[0]
        slot = {k: i for i, k in enumerate(keys)}
        current = torch.stack(
            [torch.stack([labels[slot[id(h)], pos] for h, pos in step]) for step in where]
        )
        previous = torch.stack(
            [
                torch.stack([labels[slot[id(h)], pos - 1] if pos > 0 else init for h, pos in step])
                for step in where
            ]
        )
        return current, previous

    # ------------------------------------------------------------------ resuming
    def _loop_state(self, total_timesteps: int) -> dict[str, Any]:
        """The agent's side of a resume state: weights, optimisers, replay, RNG, counters."""
        teacher = self.online_teacher
        return {
            "total_timesteps": total_timesteps,
            "num_timesteps": self.num_timesteps,
            "modules": _Modules(self.model, self.policy).state_dict(),
            "policy_opt": self.policy_opt.state_dict(),
            "cell_opt": self.cell_opt.state_dict(),
            "replay": {
                "data": self.replay.data,
                "next": self.replay.next,
                "count": self.replay.count,
            },
            "teacher": None
            if teacher is None
            else {
                "optimizer": teacher.optimizer.state_dict(),
                "episodes": [_td_to_plain(e) for e in teacher.buffer.episodes],
                "next": teacher.buffer.next,
            },
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def _restore_loop(self, saved: dict[str, Any], total_timesteps: int) -> None:
        """Load :meth:`_loop_state`'s output back (the same run: same total_timesteps)."""
        if saved.get("total_timesteps") != total_timesteps:
            raise CheckpointError(
                "the RL resume state was written for total_timesteps="
                f"{saved.get('total_timesteps')}, this run asks for {total_timesteps}; resume "
                "with the same config or delete it."
            )
        _Modules(self.model, self.policy).load_state_dict(saved["modules"])
        self.policy_opt.load_state_dict(saved["policy_opt"])
        self.cell_opt.load_state_dict(saved["cell_opt"])
        data = saved["replay"]["data"]
        self.replay.data = None if data is None else {k: v.to(self.device) for k, v in data.items()}
        self.replay.next, self.replay.count = saved["replay"]["next"], saved["replay"]["count"]
        if self.online_teacher is not None and saved["teacher"] is not None:
            self.online_teacher.optimizer.load_state_dict(saved["teacher"]["optimizer"])
            self.online_teacher.buffer.episodes = [
                _td_from_plain(e) for e in saved["teacher"]["episodes"]
            ]
            self.online_teacher.buffer.next = saved["teacher"]["next"]
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        self.num_timesteps = int(saved["num_timesteps"])

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write the agent (SMT model + heads as safetensors, config and spaces as JSON)."""
        spec = {
            "kind": "smt_ppo_agent",
            # the model's own sizes: cfg.model may differ when the agent was built on a model
            "config": config_to_dict(self.cfg.model_copy(update={"model": self.model.cfg})),
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
            "num_timesteps": self.num_timesteps,
        }
        return save_checkpoint(path, _Modules(self.model, self.policy), spec)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        env_fn: Callable[[], gym.Env] | None = None,
        device: str = "auto",
    ) -> SMTPPO:
        """Rebuild a saved agent; never executes code from the files."""
        spec, tensors = read_checkpoint(path)
        if spec.get("kind") != "smt_ppo_agent":
            raise CheckpointError(f"{path} holds a {spec.get('kind')!r} checkpoint, not an agent.")
        with spec_fields(path):
            cfg = config_from_dict(TrainConfig, spec["config"], migrate=True)
            obs_space = space_from_dict(spec["observation_space"])
            act_space = space_from_dict(spec["action_space"])
        model = SMTModel(cfg.model, obs_space, act_space)
        features = model.cell.memory_size + cfg.model.embed_dim
        modules = _Modules(model, ActorCritic(features, act_space, cfg.ppo.hidden))
        load_weights(modules, tensors, str(path))
        agent = cls(model, cfg, env_fn, device, policy=modules.policy)
        agent.num_timesteps = int(spec.get("num_timesteps", 0))
        return agent
