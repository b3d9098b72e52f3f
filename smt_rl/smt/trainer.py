"""SMT pretraining: joint teacher + memory training, then offline DMT, with evaluation and logs."""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from smt_rl.checkpoint import CheckpointError, save_checkpoint
from smt_rl.config import config_to_dict, migrate_renamed
from smt_rl.data import TrajectoryDataset
from smt_rl.device import autocast
from smt_rl.distributed import DistContext, setup, weights_digest
from smt_rl.errors import DatasetError
from smt_rl.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, safe_torch_load
from smt_rl.run_logger import RunLogger
from smt_rl.smt.config import PretrainConfig
from smt_rl.smt.evaluate import TMAZE_ID, rollout_metrics, tmaze_probes
from smt_rl.smt.losses import bptt_loss, dmt_offline_loss, smt_loss
from smt_rl.smt.model import SMTModel
from smt_rl.spaces import space_to_dict

CHECKPOINT_DIR = "checkpoint"
RESUME_FILE = "resume/state.pt"  # the unfinished run's state (removed when the run ends)


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


def save_resume_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write the unfinished run's state atomically (tensors, numbers, strings: no code)."""
    atomic_torch_save(run_dir / RESUME_FILE, state)


def load_resume_state(run_dir: Path, cfg: PretrainConfig, method: str) -> dict[str, Any] | None:
    """The state a killed run left in ``run_dir``, or None (no state: start from scratch).

    Raises:
        CheckpointError: the state is corrupt, or was written by another config or method (the
            run folder then belongs to another run: pick another ``out``, or delete the folder).
    """
    path = run_dir / RESUME_FILE
    if not path.is_file():
        return None
    state = safe_torch_load(path, CheckpointError, "delete it to restart the run from scratch.")
    stored = state.get("config")
    if isinstance(stored, dict):  # an earlier version's state: its renamed keys move
        stored = migrate_renamed(stored)
    if stored != _pretrain_identity(cfg) or state.get("method") != method:
        raise CheckpointError(
            f"{run_dir} holds an unfinished run with another config or method; resume it with "
            f"`smt-rl pretrain --resume {run_dir}`, choose another out=, or delete {path}."
        )
    return state


class _PhaseLoss(nn.Module):
    """A phase's loss as a module, so that DDP can wrap it: ``batch -> (loss, metrics)``."""

    def __init__(self, model: SMTModel, loss_fn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: TensorDict):
        return self.loss_fn(batch)


# what decides a pretraining's result
PRETRAIN_SECTIONS = ("env", "data", "model", "smt", "offline_dmt", "seed")


def _pretrain_identity(cfg: PretrainConfig) -> dict[str, Any]:
    """What must not change for a killed pretraining to resume: task, data, model, optimisation
    and seed (not the run folder, the device or the agent's later settings)."""
    full = config_to_dict(cfg)
    return {k: full[k] for k in PRETRAIN_SECTIONS}


def _truncate_lines(path: Path, keep: int) -> None:
    """Keep the first ``keep`` lines of ``path`` (the log lines written before a checkpoint)."""
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)[:keep]
        atomic_write_bytes(path, "".join(lines).encode())


def model_spec(model: SMTModel, cfg: PretrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON description saved beside the weights: enough to rebuild the model."""
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
    ctx: DistContext | None = None,
) -> dict[str, Any]:
    """Train on ``dataset``; write metrics, checkpoint and ``summary.json`` into ``run_dir``.

    Data-parallel when ``ctx`` spans several processes (``torchrun``): each rank samples
    ``smt.batch_size`` sequences per update from its own shard of the training episodes, DDP
    averages the gradients, and rank 0 alone evaluates, logs and writes files. The summary then
    holds ``ddp/world_size`` and ``ddp/ranks_identical`` (all ranks' weights hash the same).

    Every ``smt.checkpoint_every`` updates (and at the end of each phase) the whole training
    state (weights, optimiser, RNG states, counters, the metric sums since the last log line) is
    written atomically to ``RUN_DIR/resume/state.pt``. A run killed at any moment and started
    again with the same config and folder continues from there: no update is redone, no update
    is skipped, ``metrics.jsonl`` keeps one line per log step, and on CPU the result is the same
    as an uninterrupted run's. The state file is removed when the run ends.

    Args:
        method: ``"smt"`` (joint SMT, then offline DMT) or ``"bptt"`` (the same cell and decoder
            trained by backpropagation through time; the baseline).
        ctx: the data-parallel context (default: :func:`smt_rl.distributed.setup`, a world of one
            unless started by torchrun).

    Returns:
        The summary (also written to ``RUN_DIR/summary.json``; every rank returns it).
    """
    if method not in ("smt", "bptt"):
        raise ValueError(f"method must be 'smt' or 'bptt', got {method!r}")
    check_dataset_fits(dataset, cfg)
    run_dir = Path(run_dir)
    ctx = ctx or setup(cfg.device)
    device, main = ctx.device, ctx.is_main
    resume = load_resume_state(run_dir, cfg, method)
    if resume is not None and resume.get("world_size", 1) != ctx.world_size:
        raise CheckpointError(
            f"{run_dir / RESUME_FILE} was written by {resume.get('world_size', 1)} process(es); "
            f"resume it with as many (torchrun --nproc_per_node=...), not {ctx.world_size}."
        )
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_ids, val_ids = split_episodes(dataset.num_episodes, cfg.data.val_fraction, cfg.seed)
    val_ids = val_ids[: cfg.data.val_max_episodes]
    if ctx.enabled:
        if len(train_ids) < ctx.world_size:
            raise DatasetError(
                f"dataset {str(dataset.path)!r} has {len(train_ids)} training episodes for "
                f"{ctx.world_size} ranks; collect more episodes or use fewer processes."
            )
        train_ids = train_ids[ctx.rank :: ctx.world_size]  # this rank's shard
    sampler = EpisodeSampler(dataset, train_ids, cfg.smt.seq_len, generator)
    model = SMTModel(cfg.model, dataset.observation_space, dataset.action_space)
    model.decoder.reward_scale.fill_(dataset.reward_scale())
    model = model.to(device)
    smt, offline = cfg.smt, cfg.offline_dmt
    # the phases in order: (name, updates, trained parameters, peak lr, loss)
    phases = (
        [
            (
                "smt",
                smt.updates,
                list(model.parameters()),
                smt.lr,
                lambda b: smt_loss(model, b, smt, generator),
            ),
            (
                "dmt",
                offline.updates,
                list(model.cell.parameters()),
                offline.lr,
                lambda b: dmt_offline_loss(model, b),
            ),
        ]
        if method == "smt"
        else [
            (
                "bptt",
                smt.updates,
                list(model.parameters()),
                smt.lr,
                lambda b: bptt_loss(model, b, smt, generator),
            ),
        ]
    )
    # carried across phases (and saved with the resume state)
    carry: dict[str, Any] = {
        "phase": 0,
        "update": 0,
        "metrics": {},
        "dmt_before": None,
        "wall_s": 0.0,
        "log_lines": 0,
    }
    if resume is not None:
        model.load_state_dict(resume["model"])
        generator.set_state(resume["generator"][ctx.rank])
        torch.set_rng_state(resume["torch_rng"][ctx.rank])
        if device.type == "cuda" and resume["cuda_rng"][ctx.rank] is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"][ctx.rank], device)
        carry = {k: resume[k] for k in carry}
        if main:
            _truncate_lines(run_dir / "metrics.jsonl", carry["log_lines"])
    if cfg.smt.compile and device.type == "cuda":
        # compile the forward only: the module (and its state-dict keys, which checkpoints and
        # resume states store) stays as it is; replacing it would prefix every key `_orig_mod.`
        model.teacher.forward = torch.compile(model.teacher.forward)  # type: ignore[method-assign]
    # tensorboard steps count updates over all phases; a resumed run purges the later ones
    offsets = [sum(p[1] for p in phases[:i]) for i in range(len(phases) + 1)]
    logger = (
        RunLogger(
            run_dir,
            purge_step=None if resume is None else offsets[carry["phase"]] + carry["update"] + 1,
        )
        if main
        else None
    )
    started = time.perf_counter() - carry["wall_s"]

    def checkpoint(phase: int, update: int, opt, sums, count, last) -> None:
        carry.update(
            phase=phase,
            update=update,
            wall_s=time.perf_counter() - started,
            log_lines=logger.lines if main else 0,
        )
        # every rank's random streams (collective), then rank 0 writes
        cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        generators = ctx.gather(generator.get_state())
        torch_rngs = ctx.gather(torch.get_rng_state())
        cuda_rngs = ctx.gather(cuda_rng)
        if not main:
            return
        save_resume_state(
            run_dir,
            {
                **carry,
                "config": _pretrain_identity(cfg),
                "method": method,
                "world_size": ctx.world_size,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": generators,
                "torch_rng": torch_rngs,
                "cuda_rng": cuda_rngs,
                "sums": dict(sums),
                "count": count,
                "last": last,
            },
        )

    def run_phase(index: int) -> None:
        name, updates, params, lr, loss_fn = phases[index]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=smt.weight_decay)
        # only this phase's parameters take gradients (and DDP syncs only those)
        trainable = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        if ctx.enabled:
            loss_fn = DistributedDataParallel(
                _PhaseLoss(model, loss_fn),
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        sums: dict[str, float] = defaultdict(float)
        count, first, last = 0, 0, {}
        if resume is not None and resume["phase"] == index and resume["update"] > 0:
            opt.load_state_dict(resume["optimizer"])  # killed inside this phase
            sums.update(resume["sums"])
            count, first, last = resume["count"], resume["update"], resume["last"]
        bar = tqdm(
            range(first, updates),
            desc=name,
            disable=not (progress and main),
            unit="upd",
            initial=first,
            total=updates,
        )
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
                if main and ((update + 1) % smt.eval_every == 0 or update + 1 == updates):
                    last.update(evaluate(model, dataset, val_ids, device, method == "smt")[0])
                if main:
                    logger.log(update + 1, last, phase=name, tb_step=offsets[index] + update + 1)
                bar.set_postfix(
                    {
                        k.split("/")[-1]: f"{v:.4g}"
                        for k, v in last.items()
                        if k in ("loss/total", "loss/dyn", "dmt/loss", "probe/cue_accuracy")
                    }
                )
                sums.clear()
                count = 0
            done = update + 1 == updates
            if done:
                carry["metrics"][name] = last
            if done or (smt.checkpoint_every and (update + 1) % smt.checkpoint_every == 0):
                checkpoint(index + done, 0 if done else update + 1, opt, sums, count, last)

    for index in range(carry["phase"], len(phases)):
        name, updates = phases[index][:2]
        if name == "dmt" and carry["dmt_before"] is None:
            carry["dmt_before"] = copy.deepcopy(model.cell.state_dict())
        if updates > 0:
            run_phase(index)
        else:
            carry["phase"] = index + 1
    smt_metrics = carry["metrics"].get("smt", carry["metrics"].get("bptt", {}))
    dmt_metrics: dict[str, float] = {}
    if method == "smt" and offline.updates > 0:
        dmt_metrics = dict(carry["metrics"]["dmt"])
        reverted = offline.revert_if_worse and _held_out_score(dmt_metrics) > _held_out_score(
            smt_metrics
        )
        reverted = ctx.broadcast(reverted)  # rank 0 evaluated: every rank follows its choice
        if reverted:
            model.cell.load_state_dict(carry["dmt_before"])
        dmt_metrics["dmt/reverted"] = float(reverted)

    for p in model.parameters():
        p.requires_grad_(True)
    digests = ctx.gather(weights_digest(model))
    if not main:
        summary = ctx.broadcast(None)
        return summary
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
        "dmt_updates": offline.updates if method == "smt" else 0,
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
    if ctx.enabled:
        summary["ddp/world_size"] = ctx.world_size
        summary["ddp/ranks_identical"] = len(set(digests)) == 1
    atomic_write_json(run_dir / "summary.json", summary)
    if curve:
        atomic_write_json(run_dir / "rollout_memory_mse_by_step.json", curve)
    logger.close()
    # the state, and any temporary file a kill mid-write left beside it
    shutil.rmtree((run_dir / RESUME_FILE).parent, ignore_errors=True)
    return ctx.broadcast(summary)
