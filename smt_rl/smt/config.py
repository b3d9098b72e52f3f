"""Typed configuration of SMT pretraining (``smt-rl pretrain CONFIG [key=value ...]``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from smt_rl.config import check_bounds
from smt_rl.errors import ConfigError


@dataclass
class EnvConfig:
    """Which task the data comes from."""

    id: str | None = "smt_rl/PassiveTMaze-v0"  # registered gymnasium id (or a name for entry_point)
    kwargs: dict[str, Any] = field(default_factory=dict)  # environment constructor arguments
    entry_point: str | None = None  # "package.module:Class" of your own env (instead of the id)
    num_envs: int = 8  # environments stepped together by the agent (collection: data.num_envs)


@dataclass
class DataConfig:
    """The logged trajectories SMT learns from."""

    path: str | None = None  # dataset folder; None: collect into RUN_DIR/data first
    episodes: int = 2000  # episodes to collect when path is None
    num_envs: int = 8  # environments stepped together while collecting
    policy: str = "random"  # behaviour policy for collection
    vectorization: Literal["sync", "async"] = "sync"  # sync: envs stepped in this process;
    # async: one worker process per env (gymnasium AsyncVectorEnv), for envs with costly steps
    val_fraction: float = 0.1  # share of episodes held out for rollout/probe evaluation
    val_max_episodes: int = 256  # at most this many held-out episodes are evaluated


@dataclass
class ModelConfig:
    """Sizes of the step encoder, teacher, decoder and memory cell."""

    embed_dim: int = 64  # D, width of the step embedding x_t
    memory_tokens: int = 4  # K, memory tokens
    token_dim: int = 16  # d, width of each memory token (memory size Z = K * d)
    teacher_width: int = 64  # attention width of the teacher encoder
    teacher_layers: int = 2  # attention blocks of the teacher encoder
    teacher_heads: int = 4  # attention heads of the teacher encoder
    teacher_rope: bool = False  # rotary position embeddings in the teacher attention (off: no
    # gain on RepeatPrevious, and on-policy drift at T-maze 20 rose from ~0.02 to 0.05)
    context: int = 1024  # Tc, steps each teacher step attends to (itself included)
    decoder_hidden: int = 128  # MLP width of the predictive decoder
    horizon: int = 1  # Tf, future steps predicted from each memory
    cell: Literal["gated", "transformer", "gru"] = "gated"  # memory cell of the student
    cell_hidden: int = 256  # hidden width of the memory cell
    far_context: bool = False  # the far target's reward predictor also reads the step input at its
    # target step (what the agent sees there): the memory must then hold what that reward depends
    # on given the view, e.g. MiniGrid-Memory's start object when facing an end object


@dataclass
class SMTConfig:
    """Optimisation of the joint SMT phase and the offline DMT phase that follows it."""

    updates: int = 1500  # joint teacher + memory updates
    batch_size: int = 32  # sequences per update
    seq_len: int = 1024  # longest sequence per batch (whole episodes when they fit)
    lr: float = 1e-3  # AdamW learning rate (peak)
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup: int = 100  # linear warm-up updates, then cosine decay to 10% of lr
    grad_clip: float = 1.0  # max global gradient norm
    c_pred: float = 1.0  # weight of the predictive loss
    c_dyn: float = 0.1  # weight of the one-step dynamics loss ||f(m*_{t-1}, x_t) - m*_t||^2
    c_unif: float = 0.001  # weight of the uniformity loss on teacher memories
    c_far: float = 1.0  # weight of the far reward target inside the predictive loss
    c_term: float = 1.0  # weight of the termination target inside the predictive loss
    c_obs: float = 1.0  # weight of the next-observation target inside the predictive loss
    far_last_prob: float = 0.5  # chance a far target is the window's last step (else uniform)
    dyn_input_noise: float = 0.0  # std of noise added to m*_{t-1} fed to f (robustness to drift)
    dmt_updates: int = 250  # offline DMT updates (teacher frozen, student on its own states)
    dmt_lr: float = 1e-4  # offline DMT learning rate (1e-3 broke a working module at length 200)
    dmt_revert_if_worse: bool = True  # restore the pre-DMT module if held-out rollouts got worse
    eval_every: int = 250  # updates between evaluations (rollout drift, probes)
    log_every: int = 25  # updates between metric lines
    checkpoint_every: int = 100  # updates between resume states (RUN_DIR/resume/state.pt; a
    # killed run continues from the last one); 0: only at the end of each phase
    compile: bool = False  # torch.compile the teacher (CUDA only)


@dataclass
class PretrainConfig:
    """``smt-rl pretrain``: collect (if needed), SMT-pretrain, evaluate, checkpoint."""

    env: EnvConfig = field(default_factory=EnvConfig)  # the task
    data: DataConfig = field(default_factory=DataConfig)  # logged trajectories
    model: ModelConfig = field(default_factory=ModelConfig)  # network sizes
    smt: SMTConfig = field(default_factory=SMTConfig)  # optimisation
    seed: int = 0  # seeds collection, sampling and initialisation
    out: str = "runs/smt"  # run folder (config, metrics, checkpoint, summary)
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...

    def __post_init__(self) -> None:
        check_bounds(self, PRETRAIN_BOUNDS)
        width, heads = self.model.teacher_width, self.model.teacher_heads
        if width % heads:
            raise ConfigError(
                f"config key 'model.teacher_width' ({width}) must be divisible by "
                f"'model.teacher_heads' ({heads}). Fix: change one of them, e.g. "
                f"model.teacher_heads={math.gcd(width, heads)}."
            )


COUNT, AT_LEAST_0, FRACTION = (1, None), (0, None), (0, 1)
# Value ranges checked when a PretrainConfig (or a TrainConfig) is built: dotted key -> (lowest,
# highest or None), inclusive. Sizes and counts of things that must exist are >= 1; counts of
# optional work, rates and weights are >= 0.
PRETRAIN_BOUNDS: dict[str, tuple[float, float | None]] = {
    "env.num_envs": COUNT,
    **{f"data.{k}": COUNT for k in ("episodes", "num_envs")},
    "data.val_fraction": FRACTION,
    "data.val_max_episodes": AT_LEAST_0,
    **{
        f"model.{k}": COUNT
        for k in (
            "embed_dim",
            "memory_tokens",
            "token_dim",
            "teacher_width",
            "teacher_layers",
            "teacher_heads",
            "context",
            "decoder_hidden",
            "horizon",
            "cell_hidden",
        )
    },
    **{f"smt.{k}": COUNT for k in ("batch_size", "seq_len", "eval_every", "log_every")},
    **{
        f"smt.{k}": AT_LEAST_0
        for k in (
            "updates",
            "lr",
            "weight_decay",
            "warmup",
            "grad_clip",
            "c_pred",
            "c_dyn",
            "c_unif",
            "c_far",
            "c_term",
            "c_obs",
            "dyn_input_noise",
            "dmt_updates",
            "dmt_lr",
            "checkpoint_every",
        )
    },
    "smt.far_last_prob": FRACTION,
}
