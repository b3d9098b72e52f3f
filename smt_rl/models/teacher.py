"""The teacher: a time-parallel encoder of histories and an action-conditional predictive decoder.

- :class:`TeacherEncoder` turns the step inputs of a whole sequence ``(B, T, D)`` into a memory
  label ``m*_t`` for every step ``(B, T, K, d)`` in one pass: causal self-attention limited to the
  last ``context`` steps, then a per-step projection into K RMS-normalised tokens of width d.
- :class:`PredictiveDecoder` reads a memory and the future actions ``a_t .. a_{t+Tf-1}`` and
  predicts ``o_{t+1..t+Tf}``, ``r_{t..t+Tf-1}`` and terminations (offset k sees only actions up to
  ``a_{t+k}``), plus a *far* reward head: the reward ``j`` steps ahead given the action taken
  there. It never predicts the logging policy's actions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase
from torch import nn

from smt_rl.models.common import mlp, rms_normalize, sinusoidal_features, symlog
from smt_rl.models.step_encoder import BoxScaler, SpaceEmbedding
from smt_rl.spaces import leaf_spaces


def rotate_positions(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding: ``x (B, H, T, dh)`` with each pair of feature halves rotated by
    an angle proportional to the position t, so a query-key product depends on their offset."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)[:, None] * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)
    return torch.cat([rotated, x[..., 2 * half :]], -1) if x.shape[-1] % 2 else rotated


class _AttentionBlock(nn.Module):
    """Pre-LayerNorm self-attention + MLP block over ``(B, T, width)``; with ``rope`` the queries
    and keys carry rotary position embeddings (attention sees relative offsets)."""

    def __init__(self, width: int, heads: int, hidden: int, rope: bool = False) -> None:
        super().__init__()
        self.heads, self.rope = heads, rope
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ff = mlp([width, hidden, width])

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, steps, width = h.shape
        qkv = self.qkv(self.norm1(h)).view(batch, steps, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if self.rope:
            q, k = rotate_positions(q), rotate_positions(k)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        h = h + self.proj(attn.transpose(1, 2).reshape(batch, steps, width))
        return h + self.ff(self.norm2(h))


class TeacherEncoder(nn.Module):
    """``x (B, T, D) -> m* (B, T, K, d)``: the memory label of every step, time-parallel.

    Step t attends to steps ``max(0, t - context + 1) .. t`` of the same sequence.

    Args:
        input_dim: D, the step-embedding width.
        width: attention width.
        layers: attention blocks.
        heads: attention heads (divides ``width``).
        context: Tc, how many steps (the current one included) each step attends to.
        num_tokens: K.
        token_dim: d.
        rope: rotary position embeddings in attention (relative offsets; the step inputs carry
            the absolute step index either way).
        carry_tokens: P; when > 0 the encoder also reads a *carried memory* ``(B, P, d)``, the
            memory before the sequence's first step, as P prefix tokens that every step of an
            episode begun before the sequence attends to: what the memory carries from earlier
            windows reaches the labels without attention (or gradient) crossing the window.
    """

    def __init__(
        self,
        input_dim: int,
        width: int,
        layers: int,
        heads: int,
        context: int,
        num_tokens: int,
        token_dim: int,
        rope: bool = False,
        carry_tokens: int = 0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"model.teacher_width ({width}) must be divisible by heads ({heads})")
        self.context = context
        self.num_tokens, self.token_dim = num_tokens, token_dim
        self.inp = nn.Linear(input_dim, width)
        self.blocks = nn.ModuleList(
            _AttentionBlock(width, heads, 4 * width, rope) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)
        self.to_memory = nn.Linear(width, num_tokens * token_dim)
        self.carry_tokens = carry_tokens
        if carry_tokens:
            self.carry_in = nn.Linear(token_dim, width)
            self.carry_position = nn.Parameter(0.02 * torch.randn(carry_tokens, width))

    def attention_mask(
        self, steps: int, device: torch.device, segments: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """None (plain causal) when the context covers the sequence and there are no segments,
        else a bool mask: ``(T, T)`` banded to the context, or ``(B, 1, T, T)`` also limited to
        steps of the same segment."""
        if segments is None and steps <= self.context:
            return None
        i = torch.arange(steps, device=device)
        offset = i[:, None] - i[None, :]
        mask = (offset >= 0) & (offset < self.context)
        if segments is None:
            return mask
        same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
        return (mask & same).unsqueeze(1)

    def forward(
        self,
        x: torch.Tensor,
        segments: torch.Tensor | None = None,
        carried: torch.Tensor | None = None,
        continues: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Labels ``(B, T, K, d)`` for step inputs ``x (B, T, D)``.

        Args:
            segments: ``(B, T)`` int ids; when given, a step attends only to steps with the same
                id (one episode each, so several episodes can share a row). Every step must share
                its id with itself, which holds for any ids.
            carried: ``(B, P, d)`` the memory before the first step (encoders built with
                ``carry_tokens`` only, and then required).
            continues: ``(B, T)`` bool, True where the step's episode began before the first
                step (those steps read ``carried``); needed with ``carried``.
        """
        if self.carry_tokens and (carried is None or continues is None):
            raise ValueError(
                "this teacher reads the memory carried from before its window (model.carry: "
                "true); pass carried and continues (SMTModel.labels does)."
            )
        h = self.inp(x)
        steps = h.shape[1]
        if not self.carry_tokens:
            mask = self.attention_mask(steps, h.device, segments)
        else:
            assert carried is not None and continues is not None
            prefix = self.carry_in(carried) + self.carry_position  # (B, P, width)
            h = torch.cat([prefix, h], 1)
            mask = self._carry_mask(steps, h.device, segments, continues)
        for block in self.blocks:
            h = block(h, mask)
        h = h[:, self.carry_tokens :]
        memory = self.to_memory(self.norm(h)).unflatten(-1, (self.num_tokens, self.token_dim))
        return rms_normalize(memory)

    def _carry_mask(
        self,
        steps: int,
        device: torch.device,
        segments: torch.Tensor | None,
        continues: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, 1, P + T, P + T)`` bool: the P carried tokens see each other only; a step sees
        them where ``continues`` (its episode began before the window), and the steps it would
        see without them (:meth:`attention_mask`)."""
        batch, carry = continues.shape[0], self.carry_tokens
        inner = self.attention_mask(steps, device, segments)
        if inner is None:
            inner = torch.ones(steps, steps, dtype=torch.bool, device=device).tril()
        inner = inner.expand(batch, 1, steps, steps)
        top = torch.cat(
            [
                torch.ones(batch, 1, carry, carry, dtype=torch.bool, device=device),
                torch.zeros(batch, 1, carry, steps, dtype=torch.bool, device=device),
            ],
            3,
        )
        reads = continues.bool()[:, None, :, None].expand(-1, -1, -1, carry)
        return torch.cat([top, torch.cat([reads, inner], 3)], 2)


class SpaceHead(nn.Module):
    """Predicts a sample of one space from features ``(..., H)``; ``loss`` per position ``(...)``.

    Box: MSE on the scaled values; Discrete / MultiDiscrete: cross-entropy; MultiBinary: binary
    cross-entropy; Dict: the sum over members.
    """

    def __init__(self, space: spaces.Space, in_dim: int) -> None:
        super().__init__()
        self.space = space
        if isinstance(space, spaces.Dict):
            self.members = nn.ModuleDict({k: SpaceHead(s, in_dim) for k, s in space.spaces.items()})
        elif isinstance(space, spaces.Box):
            self.scale = BoxScaler(space)
            self.net = nn.Linear(in_dim, int(np.prod(space.shape)) or 1)
        elif isinstance(space, spaces.Discrete):
            self.net = nn.Linear(in_dim, int(space.n))
        elif isinstance(space, spaces.MultiDiscrete):
            self.nvec = [int(n) for n in np.asarray(space.nvec).reshape(-1)]
            self.register_buffer("start", torch.as_tensor(space.start).reshape(-1), False)
            self.net = nn.Linear(in_dim, sum(self.nvec))
        else:
            self.net = nn.Linear(in_dim, int(np.prod(space.shape)))

    def loss(self, h: torch.Tensor, target: torch.Tensor | TensorDictBase) -> torch.Tensor:
        """Per-position loss ``(...)`` of predicting ``target`` from ``h (..., H)``."""
        space = self.space
        if isinstance(space, spaces.Dict):
            return sum(head.loss(h, target[k]) for k, head in self.members.items())  # type: ignore[return-value]
        lead = h.shape[:-1]
        if isinstance(space, spaces.Box):
            goal = self.scale(target).reshape(*lead, -1)
            return (self.net(h) - goal).pow(2).mean(-1)
        if isinstance(space, spaces.Discrete):
            logits = self.net(h)
            goal = (target.long() - int(space.start)).clamp(0, int(space.n) - 1)
            return F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), goal.reshape(-1), reduction="none"
            ).view(lead)
        if isinstance(space, spaces.MultiDiscrete):
            goal = target.long().reshape(*lead, -1) - self.start
            parts = self.net(h).split(self.nvec, -1)
            losses = [
                F.cross_entropy(
                    p.reshape(-1, n), goal[..., i].reshape(-1).clamp(0, n - 1), reduction="none"
                )
                for i, (p, n) in enumerate(zip(parts, self.nvec, strict=True))
            ]
            return torch.stack(losses, -1).mean(-1).view(lead)
        goal = target.float().reshape(*lead, -1)
        return F.binary_cross_entropy_with_logits(self.net(h), goal, reduction="none").mean(-1)


class PredictiveDecoder(nn.Module):
    """Action-conditional predictions from a memory ``(..., K, d)``.

    Args:
        observation_space: what the next observations are.
        action_space: what the future actions are.
        memory_size: Z = K * d.
        hidden: MLP width.
        horizon: Tf, the number of future steps predicted from each memory.
        step_features: sinusoidal features of the far target's offset.
        far_context_dim: when > 0, the far target's predictor also reads the step input
            ``x_{t+j} (D = far_context_dim)`` at its target step (what the agent sees there).
        return_head: also predict the discounted return of the episode from each memory.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        memory_size: int,
        hidden: int,
        horizon: int,
        step_features: int = 16,
        far_context_dim: int = 0,
        return_head: bool = False,
    ) -> None:
        super().__init__()
        self.horizon = horizon
        # rewards are predicted in units of this scale (the dataset's largest |reward|), so that
        # a task paying +-0.02 per step weighs as much in the loss as one paying +-1
        self.register_buffer("reward_scale", torch.ones(()))
        self.step_features = step_features
        self.memory_in = nn.Linear(memory_size, hidden)
        self.action_in = SpaceEmbedding(action_space, hidden, "action_space")
        self.offset = nn.Parameter(torch.zeros(horizon, hidden))
        self.trunk = mlp([hidden, hidden, hidden])
        self.observation = SpaceHead(observation_space, hidden)
        self.reward = nn.Linear(hidden, 1)
        self.terminated = nn.Linear(hidden, 1)
        # far target: reward j steps ahead given the action taken there
        self.far_memory_in = nn.Linear(memory_size, hidden)
        self.far_action_in = SpaceEmbedding(action_space, hidden, "action_space")
        self.far_offset_in = nn.Linear(step_features, hidden)
        self.far_context_in = nn.Linear(far_context_dim, hidden) if far_context_dim else None
        self.far = mlp([hidden, hidden, hidden, 1])
        self.value = mlp([memory_size, hidden, 1]) if return_head else None
        self.observation_keys = list(leaf_spaces(observation_space))

    def features(self, memory: torch.Tensor, future_actions: torch.Tensor) -> torch.Tensor:
        """``memory (..., K, d)``, ``future_actions (..., Tf, *action_shape)`` -> ``(..., Tf, H)``.

        Offset k's features depend on the memory and ``a_t .. a_{t+k}`` only (a cumulative sum of
        offset-tagged action embeddings), never on later actions.
        """
        m = self.memory_in(memory.flatten(-2)).unsqueeze(-2)
        actions = torch.cumsum(self.action_in(future_actions) + self.offset, -2)
        return self.trunk(F.gelu(m + actions))

    def predict_reward(self, memory: torch.Tensor, future_actions: torch.Tensor) -> torch.Tensor:
        """Predicted rewards ``r_t .. r_{t+Tf-1}``: ``(..., Tf)`` (un-symlogged)."""
        pred = self.reward(self.features(memory, future_actions)).squeeze(-1)
        return torch.sign(pred) * torch.expm1(pred.abs()) * self.reward_scale

    def far_reward(
        self,
        memory: torch.Tensor,
        action: torch.Tensor,
        offset: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Symlog reward predicted ``offset`` steps ahead given the action there (and, with
        ``far_context_dim``, the step input ``context (..., D)`` there): ``(...)``."""
        h = (
            self.far_memory_in(memory.flatten(-2))
            + self.far_action_in(action)
            + self.far_offset_in(sinusoidal_features(offset, self.step_features))
        )
        if self.far_context_in is not None:
            if context is None:
                raise ValueError(
                    "this decoder's far target reads the step input at the target step "
                    "(model.far_context: true); pass step_inputs to losses()."
                )
            h = h + self.far_context_in(context)
        return self.far(F.gelu(h)).squeeze(-1)

    def losses(
        self,
        memory: torch.Tensor,
        targets: TensorDict,
        step_inputs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-term predictive losses (scalars) of ``memory (B, T, K, d)`` against ``targets``.

        ``step_inputs (B, T, D)``, the step encoder's outputs of the same batch, are needed only
        by a decoder built with ``far_context_dim``.

        ``targets`` comes from :func:`smt_rl.smt.targets.predictive_targets`. Reward and
        termination terms weigh each class equally, so one rare event per episode is not drowned
        by the many steps around it. A reward's class is its sign and whether the step ended the
        episode (6 classes): an episode that ends with no reward (MiniGrid-Memory's wrong object)
        is its own class, not one step among thousands of ordinary zero-reward steps.
        """
        h = self.features(memory, targets["future_action"])
        valid = targets["future_valid"]
        out = {"obs": _masked_mean(self.observation.loss(h, targets["future_observation"]), valid)}
        reward = targets["future_reward"]
        reward_err = (self.reward(h).squeeze(-1) - symlog(reward / self.reward_scale)).pow(2)
        term = targets["future_terminated"]
        out["reward"] = _balanced_mean(reward_err, reward_class(reward, term), valid, 6)
        term_err = F.binary_cross_entropy_with_logits(
            self.terminated(h).squeeze(-1), term.float(), reduction="none"
        )
        out["terminated"] = _balanced_mean(term_err, term.long(), valid, 2)
        if "far_reward" in targets:
            far_reward = targets["far_reward"]
            context = None
            if self.far_context_in is not None and step_inputs is not None:
                offset = targets["far_offset"]  # (B, T): the target step is t + offset
                rows = torch.arange(offset.shape[0], device=offset.device)[:, None]
                steps = torch.arange(offset.shape[1], device=offset.device) + offset
                context = step_inputs[rows, steps.clamp_max(offset.shape[1] - 1)]
            far_err = (
                self.far_reward(memory, targets["far_action"], targets["far_offset"], context)
                - symlog(far_reward / self.reward_scale)
            ).pow(2)
            far_class = reward_class(far_reward, targets["far_terminated"])
            out["far"] = _balanced_mean(far_err, far_class, targets["far_valid"], 6)
        if self.value is not None and "return" in targets:
            goal = symlog(targets["return"] / self.reward_scale)
            value_err = (self.value(memory.flatten(-2)).squeeze(-1) - goal).pow(2)
            out["return"] = _masked_mean(value_err, targets["return_valid"])
        return out


def reward_class(reward: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
    """Class of each reward for the balanced losses, in 0..5: its sign (-, 0, +) and whether the
    step ended the episode. ``reward``, ``terminated`` same shape -> long, same shape."""
    return torch.sign(reward).long() + 1 + 3 * terminated.long()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _balanced_mean(
    values: torch.Tensor, classes: torch.Tensor, mask: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Mean over valid positions where each present class carries equal total weight."""
    mask = mask.to(values.dtype)
    total = values.new_zeros(())
    present = 0
    for c in range(num_classes):
        in_class = mask * (classes == c).to(values.dtype)
        count = in_class.sum()
        if count > 0:
            total = total + (values * in_class).sum() / count
            present += 1
    return total / max(present, 1)
