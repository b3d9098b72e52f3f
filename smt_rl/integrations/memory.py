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
from tensordict import TensorDict, TensorDictBase
from torch import nn

from smt_rl.checkpoint import CheckpointError, load_weights, read_checkpoint, spec_fields
from smt_rl.config import config_from_dict
from smt_rl.device import resolve_device
from smt_rl.models import CELLS, StepEncoder
from smt_rl.models.cells import MemoryCell
from smt_rl.smt.config import ModelConfig
from smt_rl.spaces import space_from_dict, torch_dtype

# checkpoint kind -> (where its model config sits in checkpoint.json, prefix of the SMT weights)
_CHECKPOINT_KINDS = {
    "smt_model": (("model",), ""),
    "smt_ppo_agent": (("config", "model"), "smt."),
}
_SMT_PARTS = ("step_encoder.", "teacher.", "decoder.", "cell.")  # what an SMT model holds
_OTHER_PARTS = {"smt_model": (), "smt_ppo_agent": ("policy.",)}  # and beside it, per kind


class PretrainedMemory(nn.Module):
    """``m_t = f(m_{t-1}, x_t)`` with a frozen step encoder and cell (no gradients, eval mode).

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
        super().__init__()
        self.step_encoder, self.cell = step_encoder, cell
        self.observation_space, self.action_space = observation_space, action_space
        self.requires_grad_(False)
        self.eval()

    @property
    def memory_shape(self) -> tuple[int, int]:
        """``(K, d)``: memory tokens and their width."""
        return self.cell.num_tokens, self.cell.token_dim

    @property
    def memory_size(self) -> int:
        """``Z = K * d``: the flattened memory's width."""
        return self.cell.memory_size

    @property
    def device(self) -> torch.device:
        return self.cell.initial.device

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

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The learned ``m_{-1}``: ``(N, K, d)`` (a fresh tensor)."""
        return self.cell.initial_state(batch_size).detach().clone()

    def zero_step_inputs(self, batch_size: int) -> TensorDict:
        """Placeholder previous action / reward / step count for ``N`` environments."""
        return TensorDict(
            {
                "prev_action": torch.zeros(
                    batch_size,
                    *self.action_space.shape,
                    dtype=torch_dtype(self.action_space),
                    device=self.device,
                ),
                "prev_reward": torch.zeros(batch_size, device=self.device),
                "step_count": torch.zeros(batch_size, dtype=torch.int64, device=self.device),
            },
            batch_size=[batch_size],
        )

    @staticmethod
    def clean_inputs(inputs: TensorDictBase) -> TensorDictBase:
        """``inputs`` with the previous action, reward and step count zeroed where ``is_init``
        (what a fresh episode sees, whatever the caller left there). Any batch shape."""
        is_init = inputs["is_init"].bool()

        def zero_where_init(x: torch.Tensor) -> torch.Tensor:
            mask = is_init.reshape(*is_init.shape, *([1] * (x.dim() - is_init.dim())))
            return torch.where(mask, torch.zeros_like(x), x)

        out = inputs.copy()
        for key in ("prev_action", "prev_reward", "step_count"):
            out.set(key, zero_where_init(inputs[key]))
        return out

    @torch.no_grad()
    def step(self, inputs: TensorDictBase, memory: torch.Tensor | None) -> torch.Tensor:
        """One transition for N environments.

        Args:
            inputs: TensorDict ``(N,)`` with ``observation``, ``prev_action``, ``prev_reward``,
                ``is_init`` and ``step_count``.
            memory: ``(N, K, d)`` ``m_{t-1}`` (ignored where ``is_init``; None: all start).

        Returns:
            ``(N, K, d)`` ``m_t``.
        """
        inputs = self.clean_inputs(inputs)
        if memory is None:
            memory = self.initial_state(inputs.batch_size[0])
        x = self.step_encoder(inputs)
        return self.cell.step(self.cell.reset_where(memory, inputs["is_init"].bool()), x)

    @torch.no_grad()
    def scan(self, inputs: TensorDictBase, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Memories after each step of B sequences, resetting where ``is_init``.

        Args:
            inputs: TensorDict ``(B, T)`` with the step-input keys (see :meth:`step`).
            memory: ``(B, K, d)`` state before the first step (None: the initial state).

        Returns:
            ``(B, T, K, d)``.
        """
        inputs = self.clean_inputs(inputs)
        x = self.step_encoder(inputs)
        return self.cell.scan(x, inputs["is_init"].bool(), memory)
