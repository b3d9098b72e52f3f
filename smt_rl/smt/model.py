"""The SMT model: step encoder, teacher encoder, predictive decoder and memory cell, together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from tensordict import TensorDictBase
from torch import nn

from smt_rl.models import CELLS, PredictiveDecoder, StepEncoder, TeacherEncoder
from smt_rl.models.cells import WindowedCell
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
            cfg.memory_tokens - cfg.window_tokens,  # the window tokens are built, not learned
            cfg.token_dim,
            rope=cfg.teacher_rope,
            carry_tokens=cfg.memory_tokens if cfg.carry else 0,
        )
        self.decoder = PredictiveDecoder(
            observation_space,
            action_space,
            cfg.memory_tokens * cfg.token_dim,
            cfg.decoder_hidden,
            cfg.horizon,
            far_context_dim=cfg.embed_dim if cfg.far_context else 0,
            return_head=cfg.return_head,
        )
        learned = cfg.memory_tokens - cfg.window_tokens
        self.cell = CELLS[cfg.cell](learned, cfg.token_dim, cfg.embed_dim, hidden=cfg.cell_hidden)
        if cfg.window_tokens:
            self.cell = WindowedCell(self.cell, cfg.window_tokens, cfg.embed_dim)

    def labels(
        self,
        x: torch.Tensor,
        is_init: torch.Tensor,
        segments: torch.Tensor | None = None,
        carried: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The teacher's labels ``m*`` of every step of step inputs ``x (B, T, D)``:
        ``(B, T, K, d)``.

        With ``model.carry`` a sequence longer than ``model.context`` is labelled window after
        window of ``context`` steps, each reading the previous window's last label (detached: no
        gradient crosses a window) as the memory carried into it.

        Args:
            is_init: ``(B, T)`` episode starts.
            segments: ``(B, T)`` episode ids when a row holds several episodes (steps attend
                only within their own; see :meth:`TeacherEncoder.forward`).
            carried: ``(B, K, d)`` the memory before the first step (``model.carry`` only), read
                by the steps of an episode begun before it. None: the first step is taken as an
                episode start (a window starting mid-episode then counts as one).
        """
        boundary = is_init.bool().clone()
        if segments is not None:
            boundary[:, 1:] |= segments[:, 1:] != segments[:, :-1]
        if carried is None:
            boundary[:, 0] = True
        if not self.cfg.carry:
            if carried is not None:
                raise ValueError("carried memory needs a teacher built with model.carry: true")
            return self._window_labels(x, boundary, segments, None)
        if carried is None:
            carried = self.cell.initial_state(x.shape[0]).to(x.dtype)
        window, parts = self.cfg.context, []
        for start in range(0, x.shape[1], window):
            stop = start + window
            if parts:
                carried = parts[-1][:, -1].detach()
            part_segments = None if segments is None else segments[:, start:stop]
            parts.append(
                self._window_labels(
                    x[:, start:stop], boundary[:, start:stop], part_segments, carried
                )
            )
        return torch.cat(parts, 1)

    def _window_labels(
        self,
        x: torch.Tensor,
        boundary: torch.Tensor,
        segments: torch.Tensor | None,
        carried: torch.Tensor | None,
    ) -> torch.Tensor:
        """Labels of one teacher pass over ``x (B, T, D)``; ``boundary (B, T)`` True where an
        episode begins; ``carried (B, K, d)`` with ``model.carry``."""
        continues = None
        if carried is not None:
            continues = torch.cumsum(boundary.long(), 1) == 0  # episode begun before the window
            tokens = self.teacher(x, segments, carried, continues)
        else:
            tokens = self.teacher(x, segments)
        if not isinstance(self.cell, WindowedCell):
            return tokens
        before = None if carried is None else carried[:, : self.cell.window]
        return torch.cat([self.cell.labels(x, boundary, before, continues), tokens], 2)

    def teacher_memory(self, batch: TensorDictBase) -> torch.Tensor:
        """Labels ``m*`` for every step of ``batch (B, T)``: ``(B, T, K, d)``."""
        return self.labels(self.step_encoder(batch), batch["is_init"])

    @torch.no_grad()
    def action_rewards(self, memory: torch.Tensor) -> torch.Tensor:
        """The reward the decoder predicts for the current step from ``memory (*B, K, d)`` for
        each action of a Discrete action space (repeated over the horizon): ``(*B, n)``."""
        space, lead = self.action_space, memory.shape[:-2]
        future = torch.empty((*lead, self.cfg.horizon), dtype=torch.int64, device=memory.device)
        rewards = [
            self.decoder.predict_reward(memory, future.fill_(int(space.start) + a))[..., 0]
            for a in range(int(space.n))
        ]
        return torch.stack(rewards, -1)

    @torch.no_grad()
    def student_memory(self, batch: TensorDictBase) -> torch.Tensor:
        """The cell run alone from its initial state over ``batch (B, T)``: ``(B, T, K, d)``."""
        return self.cell.scan(self.step_encoder(batch), batch["is_init"])


KIND = "smt_model"  # checkpoint kind of a pretraining's model
BYTES_PER_PARAMETER = 16  # float32 weight, gradient and AdamW's two moments
# the config keys that size each part of the model (named when a model does not fit)
SIZED_BY = {
    "step_encoder": "model.embed_dim",
    "teacher": "model.teacher_width / model.teacher_layers",
    "decoder": "model.decoder_hidden / model.horizon",
    "cell": "model.cell_hidden / model.memory_tokens / model.token_dim",
}


def check_model_fits(
    cfg: ModelConfig,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    memory_bytes: int | None = None,
) -> int:
    """Refuse, before anything is allocated or written, a model whose training state cannot fit
    in this machine's memory; returns its parameter count.

    The model is built on PyTorch's ``meta`` device (shapes only, no memory).

    Raises:
        ConfigError: naming the config keys of the largest part and the fix.
    """
    from smt_rl.errors import ConfigError

    with torch.device("meta"):
        model = SMTModel(cfg, observation_space, action_space)
    parts = {
        name: sum(p.numel() for p in part.parameters()) for name, part in model.named_children()
    }
    total = sum(parts.values())
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    needed = total * BYTES_PER_PARAMETER
    if needed > memory_bytes:
        largest = max(parts, key=parts.get)
        raise ConfigError(
            f"the model's sizes give {total:,} parameters ({needed / 2**30:,.1f} GiB to train), "
            f"more than this machine's {memory_bytes / 2**30:,.1f} GiB of memory; most of them in "
            f"its {largest} ({parts[largest]:,}): lower {SIZED_BY.get(largest, 'model.*')}."
        )
    return total


def save_smt_model(
    model: SMTModel, config: dict[str, Any], folder: str | os.PathLike, **extra: Any
) -> Path:
    """Write ``model`` as a checkpoint folder; ``config`` is the run's config as plain data (its
    ``model`` section must be ``model.cfg``), ``extra`` more JSON-ready fields."""
    from smt_rl.checkpoint import write_checkpoint

    return write_checkpoint(
        folder,
        model,
        kind=KIND,
        config=config,
        observation_space=model.observation_space,
        action_space=model.action_space,
        memory_prefix="",
        **extra,
    )


def load_smt_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SMTModel:
    """Rebuild an :class:`SMTModel` from a checkpoint folder (``RUN_DIR/checkpoint``).

    Raises:
        CheckpointError: missing, corrupt or foreign checkpoint, or weights that do not fit.
    """
    from smt_rl.checkpoint import open_checkpoint

    checkpoint = open_checkpoint(path, kinds=(KIND,))
    model = SMTModel(checkpoint.config(ModelConfig, "model"), *checkpoint.spaces())
    checkpoint.load_into(model)
    return model.to(device)
