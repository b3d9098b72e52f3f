"""SMT losses (and the BPTT baseline's). SMT never unrolls the memory cell: it applies ``f`` once
per step position, to (memory, input) pairs that are all known in advance. DMT losses live in
:mod:`smt_rl.smt.dmt`."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from smt_rl.models.common import rms_normalize
from smt_rl.smt.carry import ChainedWindowSampler
from smt_rl.smt.config import SMTConfig
from smt_rl.smt.model import SMTModel
from smt_rl.smt.targets import predictive_targets


def previous_memory(
    model: SMTModel,
    memory: torch.Tensor,
    is_init: torch.Tensor,
    carried: torch.Tensor | None = None,
) -> torch.Tensor:
    """``m_{t-1}`` for every position: the memory one step earlier, or the cell's initial state at
    an episode start. ``memory (B, T, K, d), is_init (B, T) -> (B, T, K, d)``; ``carried
    (B, K, d)``: the memory before the first step (default: the initial state)."""
    batch = is_init.shape[0]
    init = model.cell.initial_state(batch).to(memory.dtype)
    first = init if carried is None else carried.to(memory.dtype)
    shifted = torch.cat([first.unsqueeze(1), memory[:, :-1]], 1)
    return torch.where(is_init[..., None, None], init.unsqueeze(1).expand_as(memory), shifted)


def one_step(model: SMTModel, prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``f(prev, x)`` at every position at once (one application each, no chain):
    ``prev (B, T, K, d), x (B, T, D) -> (B, T, K, d)``."""
    return model.cell.step(prev.flatten(0, 1), x.flatten(0, 1)).view_as(prev)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` (same shape) is True."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def uniformity(memory: torch.Tensor, mask: torch.Tensor, max_points: int = 256) -> torch.Tensor:
    """``log mean exp(-2 ||u_i - u_j||^2)`` over pairs of unit-normalised memories (lower = more
    spread out), on at most ``max_points`` valid positions."""
    points = memory[mask].flatten(1).float()
    if points.shape[0] > max_points:
        points = points[torch.randperm(points.shape[0], device=points.device)[:max_points]]
    if points.shape[0] < 2:
        return memory.new_zeros(())
    unit = torch.nn.functional.normalize(points, dim=-1)
    sq = torch.cdist(unit, unit).pow(2)
    off_diag = ~torch.eye(sq.shape[0], dtype=torch.bool, device=sq.device)
    return torch.logsumexp(-2 * sq[off_diag], 0) - torch.log(torch.tensor(float(off_diag.sum())))


def predictive_loss(
    model: SMTModel,
    memory: torch.Tensor,
    batch: TensorDictBase,
    cfg: SMTConfig,
    generator: torch.Generator | None = None,
    step_inputs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The decoder's loss from ``memory (B, T, K, d)`` on ``batch``'s futures: (total, terms).

    ``step_inputs (B, T, D)``: the step encoder's outputs on ``batch``, read by the far target of
    a model with ``far_context``.

    total = ``c_obs`` * obs + reward + ``c_term`` * terminated + ``c_far`` * far (+ ``c_return``
    * return with ``model.return_head``; each term a mean over valid positions).
    """
    targets = predictive_targets(
        batch,
        model.cfg.horizon,
        far=cfg.c_far > 0,
        far_last_prob=cfg.far_last_prob,
        generator=generator,
        return_gamma=cfg.return_gamma if cfg.c_return > 0 else None,
    )
    terms = model.decoder.losses(memory, targets, step_inputs)
    total = (
        cfg.c_obs * terms["obs"]
        + terms["reward"]
        + cfg.c_term * terms["terminated"]
        + cfg.c_far * terms.get("far", 0.0)
        + cfg.c_return * terms.get("return", 0.0)
    )
    return total, terms


def smt_loss(
    model: SMTModel,
    batch: TensorDictBase,
    cfg: SMTConfig,
    generator: torch.Generator | None = None,
    chain: ChainedWindowSampler | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The joint SMT loss on ``batch (B, T)``; returns (loss, metrics).

    ``L = c_pred * L_pred(D(m*_t, future actions), future) + c_dyn * ||f(m*_{t-1}, x_t) - m*_t||^2
    + c_unif * L_unif(m*)``. The dynamics gradient reaches the encoder through both ``m*_{t-1}`` and
    ``m*_t``. Positions whose ``m_{t-1}`` lies before the window (a window starting mid-episode)
    are left out of the dynamics term, unless ``chain`` (``model.carry``) says what memory the
    window carries in: the teacher then reads it, its first transition is supervised from it, and
    the window's labels are cached for the windows after it.
    """
    mask, is_init = batch["mask"], batch["is_init"]
    x = model.step_encoder(batch)
    carried = None if chain is None else chain.carried(batch).to(x.device)
    labels = model.labels(x, is_init, carried=carried)
    if chain is not None:
        chain.store(batch, labels)
    pred, terms = predictive_loss(model, labels, batch, cfg, generator, x)
    prev = previous_memory(model, labels, is_init, carried)
    if cfg.dyn_input_noise > 0:
        prev = rms_normalize(prev + cfg.dyn_input_noise * torch.randn_like(prev))
    has_prev = is_init | (torch.arange(mask.shape[1], device=mask.device) > 0)
    if carried is not None:
        has_prev = torch.ones_like(mask)  # the first step's m_{t-1} is the carried memory
    dyn_err = (one_step(model, prev, x) - labels).pow(2).mean((-2, -1))
    dyn = masked_mean(dyn_err, mask & has_prev)
    unif = uniformity(labels, mask)
    loss = cfg.c_pred * pred + cfg.c_dyn * dyn + cfg.c_unif * unif
    metrics = {"loss/total": loss, "loss/pred": pred, "loss/dyn": dyn, "loss/unif": unif}
    metrics.update({f"loss/pred_{k}": v for k, v in terms.items()})
    return loss, {
        k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in metrics.items()
    }


def bptt_loss(
    model: SMTModel,
    batch: TensorDictBase,
    cfg: SMTConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The baseline SMT replaces: train the cell by backpropagation through time.

    The cell is unrolled over the whole sequence with gradients kept (a chain of T applications
    of ``f``), and the decoder's predictive loss (the same targets as SMT's, far target included)
    is taken on the student's own memories. No teacher. Used for benchmarks and ablations.
    """
    x = model.step_encoder(batch)
    is_init = batch["is_init"]
    memory = model.cell.initial_state(x.shape[0])
    states = []
    for t in range(x.shape[1]):
        memory = model.cell.step(model.cell.reset_where(memory, is_init[:, t]), x[:, t])
        states.append(memory)
    student = torch.stack(states, 1)
    pred, terms = predictive_loss(model, student, batch, cfg, generator, x)
    metrics = {"loss/total": float(pred.detach()), "loss/pred": float(pred.detach())}
    metrics.update({f"loss/pred_{k}": float(v.detach()) for k, v in terms.items()})
    return cfg.c_pred * pred, metrics
