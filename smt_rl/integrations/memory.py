"""A pretrained SMT memory on its own: the step encoder and the memory cell, frozen.

What the torchrl module and the gymnasium wrapper share. It loads from any checkpoint that says
where an SMT model sits in it (``memory_prefix``): a pretraining's (``smt-rl pretrain``:
``RUN_DIR/pretrain/checkpoint`` or ``RUN_DIR/checkpoint``) or an SMT agent's (``smt-rl train``:
its DMT-refined cell). The teacher and the decoder are not kept.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from smt_rl.checkpoint import CheckpointError, open_checkpoint
from smt_rl.device import resolve_device
from smt_rl.memory import MemoryRunner
from smt_rl.smt.config import ModelConfig
from smt_rl.smt.model import SMTModel


class PretrainedMemory(MemoryRunner):
    """A :class:`smt_rl.memory.MemoryRunner` (step encoder + memory cell), frozen: no gradients,
    eval mode. :meth:`step` and :meth:`scan` zero the previous action, reward and step count
    where ``is_init``, whatever the caller left there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
