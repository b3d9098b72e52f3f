"""A pretrained SMT memory on its own: the step encoder and the memory cell, frozen.

What the torchrl module and the gymnasium wrapper share. It loads from either checkpoint kind:
a pretraining checkpoint (``smt-rl pretrain``: ``RUN_DIR/pretrain/checkpoint`` or
``RUN_DIR/checkpoint``) or an SMT agent checkpoint (``smt-rl train``: its DMT-refined cell).
The teacher and the decoder are not kept.
"""

from __future__ import annotations

import os

import torch
from gymnasium import spaces

from smt_rl.checkpoint import CheckpointError, open_checkpoint
from smt_rl.device import resolve_device
from smt_rl.memory import MemoryRunner
from smt_rl.models import StepEncoder
from smt_rl.models.cells import MemoryCell
from smt_rl.smt.config import ModelConfig
from smt_rl.smt.model import SMTModel


class PretrainedMemory(MemoryRunner):
    """``m_t = f(m_{t-1}, x_t)`` with a frozen step encoder and cell (no gradients, eval mode).

    :meth:`step` and :meth:`scan` zero the previous action, reward and step count where
    ``is_init``, whatever the caller left there.

    Args:
        step_encoder: embeds the step input TensorDict into ``x_t`` ``(..., D)``.
        cell: the memory cell (``(N, K, d), (N, D) -> (N, K, d)``).
        observation_space: single-environment observation space the encoder was built for.
        action_space: single-environment action space the encoder was built for.
    """

    def __init__(
        self,
        step_encoder: StepEncoder,
        cell: MemoryCell,
        observation_space: spaces.Space,
        action_space: spaces.Space,
    ) -> None:
        super().__init__(step_encoder, cell, observation_space, action_space)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> PretrainedMemory:
        """Load from a pretraining or an SMT agent checkpoint folder (never runs code from it).

        Args:
            path: the checkpoint folder (holds ``checkpoint.json`` and ``model.safetensors``).
            device: where to run (``"auto"``: CUDA when present).

        Raises:
            CheckpointError: missing, corrupt, of another kind (a baseline's), or weights that do
                not fit the config stored with them.
        """
        checkpoint = open_checkpoint(path)
        prefix = checkpoint.spec.get("memory_prefix")
        if prefix is None:
            raise CheckpointError(
                f"{path} holds a {checkpoint.kind!r} checkpoint, which has no SMT memory; an SMT "
                "memory loads from a pretraining checkpoint (RUN_DIR/pretrain/checkpoint) or an "
                "smt_ppo agent (RUN_DIR/checkpoint)."
            )
        checkpoint.check_known_tensors()
        observation_space, action_space = checkpoint.spaces()
        model = SMTModel(checkpoint.config(ModelConfig, "model"), observation_space, action_space)
        checkpoint.load_into(model, prefix)
        memory = cls(model.step_encoder, model.cell, observation_space, action_space)
        return memory.to(resolve_device(device))
