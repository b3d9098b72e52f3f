"""Prediction targets for the teacher's decoder, built from a batch of logged steps ``(B, T)``."""

from __future__ import annotations

import torch
from tensordict import TensorDict


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x (B, T, ...)`` moved k steps earlier along T, zero-padded at the end."""
    if k == 0:
        return x
    return torch.cat([x[:, k:], torch.zeros_like(x[:, :k])], 1)


def discounted_returns(batch: TensorDict, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, valid)`` ``(B, T)``: the discounted return from each step to the end of its episode,
    ``G_t = sum_{s >= t} gamma^(s - t) r_s``, valid where that end lies inside the window (a window
    holds one episode, or part of one)."""
    mask = batch["mask"]
    rewards = torch.where(mask, batch["next", "reward"], 0.0).double()
    steps = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float64)
    discount = torch.pow(torch.tensor(gamma, dtype=torch.float64), steps)
    tail = torch.flip(torch.cumsum(torch.flip(rewards * discount, [1]), 1), [1])
    ended = batch["next", "done"] & mask
    valid = torch.flip(torch.cummax(torch.flip(ended.long(), [1]), 1).values, [1]).bool() & mask
    return (tail / discount).float(), valid


def far_steps(
    t: torch.Tensor,
    last: torch.Tensor,
    far_last_prob: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The far target's step for each step ``t`` (``(B, T)``, any int): ``last`` (same shape) with
    probability ``far_last_prob``, else uniform in ``[t, last]`` (``t`` where ``last < t``)."""
    uniform = torch.rand(t.shape, generator=generator).to(t.device)
    span = (last - t + 1).clamp_min(1)
    random_step = t + (uniform * span).long().clamp_max(span - 1)
    pick_last = torch.rand(t.shape, generator=generator).to(t.device) < far_last_prob
    return torch.where(pick_last, last, random_step)


def predictive_targets(
    batch: TensorDict,
    horizon: int,
    far: bool = True,
    far_last_prob: float = 0.5,
    generator: torch.Generator | None = None,
    return_gamma: float | None = None,
) -> TensorDict:
    """Targets of every step t of ``batch`` (batch size ``(B, T)``, windows within one episode).

    Returns a TensorDict of batch size ``(B, T)``:

    - ``future_action`` ``(B, T, Tf, *a)``: a_t .. a_{t+Tf-1};
    - ``future_observation`` ``(B, T, Tf, *o)``: o_{t+1} .. o_{t+Tf};
    - ``future_reward``, ``future_terminated`` ``(B, T, Tf)``: r_t .. r_{t+Tf-1} and their flags;
    - ``future_valid`` ``(B, T, Tf)``: the step t+k exists in the window;
    - with ``far``: ``far_offset`` j, ``far_action`` a_{t+j}, ``far_reward`` r_{t+j},
      ``far_terminated`` (step t+j ended the episode) and ``far_valid``, ``(B, T)``, where t+j is
      the window's last step with probability ``far_last_prob`` (the step where episodic rewards
      often come) and otherwise uniform in ``[t, last]``; a batch that already holds these keys
      (far targets past the window, :mod:`smt_rl.smt.carry`) keeps its own;
    - with ``return_gamma``: ``return`` and ``return_valid`` ``(B, T)``
      (:func:`discounted_returns`).
    """
    mask = batch["mask"]
    steps = [_shift(mask, k) & mask for k in range(horizon)]
    targets = TensorDict(
        {
            "future_action": torch.stack([_shift(batch["action"], k) for k in range(horizon)], 2),
            "future_reward": torch.stack(
                [_shift(batch["next", "reward"], k) for k in range(horizon)], 2
            ),
            "future_terminated": torch.stack(
                [_shift(batch["next", "terminated"], k) for k in range(horizon)], 2
            ),
            "future_valid": torch.stack(steps, 2),
        },
        batch_size=mask.shape,
    )
    next_obs = batch["next", "observation"]
    targets.set(
        "future_observation",
        torch.stack([next_obs.apply(lambda x, k=k: _shift(x, k)) for k in range(horizon)], 2)
        if isinstance(next_obs, TensorDict)
        else torch.stack([_shift(next_obs, k) for k in range(horizon)], 2),
    )
    far_keys = ("far_offset", "far_action", "far_reward", "far_terminated", "far_valid")
    if far and all(key in batch for key in far_keys):
        for key in far_keys:
            targets.set(key, batch[key])
    elif far:
        batch_size, length = mask.shape
        t = torch.arange(length, device=mask.device).expand(batch_size, -1)
        last = (mask.sum(1, keepdim=True) - 1).clamp_min(0).expand(-1, length)
        target_step = far_steps(t, last, far_last_prob, generator).clamp_min(t)
        rows = torch.arange(batch_size, device=mask.device)[:, None]
        targets.set("far_offset", target_step - t)
        targets.set("far_action", batch["action"][rows, target_step])
        targets.set("far_reward", batch["next", "reward"][rows, target_step])
        targets.set("far_terminated", batch["next", "terminated"][rows, target_step])
        targets.set("far_valid", mask & (target_step >= t))
    if return_gamma is not None:
        returns, valid = discounted_returns(batch, return_gamma)
        targets.set("return", returns)
        targets.set("return_valid", valid)
    return targets
