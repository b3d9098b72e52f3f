"""Clipped PPO on single steps, as plain functions: GAE advantages and one update of the heads.

The memory state each step was acted on is stored with the step, so minibatches are shuffled
single steps: no sequences, no hidden-state bookkeeping, no backpropagation through time.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.policy import ActorCritic
from agents.smt_ppo.config import PPOConfig
from smt_rl.errors import NonFiniteError


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a rollout, time first.

    Args:
        rewards: ``(T, N)`` r_t (plus the bootstrap of truncated episodes' final observation).
        values: ``(T, N)`` V(s_t).
        dones: ``(T, N)`` True where the episode ended at step t.
        last_value: ``(N,)`` V of the observation after the rollout's last step.
        gamma: discount.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, each ``(T, N)``.
    """
    not_done = 1.0 - dones.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        next_value = last_value if t == rewards.shape[0] - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_value * not_done[t] - values[t]
        running = delta + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def ppo_update(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    steps: dict[str, torch.Tensor],
    cfg: PPOConfig,
    generator: torch.Generator,
    where: str = "",
) -> dict[str, float]:
    """``cfg.epochs`` passes of clipped PPO over shuffled single steps; the heads only.

    Args:
        policy: the actor/critic heads.
        optimizer: their optimiser.
        steps: flat ``(M, ...)`` tensors: ``features`` (what the heads read, detached),
            ``action``, ``logp`` (at acting time), ``advantage``, ``return``.
        cfg: clip, loss weights, epochs, minibatch size, gradient clip.
        generator: shuffles the minibatches.
        where: says where the update runs (e.g. the env step), in error messages.

    Returns:
        Mean ``ppo/policy_loss``, ``ppo/value_loss``, ``ppo/entropy``, ``ppo/approx_kl`` and
        ``ppo/clip_fraction`` over the minibatches.
    """
    n = steps["features"].shape[0]
    device = steps["features"].device
    stats: dict[str, list[float]] = {
        key: [] for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
    }
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, cfg.minibatch_size):
            idx = order[start : start + cfg.minibatch_size]
            dist, value = policy(steps["features"][idx])
            ratio = (dist.log_prob(steps["action"][idx]) - steps["logp"][idx]).exp()
            adv = steps["advantage"][idx]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            clipped = ratio.clamp(1 - cfg.clip, 1 + cfg.clip)
            policy_loss = -torch.min(ratio * adv, clipped * adv).mean()
            value_loss = (value - steps["return"][idx]).pow(2).mean()
            entropy = dist.entropy().mean()
            loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
            if not torch.isfinite(loss):
                terms = [float(t.detach()) for t in (loss, policy_loss, value_loss)]
                raise NonFiniteError(
                    f"PPO update{where}: the loss is {terms[0]:.4g} (policy {terms[1]:.4g}, "
                    f"value {terms[2]:.4g}); the run stops "
                    "before the heads turn to NaN. Lower ppo.lr or look for extreme rewards."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                stats["policy_loss"].append(float(policy_loss))
                stats["value_loss"].append(float(value_loss))
                stats["entropy"].append(float(entropy))
                stats["approx_kl"].append(float(((ratio - 1) - ratio.log()).mean()))
                stats["clip_fraction"].append(float(((ratio - 1).abs() > cfg.clip).float().mean()))
    return {f"ppo/{k}": float(np.mean(v)) for k, v in stats.items()}


def anneal_lr(optimizer: torch.optim.Optimizer, peak: float, progress: float) -> None:
    """Set the learning rate to ``peak * (1 - progress)`` (linear decay to 0 at the end)."""
    for group in optimizer.param_groups:
        group["lr"] = peak * (1.0 - progress)
