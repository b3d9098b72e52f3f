"""Typed configuration of SMT pretraining (``smt-rl pretrain CONFIG [key=value ...]``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from smt_rl.config import ConfigModel, Count, Fraction, NonNegative, NonNegativeInt
from smt_rl.errors import ConfigError


class EnvConfig(ConfigModel):
    """Which task the data comes from."""

    id: str | None = Field(
        "smt_rl/PassiveTMaze-v0", description="registered gymnasium id (or a name for entry_point)"
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the environment's constructor"
    )
    entry_point: str | None = Field(
        None, description='"package.module:Class" of your own env, used instead of the id'
    )
    num_envs: Count = Field(8, description="environments the agent steps together")


class DataConfig(ConfigModel):
    """The logged trajectories SMT learns from."""

    path: str | None = Field(None, description="dataset folder; null: collect into RUN_DIR/data")
    episodes: NonNegativeInt = Field(
        2000,
        description="episodes to collect when path is null (0: no logged data; smt-rl train then "
        "needs online_smt.enabled to train the memory on the agent's own experience)",
    )
    num_envs: Count = Field(8, description="environments stepped together while collecting")
    policy: str = Field("random", description="behaviour policy of the collection")
    vectorization: Literal["sync", "async"] = Field(
        "sync", description="sync: envs in this process; async: a process per env (costly steps)"
    )
    val_fraction: Fraction = Field(
        0.1, description="share of episodes held out for the rollout and probe evaluation"
    )
    val_max_episodes: NonNegativeInt = Field(
        256, description="at most this many held-out episodes are evaluated (bounds eval time)"
    )


class ModelConfig(ConfigModel):
    """Sizes of the step encoder, teacher, decoder and memory cell."""

    embed_dim: Count = Field(64, description="D, width of the step embedding x_t")
    memory_tokens: Count = Field(4, description="K, tokens of the memory state")
    token_dim: Count = Field(16, description="d, width of a memory token (memory size Z = K * d)")
    teacher_width: Count = Field(64, description="attention width of the teacher encoder")
    teacher_layers: Count = Field(2, description="attention blocks of the teacher encoder")
    teacher_heads: Count = Field(4, description="attention heads of the teacher (divide the width)")
    teacher_rope: bool = Field(
        False, description="rotary position embeddings in the teacher attention"
    )
    context: Count = Field(1024, description="Tc, steps each teacher step attends to (itself too)")
    decoder_hidden: Count = Field(128, description="MLP width of the predictive decoder")
    horizon: Count = Field(1, description="Tf, future steps predicted from each memory")
    cell: Literal["gated", "transformer", "gru"] = Field(
        "gated", description="memory cell of the student (what the agent runs step by step)"
    )
    cell_hidden: Count = Field(256, description="hidden width of the memory cell")
    window_tokens: NonNegativeInt = Field(
        0,
        description="memory tokens that hold the last steps exactly (token i: step t-i, a FIFO "
        "shared by the student and the teacher's labels); the rest are learned. 0: none",
    )
    carry: bool = Field(
        False,
        description="the teacher also reads the memory before its window (its own label there, "
        "cached from earlier passes) as prefix tokens, and far targets reach past the window: "
        "labels chain window after window, so the horizon is not capped by model.context",
    )
    far_context: bool = Field(
        False,
        description="the far reward predictor also reads the step input at its target step, so "
        "the memory holds what that reward depends on given the view there",
    )
    return_head: bool = Field(
        False,
        description="a decoder head predicting the discounted return of the episode from each "
        "memory (weighed by smt.c_return): the memory keeps what the return depends on",
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        """Multi-head attention splits the width evenly between the heads."""
        width, heads = self.teacher_width, self.teacher_heads
        if self.window_tokens >= self.memory_tokens:
            raise ConfigError(
                f"config key 'model.window_tokens' ({self.window_tokens}) must be below "
                f"'model.memory_tokens' ({self.memory_tokens}): at least one token is learned. "
                f"Fix: raise model.memory_tokens or lower model.window_tokens."
            )
        if self.carry and self.far_context:
            raise ConfigError(
                "config key 'model.far_context' reads the step input at the far target's step, "
                "which model.carry puts past the window where it is not at hand. Fix: set "
                "model.far_context=false or model.carry=false."
            )
        if width % heads:
            raise ConfigError(
                f"config key 'model.teacher_width' ({width}) must be divisible by "
                f"'model.teacher_heads' ({heads}). Fix: change one of them, e.g. "
                f"model.teacher_heads={math.gcd(width, heads)}."
            )
        return self


class SMTConfig(ConfigModel):
    """Optimisation of the joint SMT phase (teacher, decoder and memory cell together)."""

    updates: NonNegativeInt = Field(1500, description="joint teacher + memory updates (0: none)")
    batch_size: Count = Field(32, description="sequences per update")
    seq_len: Count = Field(
        1024, description="longest sequence of a batch (whole episodes when they fit)"
    )
    lr: NonNegative = Field(1e-3, description="AdamW peak learning rate")
    weight_decay: NonNegative = Field(1e-4, description="AdamW weight decay")
    warmup: NonNegativeInt = Field(
        100, description="linear warm-up updates, then cosine decay to 10% of lr"
    )
    grad_clip: NonNegative = Field(1.0, description="max global gradient norm")
    c_pred: NonNegative = Field(1.0, description="weight of the predictive loss")
    c_dyn: NonNegative = Field(
        0.1, description="weight of the one-step dynamics loss ||f(m*_{t-1}, x_t) - m*_t||^2"
    )
    c_unif: NonNegative = Field(
        0.001, description="weight of the uniformity loss (keeps teacher memories apart)"
    )
    c_far: NonNegative = Field(
        1.0, description="weight of the far reward target inside the predictive loss"
    )
    c_term: NonNegative = Field(
        1.0, description="weight of the termination target inside the predictive loss"
    )
    c_obs: NonNegative = Field(
        1.0, description="weight of the next-observation target inside the predictive loss"
    )
    c_return: NonNegative = Field(
        0.0,
        description="weight of the discounted-return target (model.return_head) in the "
        "predictive loss; on the agent's experience it is the return of its recent policy",
    )
    return_gamma: Fraction = Field(0.99, description="discount of the return target")
    far_last_prob: Fraction = Field(
        0.5, description="chance that a far target is the window's last step (else uniform)"
    )
    dyn_input_noise: NonNegative = Field(
        0.0, description="std of noise on m*_{t-1} fed to f (robustness to its own drift)"
    )
    carry_stride: Count = Field(
        64,
        description="with model.carry, windows of long episodes start at multiples of this "
        "many steps: where the memory carried into a window is cached",
    )
    carry_start_prob: Fraction = Field(
        0.5,
        description="with model.carry, the chance that a window starts at its episode's start "
        "(else at a cut whose carried memory is known, uniformly)",
    )
    carry_stream_fraction: Fraction = Field(
        0.0,
        description="with model.carry, the share of a batch's rows that walk whole episodes "
        "window after window (carrying the label of one update ago, so cached labels come from "
        "fresh chains)",
    )
    eval_every: Count = Field(250, description="updates between evaluations (drift, probes)")
    log_every: Count = Field(25, description="updates between metric lines")
    checkpoint_every: NonNegativeInt = Field(
        100,
        description="updates between resume states (RUN_DIR/resume/state.pt, where a killed run "
        "continues); 0: only at the end of each phase",
    )
    compile: bool = Field(False, description="torch.compile the teacher (CUDA only)")


class OfflineDMTConfig(ConfigModel):
    """The offline DMT phase after SMT: the memory cell alone, unrolled on its own states over the
    logged data, learns the frozen teacher's labels."""

    updates: NonNegativeInt = Field(250, description="offline DMT updates (0: no offline DMT)")
    lr: NonNegative = Field(1e-4, description="learning rate of the memory cell")
    revert_if_worse: bool = Field(
        True, description="restore the pre-DMT cell if held-out rollouts got worse"
    )
    c_match: NonNegative = Field(
        0.0,
        description="weight of matching the decoder's features from the student's memory to "
        "those from the teacher's (what the memory predicts, not its coordinates)",
    )


class PretrainConfig(ConfigModel):
    """``smt-rl pretrain``: collect (if needed), SMT-pretrain, evaluate, checkpoint."""

    env: EnvConfig = Field(default_factory=EnvConfig, description="the task")
    data: DataConfig = Field(default_factory=DataConfig, description="logged trajectories")
    model: ModelConfig = Field(default_factory=ModelConfig, description="network sizes")
    smt: SMTConfig = Field(default_factory=SMTConfig, description="joint SMT optimisation")
    offline_dmt: OfflineDMTConfig = Field(
        default_factory=OfflineDMTConfig, description="offline DMT after SMT (teacher frozen)"
    )
    seed: int = Field(0, description="seeds collection, sampling and initialisation")
    out: str = Field("runs/smt", description="run folder (config, metrics, checkpoint, summary)")
    device: str = Field(
        "auto", description='"auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...'
    )
    threads: NonNegativeInt = Field(
        1,
        description="torch CPU threads of the process (set by the smt-rl command; benchmark runs "
        "also get OMP_NUM_THREADS); 0: torch's default (OMP_NUM_THREADS, else one per core)",
    )

    @model_validator(mode="after")
    def _carry_stride_fits_a_window(self) -> PretrainConfig:
        if self.model.carry and self.smt.carry_stride > self.smt.seq_len:
            raise ConfigError(
                f"config key 'smt.carry_stride' ({self.smt.carry_stride}) is longer than a "
                f"training window (smt.seq_len={self.smt.seq_len}): no window would reach the "
                f"next cut. Fix: smt.carry_stride={max(1, self.smt.seq_len // 4)}."
            )
        return self

    @model_validator(mode="after")
    def _return_target_has_a_head(self) -> PretrainConfig:
        if self.smt.c_return > 0 and not self.model.return_head:
            raise ConfigError(
                f"config key 'smt.c_return' ({self.smt.c_return}) weighs a return target, but "
                "the model has no head for it. Fix: set model.return_head=true, or smt.c_return=0."
            )
        return self
