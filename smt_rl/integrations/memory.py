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

from smt_rl.checkpoint import CheckpointError, load_weights, read_checkpoint, spec_fields
from smt_rl.config import config_from_dict
from smt_rl.device import resolve_device
from smt_rl.memory import MemoryRunner
from smt_rl.models import CELLS, StepEncoder
from smt_rl.models.cells import MemoryCell
from smt_rl.smt.config import ModelConfig
from smt_rl.spaces import space_from_dict

# checkpoint kind -> (where its model config sits in checkpoint.json, prefix of the SMT weights)
_CHECKPOINT_KINDS = {
    "smt_model": (("model",), ""),
    "smt_ppo_agent": (("config", "model"), "smt."),
}
_SMT_PARTS = ("step_encoder.", "teacher.", "decoder.", "cell.")  # what an SMT model holds
_OTHER_PARTS = {"smt_model": (), "smt_ppo_agent": ("policy.",)}  # and beside it, per kind


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
        spec, tensors = read_checkpoint(path)
        kind = spec.get("kind")
        if kind not in _CHECKPOINT_KINDS:
            raise CheckpointError(
                f"{path} holds a {kind!r} checkpoint; an SMT memory loads from a pretraining "
                "checkpoint (RUN_DIR/pretrain/checkpoint) or an smt_ppo agent (RUN_DIR/checkpoint)."
            )
        config_path, prefix = _CHECKPOINT_KINDS[kind]
        with spec_fields(path):
            model_dict = spec
            for key in config_path:
                model_dict = model_dict[key]
            cfg = config_from_dict(ModelConfig, model_dict)
            observation_space = space_from_dict(spec["observation_space"])
            action_space = space_from_dict(spec["action_space"])
        encoder = StepEncoder(observation_space, action_space, cfg.embed_dim)
        cell = CELLS[cfg.cell](
            cfg.memory_tokens, cfg.token_dim, cfg.embed_dim, hidden=cfg.cell_hidden
        )
        memory = cls(encoder, cell, observation_space, action_space)
        known = tuple(prefix + p for p in _SMT_PARTS) + _OTHER_PARTS[kind]
        unexpected = sorted(k for k in tensors if not k.startswith(known))
        if unexpected:
            raise CheckpointError(
                f"checkpoint {path} does not fit an SMT {kind} (unexpected {unexpected[:5]}): it "
                "was saved from another architecture or altered; re-run the training."
            )
        wanted = {f"{prefix}step_encoder.", f"{prefix}cell."}
        kept = {
            k.removeprefix(prefix): v
            for k, v in tensors.items()
            if any(k.startswith(w) for w in wanted)
        }
        load_weights(memory, kept, str(path))
        return memory.to(resolve_device(device))
