"""Config sections of the SMT agent (``algo: smt_ppo``): PPO, on-policy DMT, online teacher."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from smt_rl.config import ConfigModel, Count, Fraction, NonNegative, NonNegativeInt


class PPOConfig(ConfigModel):
    """Clipped PPO with GAE on stored memory states (single-step minibatches)."""

    n_steps: Count = Field(128, description="steps per environment per rollout")
    epochs: Count = Field(4, description="passes over each rollout")
    minibatch_size: Count = Field(256, description="single steps per minibatch")
    lr: NonNegative = Field(3e-4, description="Adam learning rate of the actor/critic heads")
    anneal_lr: bool = Field(
        True,
        description="decay lr linearly to 0 at total_timesteps (small last updates: a late bad "
        "update cannot spoil the saved policy)",
    )
    gamma: Fraction = Field(0.99, description="discount")
    gae_lambda: Fraction = Field(0.95, description="GAE lambda")
    clip: NonNegative = Field(0.2, description="PPO ratio clip")
    ent_coef: NonNegative = Field(0.01, description="entropy bonus (exploration)")
    vf_coef: NonNegative = Field(0.5, description="value loss weight")
    max_grad_norm: NonNegative = Field(0.5, description="gradient clipping of the heads")
    hidden: Count = Field(128, description="width of the actor/critic MLPs")
    decoder_features: bool = Field(
        False,
        description="the heads also read the reward the decoder predicts from the memory for "
        "each action (Discrete actions): what the memory already knows about the next reward",
    )
    decoder_prior: NonNegative = Field(
        0.0,
        description="add this times the decoder's predicted reward of each action (in units of "
        "the reward scale) to the policy's logits: one-step lookahead through the decoder, so "
        "the policy starts from what the memory predicts (needs decoder_features); 0: none",
    )
    resume_every: NonNegativeInt = Field(
        10,
        description="rollouts between resume states of the PPO x DMT loop (RUN_DIR/resume/"
        "rl_state.pt, where a killed `smt-rl train` continues); 0: none",
    )


class OnPolicyDMTConfig(ConfigModel):
    """On-policy DAgger over memory states, interleaved with PPO: the memory cell learns the
    teacher's labels of the histories the agent visits. ``enabled=false`` freezes it during RL."""

    enabled: bool = Field(True, description="train the memory cell on the agent's visited states")
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="optimiser of the memory cell (sgd: momentum 0.9)"
    )
    lr: NonNegative = Field(1e-3, description="learning rate of the memory cell")
    updates_per_rollout: NonNegativeInt = Field(8, description="DMT updates after each rollout")
    batch_size: Count = Field(256, description="(memory, input, label) triples per DMT update")
    replay_size: Count = Field(
        50_000, description="recent on-policy steps kept for DMT (DAgger aggregation)"
    )
    c_match: NonNegative = Field(
        0.0,
        description="weight of matching the decoder's features from the student's memory to "
        "those from the teacher's (what the memory predicts, not its coordinates)",
    )
    anchor_coef: NonNegative = Field(
        1.0,
        description="weight of ||f(m*_{t-1}, x_t) - m*_t||^2 beside the DAgger term (keeps f on "
        "the teacher's states)",
    )


class OnlineSMTConfig(ConfigModel):
    """SMT during RL: the teacher, decoder and memory module keep learning the full SMT loss on
    the agent's finished episodes (kept on disk in RUN_DIR/experience) mixed with the logged data,
    a few updates per environment step. Needed when there is no logged data (data.episodes=0)."""

    enabled: bool = Field(False, description="train the SMT model on the agent's experience")
    updates_per_step: NonNegative = Field(
        0.01, description="SMT updates per environment step (all environments counted)"
    )
    batch_size: Count = Field(16, description="windows per online SMT update")
    lr: NonNegative = Field(3e-4, description="AdamW learning rate (constant)")
    logged_fraction: Fraction = Field(
        0.5, description="share of each batch drawn from the logged data (the rest: experience)"
    )
    capacity_episodes: Count = Field(2000, description="finished episodes kept for sampling")
    min_episodes: Count = Field(16, description="finished episodes before the first update")
