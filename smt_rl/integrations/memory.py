"""A pretrained SMT memory on its own: the step encoder and the memory cell, frozen.

What the torchrl module and the gymnasium wrapper share. It loads from any checkpoint that says
where an SMT model sits in it (``memory_prefix``): a pretraining's (``smt-rl pretrain``:
``RUN_DIR/pretrain/checkpoint`` or ``RUN_DIR/checkpoint``) or an SMT agent's (``smt-rl train``:
its DMT-refined cell). The teacher and the decoder are not kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase

from smt_rl.checkpoint import SPEC_FILE, WEIGHTS_FILE, CheckpointError, open_checkpoint
from smt_rl.device import resolve_device
from smt_rl.integrations.traced_step import TracedSteps
from smt_rl.io import atomic_write_bytes
from smt_rl.memory import MemoryRunner, MemoryState
from smt_rl.smt.config import ModelConfig
from smt_rl.smt.model import SMTModel


class PretrainedMemory(MemoryRunner):
    """A :class:`smt_rl.memory.MemoryRunner` (step encoder + memory cell), frozen: no gradients,
    eval mode. :meth:`step` and :meth:`scan` zero the previous action, reward and step count
    where ``is_init``, whatever the caller left there.

    One loaded by :meth:`from_checkpoint` remembers its folder and the digest of the weights it
    read, so that :meth:`save` can copy that checkpoint.

    :meth:`advance` (what the wrappers call) runs its common step (no environment restarts)
    through a trace made once per batch size (:mod:`smt_rl.integrations.traced_step`): the same
    numbers, about half the cost of the eager step for a few environments on a CPU. Set
    ``trace = False`` to run every step eagerly.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requires_grad_(False)
        self.eval()
        self.source: Path | None = None  # the checkpoint folder it was loaded from
        self.weights_sha256: str | None = None  # the digest of the weights read from it
        self.trace = True  # False: every advance() runs eagerly
        self.traced_steps = TracedSteps(self.step_encoder, self.cell)

    def advance(
        self,
        observation: torch.Tensor | TensorDictBase,
        state: MemoryState,
        is_init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`MemoryRunner.advance`, its common step (``is_init`` None) traced."""
        if is_init is None and self.trace:
            return self.traced_steps(observation, state)
        return super().advance(observation, state, is_init)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> PretrainedMemory:
        """Moving or casting the weights (``.to()``, ``.double()``) drops the traces."""
        if "traced_steps" in self.__dict__:
            self.traced_steps.clear()
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """New weights drop the traces."""
        self.traced_steps.clear()
        return super().load_state_dict(*args, **kwargs)

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
        memory.source, memory.weights_sha256 = Path(path), checkpoint.spec["weights_sha256"]
        return memory.to(resolve_device(device))

    def save(self, folder: str | os.PathLike) -> Path:
        """Copy the checkpoint this memory was loaded from into ``folder`` (``checkpoint.json``
        and ``model.safetensors``; the weights first, so the JSON commits the copy); the copy
        loads with :meth:`from_checkpoint`. The memory is frozen: its checkpoint is all of it.

        Raises:
            CheckpointError: the memory was not loaded by :meth:`from_checkpoint`, or its
                checkpoint folder was changed or removed since.
        """
        if self.source is None:
            raise CheckpointError(
                "this PretrainedMemory was not loaded from a checkpoint, so there is nothing to "
                "copy; load it with PretrainedMemory.from_checkpoint(folder) to save it."
            )
        changed = CheckpointError(
            f"the checkpoint {str(self.source)!r} this memory was loaded from was changed or "
            "removed since; load the memory again (PretrainedMemory.from_checkpoint) and save it."
        )
        try:
            spec_bytes = (self.source / SPEC_FILE).read_bytes()
            weights = (self.source / WEIGHTS_FILE).read_bytes()
            recorded = json.loads(spec_bytes).get("weights_sha256")
        except (OSError, ValueError, AttributeError) as exc:
            raise changed from exc
        if not recorded == hashlib.sha256(weights).hexdigest() == self.weights_sha256:
            raise changed
        folder = Path(folder)
        atomic_write_bytes(folder / WEIGHTS_FILE, weights)
        atomic_write_bytes(folder / SPEC_FILE, spec_bytes)
        return folder
