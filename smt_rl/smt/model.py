"""The SMT model: step encoder, teacher encoder, predictive decoder and memory cell, together."""

from __future__ import annotations

import torch
from gymnasium import spaces
from tensordict import TensorDictBase
from torch import nn

from smt_rl.models import CELLS, PredictiveDecoder, StepEncoder, TeacherEncoder
from smt_rl.smt.config import ModelConfig


class SMTModel(nn.Module):
    """Everything SMT trains; the agent later runs only ``step_encoder`` and ``cell``.

    Args:
        cfg: sizes.
        observation_space: single-environment observation space.
        action_space: single-environment action space.
    """

    def __init__(
        self, cfg: ModelConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.observation_space, self.action_space = observation_space, action_space
        self.step_encoder = StepEncoder(observation_space, action_space, cfg.embed_dim)
        self.teacher = TeacherEncoder(
            cfg.embed_dim,
            cfg.teacher_width,
            cfg.teacher_layers,
            cfg.teacher_heads,
            cfg.context,
            cfg.memory_tokens,
            cfg.token_dim,
        )
        self.decoder = PredictiveDecoder(
            observation_space,
            action_space,
            cfg.memory_tokens * cfg.token_dim,
            cfg.decoder_hidden,
            cfg.horizon,
        )
        self.cell = CELLS[cfg.cell](
            cfg.memory_tokens, cfg.token_dim, cfg.embed_dim, hidden=cfg.cell_hidden
        )

    def teacher_memory(self, batch: TensorDictBase) -> torch.Tensor:
        """Labels ``m*`` for every step of ``batch (B, T)``: ``(B, T, K, d)``."""
        return self.teacher(self.step_encoder(batch))

    @torch.no_grad()
    def student_memory(self, batch: TensorDictBase) -> torch.Tensor:
        """The cell run alone from its initial state over ``batch (B, T)``: ``(B, T, K, d)``."""
        return self.cell.scan(self.step_encoder(batch), batch["is_init"])
