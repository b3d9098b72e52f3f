"""SMT pretraining: joint teacher + memory training, then offline DMT, with evaluation and logs."""

from __future__ import annotations

import copy
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from smt_rl.checkpoint import save_checkpoint
from smt_rl.data import TrajectoryDataset
from smt_rl.device import autocast, resolve_device
from smt_rl.errors import DatasetError
from smt_rl.io import atomic_write_json
from smt_rl.run_logger import RunLogger
from smt_rl.smt.config import PretrainConfig
from smt_rl.smt.evaluate import TMAZE_ID, rollout_metrics, tmaze_probes
from smt_rl.smt.losses import bptt_loss, dmt_offline_loss, smt_loss
from smt_rl.smt.model import SMTModel
from smt_rl.spaces import space_to_dict

CHECKPOINT_DIR = "checkpoint"


class EpisodeSampler:
    """Training batches from a subset of a dataset's episodes.

    Each batch holds ``batch_size`` episodes drawn uniformly (with replacement) from
    ``episode_ids``,
    cut to ``T = min(seq_len, longest drawn)`` steps; an episode longer than T contributes a
    window starting at a uniformly random step (so it may start mid-episode).
    """

    def __init__(
        self,
        dataset: TrajectoryDataset,
        episode_ids: torch.Tensor,
        seq_len: int,
        generator: torch.Generator,
    ) -> None:
        self.dataset, self.episode_ids, self.seq_len, self.generator = (
            dataset,
            episode_ids,
            seq_len,
            generator,
        )

    def sample(self, batch_size: int) -> TensorDict:
        pick = torch.randint(len(self.episode_ids), (batch_size,), generator=self.generator)
        episodes = self.episode_ids[pick]
        lengths = self.dataset.episode_lengths[episodes]
        length = min(self.seq_len, int(lengths.max()))
        room = (lengths - length).clamp_min(0) + 1
        starts = (torch.rand(batch_size, generator=self.generator) * room).long()
        return self.dataset.windows(episodes, starts, length)


def check_dataset_fits(dataset: TrajectoryDataset, cfg: PretrainConfig) -> None:
    """Refuse, before any training, a dataset SMT cannot learn from (the message says the fix)."""
    if dataset.num_episodes < 2:
        raise DatasetError(
            f"dataset {str(dataset.path)!r} has {dataset.num_episodes} episode(s); SMT needs at "
            "least 2 (one to train on, one held out): collect more, e.g. data.episodes=2000."
        )
    needed = max(2, cfg.model.horizon)
    longest = int(dataset.episode_lengths.max())
    if longest < needed:
        raise DatasetError(
            f"dataset {str(dataset.path)!r}: its longest episode has {longest} step(s), shorter "
            f"than needed ({needed}: model.horizon={cfg.model.horizon} future steps and one "
            "transition); collect longer episodes or lower model.horizon."
        )


def split_episodes(num: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of episode indices into (train, held-out); each gets at least one."""
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    held = min(max(1, round(num * val_fraction)), num - 1)
    return order[held:], order[:held]


def lr_factor(update: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` updates, then cosine decay to 10%."""
    if update < warmup:
        return (update + 1) / warmup
    progress = (update - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(
    model: SMTModel,
    dataset: TrajectoryDataset,
    episodes: torch.Tensor,
    device,
    with_teacher: bool = True,
) -> tuple[dict[str, float], list[float]]:
    """Rollout drift and (for PassiveTMaze) probes on whole held-out ``episodes``."""
    model.eval()
    length = int(dataset.episode_lengths[episodes].max())
    batch = dataset.windows(episodes, torch.zeros_like(episodes), length).to(device)
    metrics: dict[str, float] = {}
    curve: list[float] = []
    if with_teacher:
        metrics, curve = rollout_metrics(model, batch)
    if dataset.env_id == TMAZE_ID:
        metrics.update(tmaze_probes(model, batch))
    model.train()
    return metrics, curve


def _held_out_score(metrics: dict[str, float]) -> tuple[float, float]:
    """Lower is better: the junction reward-sign probe when there is one, then rollout drift."""
    return (
        -metrics.get("probe/junction_reward_sign", 0.0),
        metrics.get("rollout/memory_mse", 0.0),
    )


def model_spec(model: SMTModel, cfg: PretrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON description saved beside the weights: enough to rebuild the model."""
    from smt_rl.config import config_to_dict

    return {
        "kind": "smt_model",
        "config": config_to_dict(cfg),
        "model": config_to_dict(cfg.model),
        "observation_space": space_to_dict(model.observation_space),
        "action_space": space_to_dict(model.action_space),
        **extra,
    }


def pretrain_on_dataset(
    cfg: PretrainConfig,
    dataset: TrajectoryDataset,
    run_dir: str | os.PathLike,
    method: str = "smt",
    progress: bool = True,
) -> dict[str, Any]:
    """Train on ``dataset``; write metrics, checkpoint and ``summary.json`` into ``run_dir``.

    Args:
        method: ``"smt"`` (joint SMT, then offline DMT) or ``"bptt"`` (the same cell and decoder
            trained by backpropagation through time; the baseline).

    Returns:
        The summary (also written to ``RUN_DIR/summary.json``).
    """
    check_dataset_fits(dataset, cfg)
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_ids, val_ids = split_episodes(dataset.num_episodes, cfg.data.val_fraction, cfg.seed)
    val_ids = val_ids[: cfg.data.val_max_episodes]
    sampler = EpisodeSampler(dataset, train_ids, cfg.smt.seq_len, generator)
    model = SMTModel(cfg.model, dataset.observation_space, dataset.action_space)
    model.decoder.reward_scale.fill_(dataset.reward_scale())
    model = model.to(device)
    if cfg.smt.compile and device.type == "cuda":
        model.teacher = torch.compile(model.teacher)  # type: ignore[assignment]
    logger = RunLogger(run_dir)
    started = time.perf_counter()
    smt = cfg.smt

    def run_phase(name: str, updates: int, params, lr: float, loss_fn) -> dict[str, float]:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=smt.weight_decay)
        sums: dict[str, float] = defaultdict(float)
        count = 0
        last: dict[str, float] = {}
        bar = tqdm(range(updates), desc=name, disable=not progress, unit="upd")
        for update in bar:
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(update, min(smt.warmup, updates // 4 + 1), updates)
            batch = sampler.sample(smt.batch_size).to(device)
            with autocast(device):
                loss, metrics = loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, smt.grad_clip)
            opt.step()
            for key, value in metrics.items():
                sums[key] += value
            count += 1
            if (update + 1) % smt.log_every == 0 or update + 1 == updates:
                last = {k: v / count for k, v in sums.items()}
                last["grad_norm"] = float(grad_norm)
                last["lr"] = opt.param_groups[0]["lr"]
                last["wall_s"] = time.perf_counter() - started
                if (update + 1) % smt.eval_every == 0 or update + 1 == updates:
                    last.update(evaluate(model, dataset, val_ids, device, method == "smt")[0])
                logger.log(update + 1, last, phase=name)
                bar.set_postfix(
                    {
                        k.split("/")[-1]: f"{v:.4g}"
                        for k, v in last.items()
                        if k in ("loss/total", "loss/dyn", "dmt/loss", "probe/cue_accuracy")
                    }
                )
                sums.clear()
                count = 0
        return last

    if method == "smt":
        smt_metrics = run_phase(
            "smt",
            smt.updates,
            list(model.parameters()),
            smt.lr,
            lambda b: smt_loss(model, b, smt, generator),
        )
        dmt_metrics: dict[str, float] = {}
        if smt.dmt_updates > 0:
            before = copy.deepcopy(model.cell.state_dict())
            dmt_metrics = run_phase(
                "dmt",
                smt.dmt_updates,
                list(model.cell.parameters()),
                smt.dmt_lr,
                lambda b: dmt_offline_loss(model, b),
            )
            reverted = smt.dmt_revert_if_worse and _held_out_score(dmt_metrics) > _held_out_score(
                smt_metrics
            )
            if reverted:
                model.cell.load_state_dict(before)
            dmt_metrics["dmt/reverted"] = float(reverted)
    elif method == "bptt":
        smt_metrics = run_phase(
            "bptt",
            smt.updates,
            list(model.parameters()),
            smt.lr,
            lambda b: bptt_loss(model, b, smt, generator),
        )
        dmt_metrics = {}
    else:
        raise ValueError(f"method must be 'smt' or 'bptt', got {method!r}")

    final, curve = evaluate(model, dataset, val_ids, device, method == "smt")
    wall = time.perf_counter() - started
    save_checkpoint(
        run_dir / CHECKPOINT_DIR,
        model,
        model_spec(model, cfg, {"method": method, "env": dataset.meta["env"]}),
    )
    summary: dict[str, Any] = {
        "env_id": dataset.env_id,
        "method": method,
        "seed": cfg.seed,
        "device": str(device),
        "dataset": str(dataset.path),
        "dataset_episodes": dataset.num_episodes,
        "dataset_steps": dataset.num_steps,
        "updates": smt.updates,
        "dmt_updates": smt.dmt_updates if method == "smt" else 0,
        "num_params": sum(p.numel() for p in model.parameters()),
        "wall_s": round(wall, 3),
        **{k: v for k, v in smt_metrics.items() if k.startswith("loss/")},
        **{k: v for k, v in dmt_metrics.items() if k.startswith("dmt/")},
        **{
            f"pre_dmt/{k}": v
            for k, v in smt_metrics.items()
            if dmt_metrics and k.startswith(("rollout/", "probe/"))
        },
        **final,
    }
    atomic_write_json(run_dir / "summary.json", summary)
    if curve:
        atomic_write_json(run_dir / "rollout_memory_mse_by_step.json", curve)
    logger.close()
    return summary
