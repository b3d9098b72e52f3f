"""Typed configuration of ``smt-rl train``: SMT pretraining plus the PPO x DMT agent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agents.baselines.config import GRUPPOConfig, RecurrentPPOConfig, SB3PPOConfig
from smt_rl.config import check_bounds
from smt_rl.smt.config import AT_LEAST_0, COUNT, FRACTION, PretrainConfig

ALGOS = ("smt_ppo", "ppo", "recurrent_ppo", "gru_ppo")  # what `algo` may name


@dataclass
class PPOConfig:
    """Clipped PPO with GAE on stored memory states (single-step minibatches)."""

    n_steps: int = 128  # steps per environment per rollout
    epochs: int = 4  # passes over each rollout
    minibatch_size: int = 256  # single steps per minibatch
    lr: float = 3e-4  # Adam learning rate of the actor/critic heads
    anneal_lr: bool = True  # decay lr linearly to 0 at total_timesteps (the last updates are
    # small, so a late unlucky update cannot leave the saved policy worse than the trained one)
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    clip: float = 0.2  # PPO ratio clip
    ent_coef: float = 0.01  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient clipping of the heads
    hidden: int = 128  # width of the actor/critic MLPs
    resume_every: int = 10  # rollouts between resume states of the PPO x DMT loop
    # (RUN_DIR/resume/rl_state.pt; a killed `smt-rl train` continues from the last one); 0: none


@dataclass
class DMTConfig:
    """On-policy DAgger over memory states, interleaved with PPO.

    Ablations: ``enabled=false`` keeps the memory cell frozen during RL; ``smt.updates=0
    smt.dmt_updates=0 teacher=continued`` trains the memory by DMT alone (no SMT pretraining).
    """

    enabled: bool = True  # train the memory cell on the agent's own visited states
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd (momentum 0.9): AdamW diverged online
    lr: float = 1e-3  # learning rate of the memory cell
    updates_per_rollout: int = 8  # DMT minibatch updates after each rollout
    batch_size: int = 256  # (memory, input, label) triples per DMT update
    replay_size: int = 50_000  # recent on-policy steps kept for DMT (DAgger aggregation)
    anchor_coef: float = 1.0  # weight of ||f(m*_{t-1}, x_t) - m*_t||^2 beside the DAgger term
    teacher: Literal["frozen", "continued"] = "frozen"  # continued: teacher + decoder keep
    # learning their predictive loss on the agent's finished episodes (step encoder stays frozen)
    teacher_lr: float = 1e-4  # AdamW learning rate of the continued teacher
    teacher_updates_per_rollout: int = 4  # teacher updates after each rollout (when continued)
    teacher_batch_episodes: int = 16  # finished episodes per teacher update
    teacher_buffer_episodes: int = 512  # finished on-policy episodes kept for the teacher


@dataclass
class EvalConfig:
    """Final deterministic evaluation on fresh seeds."""

    episodes: int = 100  # evaluation episodes
    deterministic: bool = True  # greedy actions
    seed_offset: int = 10_000  # evaluation envs are seeded with seed + seed_offset + i


@dataclass
class TrainConfig(PretrainConfig):
    """``smt-rl train``: collect, SMT-pretrain, PPO x DMT, evaluate."""

    algo: Literal["smt_ppo", "ppo", "recurrent_ppo", "gru_ppo"] = "smt_ppo"  # smt_ppo: this
    # project's agent; ppo (SB3, memoryless), recurrent_ppo (sb3-contrib LSTM), gru_ppo (torchrl
    # GRU): baselines, trained on the same env for total_timesteps and evaluated the same way
    total_timesteps: int = 50_000  # environment steps of the RL phase
    budget_includes_data: bool = False  # smt_ppo: total_timesteps also pays for the logged
    # pretraining data (RL gets total_timesteps - data steps), for equal-budget comparisons
    ppo: PPOConfig = field(default_factory=PPOConfig)  # policy optimisation
    dmt: DMTConfig = field(default_factory=DMTConfig)  # on-policy memory training
    eval: EvalConfig = field(default_factory=EvalConfig)  # final evaluation
    sb3_ppo: SB3PPOConfig = field(default_factory=SB3PPOConfig)  # algo: ppo
    recurrent_ppo: RecurrentPPOConfig = field(default_factory=RecurrentPPOConfig)  # algo:
    # recurrent_ppo
    gru_ppo: GRUPPOConfig = field(default_factory=GRUPPOConfig)  # algo: gru_ppo

    def __post_init__(self) -> None:
        super().__post_init__()  # the pretraining sections
        check_bounds(self, TRAIN_BOUNDS)


# Value ranges of the agent's sections, checked when a TrainConfig is built (the pretraining
# sections: smt_rl.smt.config.PRETRAIN_BOUNDS): dotted key -> (lowest, highest or None), inclusive.
TRAIN_BOUNDS: dict[str, tuple[float, float | None]] = {
    "total_timesteps": COUNT,
    **{f"ppo.{k}": COUNT for k in ("n_steps", "epochs", "minibatch_size", "hidden")},
    **{
        f"ppo.{k}": AT_LEAST_0
        for k in ("lr", "clip", "ent_coef", "vf_coef", "max_grad_norm", "resume_every")
    },
    **{f"ppo.{k}": FRACTION for k in ("gamma", "gae_lambda")},
    **{
        f"dmt.{k}": COUNT
        for k in ("batch_size", "replay_size", "teacher_batch_episodes", "teacher_buffer_episodes")
    },
    **{f"dmt.{k}": AT_LEAST_0 for k in ("lr", "updates_per_rollout", "anchor_coef", "teacher_lr")},
    "dmt.teacher_updates_per_rollout": AT_LEAST_0,
    "eval.episodes": COUNT,
    **{
        f"{section}.{k}": COUNT
        for section in ("sb3_ppo", "recurrent_ppo")
        for k in ("n_steps", "batch_size", "n_epochs", "hidden")
    },
    **{f"recurrent_ppo.{k}": COUNT for k in ("lstm_hidden_size", "n_lstm_layers")},
    **{
        f"gru_ppo.{k}": COUNT
        for k in ("frames_per_batch", "slice_len", "minibatch_slices", "epochs", "gru_hidden")
    },
    **{
        f"{section}.{k}": FRACTION
        for section in ("sb3_ppo", "recurrent_ppo", "gru_ppo")
        for k in ("gamma", "gae_lambda")
    },
}
