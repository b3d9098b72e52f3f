"""Typed settings of the baselines that `smt-rl train` runs with ``algo: ppo | recurrent_ppo |
gru_ppo``. Each config file may set its own per-task values; these defaults suit small tasks."""

from __future__ import annotations

from pydantic import Field

from smt_rl.config import ConfigModel, Count, Fraction, NonNegative


class SB3PPOConfig(ConfigModel):
    """stable-baselines3 ``PPO`` with an MLP policy (``algo: ppo``): no memory, the lower bound."""

    n_steps: Count = Field(128, description="steps per environment per rollout")
    batch_size: Count = Field(256, description="steps per minibatch")
    n_epochs: Count = Field(10, description="passes over each rollout")
    lr: NonNegative = Field(1e-3, description="Adam learning rate")
    anneal_lr: bool = Field(
        True, description="decay lr linearly to 0 at total_timesteps (as smt_ppo does)"
    )
    gamma: Fraction = Field(0.99, description="discount")
    gae_lambda: Fraction = Field(0.8, description="GAE lambda")
    clip_range: NonNegative = Field(0.2, description="PPO ratio clip")
    ent_coef: NonNegative = Field(0.0, description="entropy bonus")
    vf_coef: NonNegative = Field(0.5, description="value loss weight")
    max_grad_norm: NonNegative = Field(0.5, description="gradient clipping")
    hidden: Count = Field(64, description="width of the two hidden layers of policy and value")


class RecurrentPPOConfig(SB3PPOConfig):
    """sb3-contrib ``RecurrentPPO`` with ``MlpLstmPolicy`` (``algo: recurrent_ppo``): an LSTM
    trained by backpropagation through time over each rollout's sequences (at most ``n_steps``
    steps). Defaults follow rl-baselines3-zoo's ``ppo_lstm`` settings for small partially
    observable tasks."""

    lstm_hidden_size: Count = Field(64, description="LSTM width")
    n_lstm_layers: Count = Field(1, description="stacked LSTM layers")
    enable_critic_lstm: bool = Field(
        True, description="the value function gets its own LSTM (else it shares the actor's)"
    )


class GRUPPOConfig(ConfigModel):
    """torchrl recurrent PPO (``algo: gru_ppo``): ``GRUModule`` + ``Collector`` + ``GAE`` +
    ``ClipPPOLoss``; the GRU is trained by backpropagation through time over slices of
    ``slice_len`` consecutive steps (hidden state at a slice start taken from the rollout)."""

    frames_per_batch: Count = Field(
        1024, description="env steps per collected batch (all environments together)"
    )
    slice_len: Count = Field(128, description="BPTT length: steps per training sequence")
    minibatch_slices: Count = Field(4, description="sequences per minibatch")
    epochs: Count = Field(10, description="passes over each batch")
    lr: NonNegative = Field(1e-3, description="Adam learning rate")
    anneal_lr: bool = Field(True, description="decay lr linearly to 0 at total_timesteps")
    gamma: Fraction = Field(0.99, description="discount")
    gae_lambda: Fraction = Field(0.8, description="GAE lambda")
    clip: NonNegative = Field(0.2, description="PPO ratio clip")
    ent_coef: NonNegative = Field(0.0, description="entropy bonus")
    vf_coef: NonNegative = Field(0.5, description="value loss weight")
    max_grad_norm: NonNegative = Field(0.5, description="gradient clipping")
    gru_hidden: Count = Field(64, description="GRU width")
    hidden: Count = Field(64, description="width of the MLPs before and after the GRU")
