"""Baselines run by `smt-rl train` with ``algo: ppo | recurrent_ppo | gru_ppo``.

Each baseline agent offers the same surface as :class:`agents.smt_ppo.SMTPPO`, so the pipeline,
the evaluation and the benchmark harness treat all algorithms alike:

- ``Agent(cfg: TrainConfig, env_fn, device="auto")``; ``agent.logger`` (None or a callable
  ``(env_steps, metrics)``) receives one dict per rollout with at least ``rollout/return_mean``
  (mean return of the last 100 finished episodes), ``rollout/success_rate`` when the task reports
  success, and ``time/steps_per_s``;
- ``agent.learn(total_timesteps, progress_bar=False)``; ``agent.num_timesteps``;
- ``agent.predict(observation_batch, state, episode_start, deterministic, reward=None)`` ->
  ``(actions, state)`` (``reward`` is accepted and ignored by agents that do not read it);
- ``agent.save(folder)`` (safetensors + JSON: no pickle) and ``Agent.load(folder, env_fn=None,
  device="auto")``.
"""

from __future__ import annotations

from typing import Any

BASELINE_KINDS = {  # checkpoint "kind" -> algo
    "sb3_ppo_agent": "ppo",
    "recurrent_ppo_agent": "recurrent_ppo",
    "gru_ppo_agent": "gru_ppo",
}


def baseline_class(algo: str) -> Any:
    """The agent class of a baseline ``algo`` (imported on demand)."""
    if algo in ("ppo", "recurrent_ppo"):
        from agents.baselines.sb3 import RecurrentPPOAgent, SB3PPOAgent

        return SB3PPOAgent if algo == "ppo" else RecurrentPPOAgent
    if algo == "gru_ppo":
        from agents.baselines.gru_ppo import GRUPPOAgent

        return GRUPPOAgent
    raise ValueError(f"algo {algo!r} is not a baseline; choose one of ppo, recurrent_ppo, gru_ppo.")
