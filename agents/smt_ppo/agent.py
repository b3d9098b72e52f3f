"""The SMT agent: PPO on the memory module's own state, refined on-policy by DMT. No BPTT.

Acting: ``m_t = f(m_{t-1}, x_t)`` (reset to the learned initial state at episode starts); the
actor and critic read ``[sg(m_t), sg(x_t)]``. Each rollout stores the memory the agent acted on,
so PPO trains on shuffled single steps. After each rollout the teacher labels every visited step
(seeing each environment's episode back to the start of its window, across rollout boundaries),
and the memory cell learns ``f(sg(m^s_{t-1}), x_t) -> m*_t`` on a replay of recent on-policy steps
(DAgger). With ``online_smt.enabled`` the teacher, the decoder and the memory module also keep
learning the SMT loss on the agent's finished episodes (``RUN_DIR/experience``) mixed with the
logged data; without any logged data that is how the memory learns at all.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict
from tqdm.auto import tqdm

from agents.base import AgentBase
from agents.config import TrainConfig
from agents.policy import ActorCritic
from agents.smt_ppo.loop import (
    RESUME_FIX,
    EpisodeStats,
    LearnerState,
    LoopState,
    loop_from_saved,
    read_resume_state,
    save_resume_state,
)
from agents.smt_ppo.ppo import anneal_lr, gae, ppo_update
from smt_rl.checkpoint import CheckpointError, resume_state_fits
from smt_rl.checks import check_finite
from smt_rl.data.dataset import TrajectoryDataset
from smt_rl.data.episodes import EpisodeAssembler
from smt_rl.data.experience import ExperienceStore
from smt_rl.data.vector import (
    done_mask,
    final_observations,
    final_successes,
    make_vector_env,
    step_actions,
)
from smt_rl.data.writer import env_description
from smt_rl.device import resolve_device
from smt_rl.errors import ConfigError, SpaceError
from smt_rl.faults import kill_point
from smt_rl.memory import MemoryRunner, MemoryState
from smt_rl.models.step_encoder import STEP_INPUT_KEYS
from smt_rl.records import check_record
from smt_rl.smt.dmt import OnPolicyDMT, VisitedHistories
from smt_rl.smt.model import SMTModel, check_model_fits
from smt_rl.smt.online import OnlineSMT
from smt_rl.spaces import (
    batch_size,
    batch_to_tensor,
    check_same_space,
    is_single_observation,
    stack_observations,
    tensor_to_numpy,
)

AgentState = MemoryState  # what predict() takes and returns between calls

DATASET_KEYS = (*STEP_INPUT_KEYS, "action", "next")  # a rollout's steps in the dataset layout
AGENT_KEYS = ("x", "prev", "memory", "action", "logp", "value", "bootstrap")  # and the agent's


class _Modules(torch.nn.Module):
    """Everything the agent saves: the SMT model (encoder, teacher, decoder, cell) and the heads."""

    def __init__(self, smt: SMTModel, policy: ActorCritic) -> None:
        super().__init__()
        self.smt, self.policy = smt, policy


def policy_features(
    memory: torch.Tensor, x: torch.Tensor, model: SMTModel | None = None
) -> torch.Tensor:
    """What the heads read: ``[m_t (N, K, d) flattened, x_t (N, D)] -> (N, Z + D)``; with
    ``model`` (``ppo.decoder_features``) also the reward its decoder predicts from ``m_t`` for each
    of the n actions, in units of its reward scale: ``(N, Z + D + n)``."""
    parts = [memory.flatten(1), x]
    if model is not None:
        parts.append(model.action_rewards(memory) / model.decoder.reward_scale)
    return torch.cat(parts, -1)


class SMTPPO(AgentBase):
    """PPO x DMT agent on an SMT-pretrained memory module (stable-baselines3-style API).

    Args:
        model: the SMT model (its step encoder stays frozen, its teacher too unless
            ``online_smt.enabled``; on-policy DMT trains its cell).
        cfg: the train config (``ppo``, ``onpolicy_dmt``, ``online_smt``, ``env.*``, ``smt``,
            ``seed`` are read).
        env_fn: builds one environment; needed by :meth:`learn`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        policy: actor/critic heads (new ones when None).
        logged: the logged dataset online SMT mixes in (None: experience only).
        experience_dir: where online SMT keeps the agent's episodes (None: a temporary folder).
    """

    kind = "smt_ppo_agent"
    resumes_exactly = True
    memory_prefix = "smt."

    def __init__(
        self,
        model: SMTModel,
        cfg: TrainConfig,
        env_fn: Callable[[], gym.Env] | None = None,
        device: str | torch.device = "auto",
        policy: ActorCritic | None = None,
        logged: TrajectoryDataset | None = None,
        experience_dir: str | os.PathLike | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.cfg, self.env_fn = cfg, env_fn
        self.model = model.to(self.device)
        for p in list(model.step_encoder.parameters()) + list(model.teacher.parameters()):
            p.requires_grad_(False)
        self.observation_space, self.action_space = model.observation_space, model.action_space
        self.memory = MemoryRunner(
            model.step_encoder, model.cell, self.observation_space, self.action_space
        )
        self.reads_decoder = cfg.ppo.decoder_features
        if self.reads_decoder and not isinstance(self.action_space, spaces.Discrete):
            raise ConfigError(
                f"ppo.decoder_features needs a Discrete action space, not {self.action_space}; "
                "set ppo.decoder_features=false."
            )
        features = model.cell.memory_size + model.cfg.embed_dim
        if self.reads_decoder:
            features += int(self.action_space.n)
        if cfg.ppo.decoder_prior and not self.reads_decoder:
            raise ConfigError(
                f"config key 'ppo.decoder_prior' ({cfg.ppo.decoder_prior}) adds the decoder's "
                "predicted rewards to the logits, which the heads then need to read. Fix: set "
                "ppo.decoder_features=true, or ppo.decoder_prior=0."
            )
        heads = policy or ActorCritic(
            features, self.action_space, cfg.ppo.hidden, reward_prior=cfg.ppo.decoder_prior
        )
        self.policy = heads.to(self.device)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.ppo.lr, eps=1e-5)
        dmt = cfg.onpolicy_dmt
        self.dmt = OnPolicyDMT(
            model,
            optimizer=dmt.optimizer,
            lr=dmt.lr,
            updates_per_rollout=dmt.updates_per_rollout,
            batch_size=dmt.batch_size,
            replay_size=dmt.replay_size,
            anchor_coef=dmt.anchor_coef,
            match_coef=dmt.c_match,
        )
        self.histories = VisitedHistories(model.cfg.context - 1)
        self.logged, self.experience_dir = logged, experience_dir
        self.online: OnlineSMT | None = None  # built by learn() when online_smt.enabled
        self.experience: ExperienceStore | None = None
        self.episodes = EpisodeAssembler(cfg.env.num_envs) if cfg.online_smt.enabled else None
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.num_timesteps = 0
        self.logger: Callable[[int, dict[str, float]], None] | None = None

    # ------------------------------------------------------------------ acting
    def initial_state(self, num_envs: int) -> MemoryState:
        """The memory state before any step of ``num_envs`` environments."""
        return self.memory.initial_state(num_envs)

    def _to_tensor(self, observations: Any, n: int) -> torch.Tensor | TensorDict:
        """A batch of ``n`` observations as a vector env returns them, as a tensor (or a
        TensorDict for Dict spaces) on the device."""
        return batch_to_tensor(self.observation_space, observations, n).to(self.device)

    def _observe(
        self, obs: torch.Tensor | TensorDict, state: MemoryState, starts: torch.Tensor
    ) -> TensorDict:
        """The step inputs ``(N,)`` for observations ``(N, ...)`` (checked finite)."""
        check_finite(
            {"observation": obs},
            lambda i: f"env {i}, episode step {0 if starts[i] else int(state.step_count[i])}",
        )
        return self.memory.inputs(obs, state, starts)

    @torch.no_grad()
    def predict(
        self,
        observation: Any,
        state: MemoryState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        reward: np.ndarray | None = None,
    ) -> tuple[np.ndarray, MemoryState]:
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
        if single:
            observation = stack_observations([observation], self.observation_space)
        n = batch_size(observation, self.observation_space)
        if state is None:
            state, episode_start = self.initial_state(n), np.ones(n, dtype=bool)
        starts = np.ones(n, dtype=bool) if episode_start is None else episode_start
        starts = torch.as_tensor(np.asarray(starts, bool)).reshape(n).to(self.device)
        if reward is not None:
            state.prev_reward = torch.as_tensor(
                np.asarray(reward), dtype=torch.float32, device=self.device
            ).reshape(n)
        inputs = self._observe(self._to_tensor(observation, n), state, starts)
        x, _, memory = self.memory.transition(inputs, state.memory)
        dist, _ = self.policy(self._features(memory, x))
        actions = dist.mode() if deterministic else dist.sample()
        new_state = MemoryState(
            memory,
            actions.to(state.prev_action.dtype),
            inputs["prev_reward"],
            inputs["step_count"] + 1,
        )
        out = self._to_env(actions)
        return (out[0] if single else out), new_state

    def _features(self, memory: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:func:`policy_features` as this agent's heads read them."""
        return policy_features(memory, x, self.model if self.reads_decoder else None)

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
        resume_every: int | None = None,
    ) -> SMTPPO:
        """Run PPO x DMT until ``num_timesteps`` reaches ``total_timesteps`` (env steps, summed
        over environments).

        Args:
            total_timesteps: env steps to reach (``num_timesteps`` counts from the agent's start).
            progress_bar: show a progress bar.
            resume_path: a file for the loop's resume state. Written atomically every
                ``resume_every`` rollouts; when it exists at the start, the loop continues from it
                exactly (see :mod:`agents.smt_ppo.loop`).
            resume_every: rollouts between resume states (default ``ppo.resume_every``; 0: none).
        """
        if self.env_fn is None:
            raise ValueError("SMTPPO.learn needs an environment: pass env_fn when building it.")
        cfg = self.cfg
        every = cfg.ppo.resume_every if resume_every is None else resume_every
        envs = self._make_envs()
        self._start_online_smt(resumable=resume_path is not None and every > 0)
        bar = tqdm(total=total_timesteps, disable=not progress_bar, desc="train", unit="step")
        try:
            loop = self._start_loop(envs, total_timesteps, resume_path)
            bar.update(self.num_timesteps)
            first_step, started = self.num_timesteps, time.perf_counter()
            while self.num_timesteps < total_timesteps:
                if cfg.ppo.anneal_lr:
                    anneal_lr(self.policy_opt, cfg.ppo.lr, self.num_timesteps / total_timesteps)
                rollout, last_value = self._collect_rollout(envs, loop, bar)
                kill_point("rl.rollout")
                metrics = self._ppo_update(rollout, last_value)
                history = self.histories.extend(rollout.select(*STEP_INPUT_KEYS))
                if cfg.onpolicy_dmt.enabled:
                    metrics.update(
                        self.dmt.update(
                            rollout, history, self.generator, remember=self.histories.remember
                        )
                    )
                if self.online is not None:
                    metrics.update(self._online_smt_update(rollout))
                metrics.update(loop.stats.metrics())
                metrics["ppo/lr"] = self.policy_opt.param_groups[0]["lr"]
                elapsed = time.perf_counter() - started
                metrics["time/steps_per_s"] = (self.num_timesteps - first_step) / elapsed
                if self.logger is not None:
                    self.logger(self.num_timesteps, metrics)
                bar.set_postfix(ret=f"{metrics['rollout/return_mean']:.3f}", refresh=False)
                loop.rollouts += 1
                due = every > 0 and loop.rollouts % every == 0
                if resume_path is not None and due and self.num_timesteps < total_timesteps:
                    save_resume_state(resume_path, self._learner_state(total_timesteps), loop)
        finally:
            bar.close()
            envs.close()
        return self

    def _make_envs(self) -> gym.vector.VectorEnv:
        """``env.num_envs`` environments, reset in the same step when an episode ends."""
        envs = make_vector_env(self.env_fn, self.cfg.env.num_envs)
        fix = "build the agent on a model pretrained on this task, or wrap the env to match."
        try:
            check_same_space(
                self.observation_space, envs.single_observation_space, "observation_space", fix
            )
            check_same_space(self.action_space, envs.single_action_space, "action_space", fix)
        except SpaceError:
            envs.close()
            raise
        return envs

    def _start_loop(
        self, envs: gym.vector.VectorEnv, total_timesteps: int, resume_path: Any
    ) -> LoopState:
        """A fresh loop on freshly seeded environments, or the one a resume state left."""
        observations, _ = envs.reset(seed=self.cfg.seed)
        n = envs.num_envs
        saved = None if resume_path is None else read_resume_state(resume_path, total_timesteps)
        if saved is None:
            if self.num_timesteps == 0:
                # actions are drawn from torch's global stream: seed it, so that a new agent acts
                # the same whatever ran before in this process (a pretraining, or none when a
                # finished one is reused)
                torch.manual_seed(self.cfg.seed)
            return LoopState(
                observations=self._to_tensor(observations, n),
                memory=self.initial_state(n),
                starts=torch.ones(n, dtype=torch.bool, device=self.device),
                stats=EpisodeStats(np.zeros(n)),
            )
        self._load_learner_state(saved, resume_path)
        for actions in saved["actions"]:  # the environments go through the same steps again
            observations = envs.step(step_actions(actions.numpy()))[0]
        with resume_state_fits(resume_path, RESUME_FIX):
            return loop_from_saved(saved, self._to_tensor(observations, n), self.device)

    @torch.no_grad()
    def _collect_rollout(
        self, envs: gym.vector.VectorEnv, loop: LoopState, bar: tqdm
    ) -> tuple[TensorDict, torch.Tensor]:
        """``ppo.n_steps`` steps of every environment: the rollout ``(T, N)`` in the dataset
        layout plus what the agent computed (``x``, ``prev``, ``memory``, ``logp``, ``value``,
        ``bootstrap``), and V of the observation after its last step ``(N,)``."""
        inputs_seen: list[TensorDict] = []  # the step inputs (N,) of each step
        computed: dict[str, list] = defaultdict(list)  # what the agent and the envs gave
        for _ in range(self.cfg.ppo.n_steps):
            inputs = self._observe(loop.observations, loop.memory, loop.starts)
            x, prev, memory = self.memory.transition(inputs, loop.memory.memory)
            dist, value = self.policy(self._features(memory, x))
            action = dist.sample()
            logp = dist.log_prob(action)
            env_actions = self._to_env(action.cpu())
            loop.actions.append(np.asarray(env_actions))
            observations, reward, terminated, truncated, info = envs.step(step_actions(env_actions))
            done = done_mask(terminated, truncated)
            next_obs = self._to_tensor(observations, envs.num_envs)
            finals = self._final_observations(info)
            loop.stats.record(reward, done, final_successes(info, envs.num_envs))
            reward_t = torch.as_tensor(reward, dtype=torch.float32, device=self.device)
            check_finite(
                {"reward": reward_t},
                lambda i, t=inputs["step_count"]: f"env {i}, episode step {int(t[i])}",
            )
            action = action.to(loop.memory.prev_action.dtype)
            step_count = inputs["step_count"]
            bootstrap = self._truncation_bootstrap(
                finals, truncated, memory, action, reward_t, step_count
            )
            inputs_seen.append(inputs)
            for key, value_ in (
                ("x", x),
                ("prev", prev),
                ("memory", memory),
                ("action", action),
                ("logp", logp),
                ("value", value),
                ("bootstrap", bootstrap),
                ("next_observation", self._next_observations(next_obs, finals)),
                ("reward", reward_t),
                ("terminated", terminated),
                ("truncated", truncated),
                ("done", done),
            ):
                computed[key].append(value_)
            loop.observations = next_obs
            loop.memory = MemoryState(memory, action, reward_t, step_count + 1)
            loop.starts = torch.as_tensor(done, device=self.device)
            self.num_timesteps += envs.num_envs
            bar.update(envs.num_envs)
        inputs = self._observe(loop.observations, loop.memory, loop.starts)
        x, _, memory = self.memory.transition(inputs, loop.memory.memory)
        return self._rollout(inputs_seen, computed), self.policy.value(self._features(memory, x))

    def _rollout(self, inputs: list[TensorDict], computed: dict[str, list]) -> TensorDict:
        """The steps of a rollout as one TensorDict ``(T, N)`` (see :meth:`_collect_rollout`)."""
        rollout = torch.stack(inputs)
        stack = {
            k: torch.stack(v)
            if torch.is_tensor(v[0]) or isinstance(v[0], TensorDict)
            else torch.as_tensor(np.stack(v), device=self.device)
            for k, v in computed.items()
        }
        rollout.update({k: stack.pop(k) for k in AGENT_KEYS})
        rollout["next"] = TensorDict(
            {k.removeprefix("next_"): v for k, v in stack.items()}, batch_size=rollout.batch_size
        )
        return rollout

    def _final_observations(self, info: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """``(envs (F,), observations (F, ...))``: the last observations of the episodes that
        ended in a step, as tensors on the device (F = 0 when none did)."""
        if "_final_obs" not in info:
            return torch.zeros(0, dtype=torch.int64, device=self.device), None
        envs, batch = final_observations(info, self.observation_space)
        return torch.as_tensor(envs, device=self.device), self._to_tensor(batch, len(envs))

    def _next_observations(
        self, obs: torch.Tensor | TensorDict, finals: tuple[torch.Tensor, Any]
    ) -> torch.Tensor | TensorDict:
        """``o_{t+1}`` of every environment ``(N, ...)``: the final observation of an episode that
        ended, else the observation the environment returned (``obs``, left unchanged)."""
        envs, final = finals
        if not len(envs):
            return obs
        batch = obs.clone()
        batch[envs] = final
        return batch

    def _truncation_bootstrap(
        self,
        finals: tuple[torch.Tensor, Any],
        truncated: np.ndarray,
        memory: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        step_count: torch.Tensor,
    ) -> torch.Tensor:
        """``gamma * V(o_final)`` ``(N,)`` where an episode was cut by a time limit (its value
        did not end), else 0; V reads the memory after the final observation."""
        bootstrap = torch.zeros(truncated.shape[0], device=self.device)
        envs, final = finals
        cut = torch.as_tensor(truncated, device=self.device)[envs] if len(envs) else envs
        if not len(envs) or not bool(cut.any()):
            return bootstrap
        rows, final = envs[cut], final[cut]
        state = MemoryState(memory[rows], action[rows], reward[rows], step_count[rows] + 1)
        starts = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        inputs = self.memory.inputs(final, state, starts)
        check_finite({"observation": final}, lambda i: f"env {int(rows[i])}, final observation")
        x, _, after = self.memory.transition(inputs, state.memory)
        bootstrap[rows] = self.cfg.ppo.gamma * self.policy.value(self._features(after, x))
        return bootstrap

    def _ppo_update(self, rollout: TensorDict, last_value: torch.Tensor) -> dict[str, float]:
        """GAE over the rollout, then clipped PPO on its shuffled single steps (heads only)."""
        ppo = self.cfg.ppo
        rewards = rollout["next", "reward"] + rollout["bootstrap"]
        advantages, returns = gae(
            rewards,
            rollout["value"],
            rollout["next", "done"],
            last_value,
            ppo.gamma,
            ppo.gae_lambda,
        )
        flat = rollout.flatten(0, 1)
        steps = {
            "features": self._features(flat["memory"], flat["x"]),
            "action": flat["action"],
            "logp": flat["logp"],
            "advantage": advantages.flatten(),
            "return": returns.flatten(),
        }
        where = f" at env step {self.num_timesteps}"
        return ppo_update(self.policy, self.policy_opt, steps, ppo, self.generator, where)

    def _start_online_smt(self, resumable: bool) -> None:
        """Online SMT and the experience store it learns from (``online_smt.enabled``)."""
        if self.episodes is None or self.online is not None:
            return
        cfg, online = self.cfg, self.cfg.online_smt
        folder = self.experience_dir
        if folder is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="smt_rl_experience_")
            folder = Path(self._temporary.name) / "experience"
        env = env_description(cfg.env.id, cfg.env.kwargs, cfg.env.entry_point)
        self.experience = ExperienceStore(
            folder,
            env,
            self.observation_space,
            self.action_space,
            online.capacity_episodes,
            evict_on_save=resumable,
        )
        self.online = OnlineSMT(
            self.model,
            cfg.smt,
            self.experience,
            self.logged,
            lr=online.lr,
            batch_size=online.batch_size,
            updates_per_step=online.updates_per_step,
            logged_fraction=online.logged_fraction,
            min_episodes=online.min_episodes,
            generator=self.generator,
            device=self.device,
        )

    def _online_smt_update(self, rollout: TensorDict) -> dict[str, float]:
        """Store the episodes that ended in the rollout, then the SMT updates it earned."""
        self.experience.add(self.episodes.add(rollout.select(*DATASET_KEYS).cpu()))
        return self.online.update(rollout.numel())

    # ------------------------------------------------------------------ resuming
    def _learner_state(self, total_timesteps: int) -> dict[str, Any]:
        """The agent's side of a resume state: weights, optimisers, replays, RNG, counters."""
        return {
            "total_timesteps": total_timesteps,
            "num_timesteps": self.num_timesteps,
            "modules": _Modules(self.model, self.policy).state_dict(),
            "policy_opt": self.policy_opt.state_dict(),
            "dmt": self.dmt.state_dict(),
            "histories": self.histories.state_dict(),
            "online_smt": None if self.online is None else self.online.state_dict(),
            "experience": None if self.experience is None else self.experience.state_dict(),
            "episodes": None if self.episodes is None else self.episodes.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def _load_learner_state(self, saved: dict[str, Any], path: str | os.PathLike) -> None:
        """Load :meth:`_learner_state`'s output back, read from the resume state at ``path``.

        Raises:
            CheckpointError: a field is missing, of the wrong type, or does not fit this agent
                (the message names ``path``).
        """
        check_record(LearnerState, saved, path, CheckpointError, RESUME_FIX)
        with resume_state_fits(path, RESUME_FIX):
            _Modules(self.model, self.policy).load_state_dict(saved["modules"])
            self.policy_opt.load_state_dict(saved["policy_opt"])
            self.dmt.load_state_dict(saved["dmt"], self.device)
            self.histories.load_state_dict(saved["histories"], self.device)
            if self.online is not None and saved["online_smt"] is not None:
                self.online.load_state_dict(saved["online_smt"])
                self.experience.load_state_dict(saved["experience"])
                self.episodes.load_state_dict(saved["episodes"])
            self.generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
        self.num_timesteps = saved["num_timesteps"]

    # ------------------------------------------------------------------ saving
    def saved_module(self) -> torch.nn.Module:
        return _Modules(self.model, self.policy)

    def saved_config(self) -> TrainConfig:
        # the model's own sizes: cfg.model may differ when the agent was built on a model
        return self.cfg.model_copy(update={"model": self.model.cfg})

    @classmethod
    def _restore(
        cls,
        cfg: TrainConfig,
        env_fn: Callable[[], gym.Env] | None,
        device: str | torch.device,
        observation_space: spaces.Space,
        action_space: spaces.Space,
    ) -> SMTPPO:
        return cls(SMTModel(cfg.model, observation_space, action_space), cfg, env_fn, device)

    @classmethod
    def check_config(
        cls, cfg: TrainConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        """The SMT model must fit in memory (checked without allocating it)."""
        check_model_fits(cfg.model, observation_space, action_space)

    @classmethod
    def check_run(cls, cfg: TrainConfig, run_dir: Path) -> None:
        """The data and pretraining ``run_dir`` holds fit ``cfg``
        (:func:`agents.pretraining.check_pretraining`), and so does its RL resume state (the
        same RL budget)."""
        from agents.pipeline import RL_RESUME_FILE
        from agents.pretraining import check_pretraining

        data_steps = check_pretraining(cfg, run_dir)
        if data_steps is not None:
            fix = (
                f"continue that run with `smt-rl train --resume {run_dir}`, choose another out=, "
                "or delete the state to start the RL phase over."
                if (run_dir / "config.yaml").is_file()
                else "choose another out=, or delete it to start the RL phase over."
            )
            read_resume_state(run_dir / RL_RESUME_FILE, cfg.rl_timesteps(data_steps), fix)

    @classmethod
    def from_config(
        cls, cfg: TrainConfig, env_fn: Callable[[], gym.Env], run_dir: Path, progress: bool
    ) -> SMTPPO:
        """The agent on the SMT model pretrained for ``cfg`` (into ``RUN_DIR/pretrain``, unless
        a finished pretraining with the same settings is there already)."""
        from agents.pretraining import pretrained_model

        env = env_fn()
        spaces_ = env.observation_space, env.action_space
        env.close()
        model, logged, figures = pretrained_model(cfg, run_dir, progress, *spaces_)
        torch.manual_seed(cfg.seed)  # the heads start the same, pretrained now or reused
        experience = run_dir / "experience"
        agent = cls(model, cfg, env_fn, cfg.device, logged=logged, experience_dir=experience)
        agent.data_steps = 0 if logged is None else logged.num_steps
        agent.summary = figures
        return agent
