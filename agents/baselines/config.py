"""Typed settings of the baselines that `smt-rl train` runs with ``algo: ppo | recurrent_ppo |
gru_ppo``. Each config file may set its own per-task values; these defaults suit small tasks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SB3PPOConfig:
    """stable-baselines3 ``PPO`` with an MLP policy (``algo: ppo``): no memory, the lower bound."""

    n_steps: int = 128  # steps per environment per rollout
    batch_size: int = 256  # steps per minibatch
    n_epochs: int = 10  # passes over each rollout
    lr: float = 1e-3  # Adam learning rate
    anneal_lr: bool = True  # decay lr linearly to 0 at total_timesteps (as smt_ppo does)
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.8  # GAE lambda
    clip_range: float = 0.2  # PPO ratio clip
    ent_coef: float = 0.0  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient clipping
    hidden: int = 64  # width of the two hidden layers of the policy and value MLPs


@dataclass
class RecurrentPPOConfig(SB3PPOConfig):
    """sb3-contrib ``RecurrentPPO`` with ``MlpLstmPolicy`` (``algo: recurrent_ppo``): an LSTM
    trained by backpropagation through time over each rollout's sequences.

    Defaults follow rl-baselines3-zoo's ``ppo_lstm`` settings for small partially observable
    tasks (lr 1e-3, 10 epochs, GAE lambda 0.8, no entropy bonus, LSTM 64, critic with its own
    LSTM): on PassiveTMaze length 10 they learn in ~40k steps, where lr 3e-4 / 4 epochs / entropy
    0.01 / LSTM 128 had not learned in 100k. BPTT spans at most ``n_steps`` steps."""

    lstm_hidden_size: int = 64  # LSTM width
    n_lstm_layers: int = 1  # stacked LSTM layers
    enable_critic_lstm: bool = (
        True  # the value function gets its own LSTM (else shares the actor's)
    )


@dataclass
class GRUPPOConfig:
    """torchrl recurrent PPO (``algo: gru_ppo``): ``GRUModule`` + ``Collector`` + ``GAE`` +
    ``ClipPPOLoss``; the GRU is trained by backpropagation through time over slices of
    ``slice_len`` consecutive steps (hidden state at a slice start taken from the rollout)."""

    frames_per_batch: int = 1024  # env steps per collected batch (all environments together)
    slice_len: int = 128  # BPTT length: steps per training sequence
    minibatch_slices: int = 4  # sequences per minibatch
    epochs: int = 10  # passes over each batch
    lr: float = 1e-3  # Adam learning rate
    anneal_lr: bool = True  # decay lr linearly to 0 at total_timesteps
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.8  # GAE lambda
    clip: float = 0.2  # PPO ratio clip
    ent_coef: float = 0.0  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient clipping
    gru_hidden: int = 64  # GRU width
    hidden: int = 64  # width of the MLPs before and after the GRU
