"""How good is the memory the student carries on its own? Rollout drift and a linear probe.

Everything here runs the memory cell alone from its learned initial state over held-out episodes,
with no teacher help at any step, and compares it with the teacher's labels.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from tensordict import TensorDictBase

from smt_rl.smt.losses import masked_mean
from smt_rl.smt.model import SMTModel
from smt_rl.smt.targets import predictive_targets


@torch.no_grad()
def rollout_metrics(model: SMTModel, episodes: TensorDictBase) -> tuple[dict[str, float], list]:
    """Drift of the student from the teacher on whole episodes ``(B, T)`` (starting at step 0).

    Returns (metrics, per-step curve): ``rollout/memory_mse`` (mean squared difference per memory
    element, averaged over steps), ``rollout/pred_loss_student`` and ``rollout/pred_loss_teacher``
    (the decoder's one-step predictive loss, obs + reward + termination, from each memory), and
    the per-step MSE averaged over episodes, ``[T]``.
    """
    mask = episodes["mask"]
    x = model.step_encoder(episodes)
    teacher = model.labels(x, episodes["is_init"])
    student = model.cell.scan(x, episodes["is_init"])
    err = (student - teacher).pow(2).mean((-2, -1))
    curve = ((err * mask).sum(0) / mask.sum(0).clamp_min(1)).tolist()
    targets = predictive_targets(episodes, model.cfg.horizon, far=False)

    def pred_loss(memory: torch.Tensor) -> float:
        terms = model.decoder.losses(memory, targets)
        return float(terms["obs"] + terms["reward"] + terms["terminated"])

    metrics = {
        "rollout/memory_mse": float(masked_mean(err, mask)),
        "rollout/memory_mse_last": float(masked_mean(err, _last_step(mask))),
        "rollout/pred_loss_student": pred_loss(student),
        "rollout/pred_loss_teacher": pred_loss(teacher),
    }
    decisions = decision_metrics(model, student, teacher, episodes)
    metrics.update({f"rollout/{k}": v for k, v in decisions.items()})
    return metrics, curve


@torch.no_grad()
def decision_metrics(
    model: SMTModel, student: torch.Tensor, teacher: torch.Tensor, steps: TensorDictBase
) -> dict[str, float]:
    """How well the student's memory serves the steps where the agent is paid.

    At the *decision steps* (real steps whose reward is not zero): ``memory_mse_decision`` (the
    drift there) and, for a Discrete action space, ``decision_agreement``: how often the action
    with the highest reward the decoder predicts from the student's memory is the one it predicts
    from the teacher's (1: the student acts as the teacher would; 1/n: at chance). Empty when the
    steps hold no decision step.

    Args:
        student, teacher: memories ``(*B, K, d)`` of the steps ``steps`` (batch ``*B``, with
            ``mask`` when padded).
    """
    decided = steps["next", "reward"] != 0
    if "mask" in steps:
        decided = decided & steps["mask"]
    if not bool(decided.any()):
        return {}
    err = (student - teacher).pow(2).mean((-2, -1))
    out = {"memory_mse_decision": float(err[decided].mean())}
    space = model.action_space
    if isinstance(space, spaces.Discrete):
        best = [model.action_rewards(memory[decided]).argmax(-1) for memory in (student, teacher)]
        out["decision_agreement"] = float((best[0] == best[1]).float().mean())
    return out


def _last_step(mask: torch.Tensor) -> torch.Tensor:
    last = mask.sum(1) - 1
    return torch.nn.functional.one_hot(last, mask.shape[1]).bool() & mask


def linear_probe_accuracy(
    features: torch.Tensor, labels: torch.Tensor, steps: int = 300, seed: int = 0
) -> float:
    """Fit a logistic-regression probe on half of ``features (N, F)`` and return its accuracy on
    the other half (labels ``(N,)`` int classes)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(features.shape[0], generator=gen)
    half = features.shape[0] // 2
    train, test = order[:half], order[half:]
    mean = features[train].mean(0)
    std = features[train].std(0, correction=min(1, len(train) - 1)) + 1e-5
    feats = (features - mean) / std
    classes = int(labels.max()) + 1
    probe = torch.nn.Linear(features.shape[1], max(classes, 2))
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(probe(feats[train]), labels[train])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((probe(feats[test]).argmax(-1) == labels[test]).float().mean())
