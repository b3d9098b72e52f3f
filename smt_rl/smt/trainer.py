"""SMT pretraining: joint teacher + memory training, then offline DMT, with evaluation and logs.

Built from parts: :class:`EpisodeSampler` draws training windows, :func:`build_phases` says what
learns in each phase, :class:`smt_rl.smt.phases.PhaseRunner` runs each phase (optimiser,
schedule, logging, evaluation, resume points), :func:`held_out_metrics` measures the memory on
held-out episodes, and a task-specific :class:`Probe` may be passed in from outside: the core
names no task.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import model_validator
from tensordict import TensorDict, TensorDictBase

from smt_rl.checkpoint import CheckpointError, resume_state_fits
from smt_rl.config import config_to_dict
from smt_rl.data import TrajectoryDataset
from smt_rl.distributed import DistContext, setup, weights_digest
from smt_rl.errors import DatasetError
from smt_rl.faults import kill_point
from smt_rl.io import atomic_write_json
from smt_rl.records import (
    NonNegativeInt,
    OptimizerState,
    PositiveInt,
    Record,
    Tensor,
    check_record,
)
from smt_rl.run_logger import RunLogger, truncate_log
from smt_rl.smt.carry import CarriedMemoryCache, ChainedWindowSampler
from smt_rl.smt.config import PretrainConfig
from smt_rl.smt.dmt import offline_dmt_loss
from smt_rl.smt.evaluate import rollout_metrics
from smt_rl.smt.losses import bptt_loss, smt_loss
from smt_rl.smt.model import SMTModel, save_smt_model
from smt_rl.smt.phases import Phase, PhaseRunner, PhaseSettings
from smt_rl.tree_file import load_tree, save_tree

CHECKPOINT_DIR = "checkpoint"
RESUME_FILE = "resume/state.pt"  # the unfinished run's state (removed when the run ends)
RESUME_VERSION = 3  # layout of the resume state; a state of another layout is refused
RESUME_FIX = "delete it to start over (the run then restarts from scratch)."
# what decides a pretraining's result
PRETRAIN_SECTIONS = ("env", "data", "model", "smt", "offline_dmt", "seed")
METHODS = ("smt", "bptt")


class Probe(Protocol):
    """A task-specific check of the memory on held-out episodes, passed in from outside the core
    (e.g. whether the student's memory at a T-maze junction still holds the cue).

    ``score_key`` names a metric it returns in which higher means better recall; the offline DMT
    phase is reverted when it made that metric (then the rollout drift) worse. None: drift only.
    """

    score_key: str | None

    def __call__(self, model: SMTModel, episodes: TensorDictBase) -> dict[str, float]:
        """Metrics (``probe/...``) on whole held-out episodes ``(B, T)``."""
        ...


class EpisodeSampler:
    """Training batches from a subset of a dataset's episodes.

    Each batch holds ``batch_size`` episodes drawn uniformly (with replacement) from
    ``episode_ids``, cut to ``T = min(seq_len, longest drawn)`` steps; an episode longer than T
    contributes a window starting at a uniformly random step (so it may start mid-episode).
    """

    def __init__(
        self,
        dataset: TrajectoryDataset,
        episode_ids: torch.Tensor,
        seq_len: int,
        generator: torch.Generator,
    ) -> None:
        self.dataset, self.episode_ids = dataset, episode_ids
        self.seq_len, self.generator = seq_len, generator

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


@torch.no_grad()
def held_out_metrics(
    model: SMTModel, episodes: TensorDictBase, with_teacher: bool, probe: Probe | None
) -> tuple[dict[str, float], list[float]]:
    """Rollout drift (with a teacher) and the probe's metrics on whole held-out ``episodes``
    ``(B, T)``; also the per-step drift curve."""
    model.eval()
    metrics: dict[str, float] = {}
    curve: list[float] = []
    if with_teacher:
        metrics, curve = rollout_metrics(model, episodes)
    if probe is not None:
        metrics.update(probe(model, episodes))
    model.train()
    return metrics, curve


def held_out_score(metrics: dict[str, float], probe: Probe | None) -> tuple[float, float]:
    """Lower is better: minus the probe's score when it has one, then the rollout drift."""
    key = None if probe is None else probe.score_key
    return (-metrics.get(key, 0.0) if key else 0.0, metrics.get("rollout/memory_mse", 0.0))


def build_phases(
    model: SMTModel,
    cfg: PretrainConfig,
    method: str,
    generator: torch.Generator,
    chain: ChainedWindowSampler | None = None,
) -> list[Phase]:
    """The phases in order: joint SMT then offline DMT (cell only), or the BPTT baseline.
    ``chain``: the sampler of chained windows (``model.carry``) both read carried memories from."""
    smt, offline = cfg.smt, cfg.offline_dmt
    if method == "bptt":
        loss = lambda b: bptt_loss(model, b, smt, generator)  # noqa: E731
        return [Phase("bptt", smt.updates, list(model.parameters()), smt.lr, loss, "smt.lr")]
    return [
        Phase(
            "smt",
            smt.updates,
            list(model.parameters()),
            smt.lr,
            lambda b: smt_loss(model, b, smt, generator, chain),
            "smt.lr",
        ),
        Phase(
            "dmt",
            offline.updates,
            model.cell.transition_parameters(),
            offline.lr,
            lambda b: offline_dmt_loss(model, b, offline.c_match, chain),
            "offline_dmt.lr",
        ),
    ]


# --------------------------------------------------------------------------------------------
# Resume states


def _pretrain_identity(cfg: PretrainConfig) -> dict[str, Any]:
    """What must not change for a killed pretraining to resume: task, data, model, optimisation
    and seed (not the run folder, the device or the agent's later settings)."""
    full = config_to_dict(cfg)
    return {k: full[k] for k in PRETRAIN_SECTIONS}


class RunnerState(Record):
    """A phase runner's state (:meth:`PhaseRunner.state_dict`)."""

    update: NonNegativeInt
    optimizer: OptimizerState
    sums: dict[str, float]
    count: NonNegativeInt
    last: dict[str, float]


class PretrainResumeState(Record):
    """The fields of a pretraining's resume state (:meth:`Pretraining._checkpoint`)."""

    version: int
    config: dict[str, Any]
    method: str
    world_size: PositiveInt
    phase: NonNegativeInt
    runner: RunnerState | None  # None: killed between phases
    metrics: dict[str, dict[str, float]]
    dmt_before: dict[str, Tensor] | None
    carried: dict[str, Tensor] | None = None  # the carried-memory cache (model.carry; rank 0's)
    wall_s: float
    log_lines: NonNegativeInt
    model: dict[str, Tensor]
    generator: list[Tensor]  # one random stream per rank
    torch_rng: list[Tensor]
    cuda_rng: list[Tensor | None]

    @model_validator(mode="after")
    def _one_stream_per_rank(self) -> PretrainResumeState:
        for field in ("generator", "torch_rng", "cuda_rng"):
            if len(getattr(self, field)) != self.world_size:
                raise ValueError(
                    f"{field} has {len(getattr(self, field))} entries, one per rank of "
                    f"world_size {self.world_size} expected"
                )
        return self


def load_resume_state(
    run_dir: Path,
    cfg: PretrainConfig,
    method: str,
    world_size: int | None = None,
    resume_command: str | None = None,
) -> dict[str, Any] | None:
    """The state a killed run left in ``run_dir``, or None (no state: start from scratch).

    Args:
        world_size: the processes that will continue it (None: not checked).
        resume_command: a command that continues the run the state belongs to, offered when the
            state is another config's (None: none is offered).

    Raises:
        CheckpointError: the state is corrupt, of another layout, misses a field or holds one of
            the wrong type, was written by another config or method (the run folder then
            belongs to another run: pick another ``out``, or delete the folder), or by another
            number of processes.
    """
    path = run_dir / RESUME_FILE
    if not path.is_file():
        return None
    state = load_tree(path, CheckpointError, RESUME_FIX)
    if not isinstance(state, dict) or state.get("version") != RESUME_VERSION:
        raise CheckpointError(
            f"{path} was written by another smt_rl version (layout {RESUME_VERSION} expected); "
            + RESUME_FIX
        )
    check_record(PretrainResumeState, state, path, CheckpointError, RESUME_FIX)
    if state["config"] != _pretrain_identity(cfg) or state["method"] != method:
        resume = f"resume it with `{resume_command}`, " if resume_command else ""
        raise CheckpointError(
            f"{run_dir} holds an unfinished run with another config or method; {resume}"
            f"choose another out=, or delete {path}."
        )
    if world_size is not None and state["world_size"] != world_size:
        raise CheckpointError(
            f"{path} was written by {state['world_size']} process(es); resume it with as many "
            f"(torchrun --nproc_per_node=...), not {world_size}."
        )
    return state


# --------------------------------------------------------------------------------------------
# The run


class Pretraining:
    """One pretraining run: its phases in order, its resume state, its final evaluation.

    See :func:`pretrain_on_dataset` for the arguments.
    """

    def __init__(
        self,
        cfg: PretrainConfig,
        dataset: TrajectoryDataset,
        run_dir: Path,
        method: str,
        ctx: DistContext,
        probe: Probe | None,
        progress: bool,
    ) -> None:
        self.cfg, self.dataset, self.run_dir, self.method = cfg, dataset, run_dir, method
        self.ctx, self.probe, self.progress = ctx, probe, progress
        self.resume = load_resume_state(run_dir, cfg, method, ctx.world_size)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        train_ids, val_ids = split_episodes(dataset.num_episodes, cfg.data.val_fraction, cfg.seed)
        self.val_ids = val_ids[: cfg.data.val_max_episodes]
        self.chain: ChainedWindowSampler | None = None
        self.sampler: EpisodeSampler | ChainedWindowSampler
        if cfg.model.carry and method != "bptt":
            cache = CarriedMemoryCache(
                dataset.episode_lengths,
                cfg.smt.carry_stride,
                cfg.model.memory_tokens,
                cfg.model.token_dim,
            )
            self.sampler = self.chain = ChainedWindowSampler(
                dataset,
                self._shard(train_ids),
                cfg.smt.seq_len,
                cache,
                cfg.smt.far_last_prob,
                self.generator,
                cfg.smt.carry_start_prob,
                cfg.smt.carry_stream_fraction,
            )
        else:
            self.sampler = EpisodeSampler(
                dataset, self._shard(train_ids), cfg.smt.seq_len, self.generator
            )
        model = SMTModel(cfg.model, dataset.observation_space, dataset.action_space)
        model.decoder.reward_scale.fill_(dataset.reward_scale())
        self.model = model.to(ctx.device)
        self.phases = build_phases(self.model, cfg, method, self.generator, self.chain)
        # tensorboard steps count updates over all phases: phase i's first is offsets[i] + 1
        self.offsets = [
            sum(p.updates for p in self.phases[:i]) for i in range(len(self.phases) + 1)
        ]
        self.phase = 0  # the phase to run next
        self.metrics: dict[str, dict[str, float]] = {}  # each finished phase's last line
        self.dmt_before: dict[str, torch.Tensor] | None = None  # the cell before offline DMT
        self.log_lines = 0  # metrics.jsonl lines at the last resume point
        self._held_out: TensorDict | None = None
        wall_s = 0.0
        if self.resume is not None:
            with resume_state_fits(run_dir / RESUME_FILE, RESUME_FIX):
                wall_s = self._restore(self.resume)
        self.started = time.perf_counter() - wall_s
        if cfg.smt.compile and ctx.device.type == "cuda":
            # compile the forward only: the module (and its state-dict keys, which checkpoints
            # and resume states store) stays as it is
            self.model.teacher.forward = torch.compile(self.model.teacher.forward)  # type: ignore[method-assign]
        self.logger = None
        if ctx.is_main:
            # a run starting over (killed before its first resume state) drops what it logged
            purge = 1
            if self.resume is None:
                truncate_log(run_dir / "metrics.jsonl", 0)
            else:
                update = 0 if self.resume["runner"] is None else self.resume["runner"]["update"]
                purge = self.offsets[self.phase] + update + 1
            self.logger = RunLogger(run_dir, purge_step=purge)

    def _shard(self, train_ids: torch.Tensor) -> torch.Tensor:
        """This rank's share of the training episodes."""
        ctx = self.ctx
        if not ctx.enabled:
            return train_ids
        if len(train_ids) < ctx.world_size:
            raise DatasetError(
                f"dataset {str(self.dataset.path)!r} has {len(train_ids)} training episodes for "
                f"{ctx.world_size} ranks; collect more episodes or use fewer processes."
            )
        return train_ids[ctx.rank :: ctx.world_size]

    def run(self) -> dict[str, Any]:
        """Run the phases left, revert offline DMT if it made the memory worse, then write the
        checkpoint and the summary. Returns the summary (every rank)."""
        while self.phase < len(self.phases):
            index, phase = self.phase, self.phases[self.phase]
            if phase.name == "dmt" and self.dmt_before is None:
                self.dmt_before = copy.deepcopy(self.model.cell.state_dict())
            if phase.updates > 0:
                self._runner(index).run(progress=self.progress)  # its end is a resume point
            else:
                self.phase = index + 1
        reverted = self._revert_dmt_if_worse()
        for p in self.model.parameters():
            p.requires_grad_(True)
        return self._finish(reverted)

    def _runner(self, index: int) -> PhaseRunner:
        """The runner of phase ``index``, restored from the resume state when it was cut short."""
        phase, smt = self.phases[index], self.cfg.smt
        settings = PhaseSettings(
            weight_decay=smt.weight_decay,
            grad_clip=smt.grad_clip,
            warmup=smt.warmup,
            log_every=smt.log_every,
            eval_every=smt.eval_every,
            checkpoint_every=smt.checkpoint_every,
        )

        def log(update: int, line: dict[str, float]) -> None:
            tb_step = self.offsets[index] + update
            self.logger.log(update, line, phase=phase.name, tb_step=tb_step)

        runner = PhaseRunner(
            phase,
            self.model,
            lambda: self.sampler.sample(smt.batch_size).to(self.ctx.device),
            settings,
            self.ctx,
            log=log if self.ctx.is_main else None,
            evaluate=lambda: self.evaluate()[0],
            on_checkpoint=lambda r: self._checkpoint(index, r),
            started=self.started,
        )
        resume = self.resume
        if resume is not None and resume["phase"] == index and resume["runner"] is not None:
            with resume_state_fits(self.run_dir / RESUME_FILE, RESUME_FIX):
                runner.load_state_dict(resume["runner"])  # killed inside this phase
        return runner

    def held_out_episodes(self) -> TensorDict:
        """The held-out episodes, whole, on the device ``(B, T)`` (read once)."""
        if self._held_out is None:
            ids = self.val_ids
            length = int(self.dataset.episode_lengths[ids].max())
            self._held_out = self.dataset.windows(ids, torch.zeros_like(ids), length)
        return self._held_out.to(self.ctx.device)

    def evaluate(self) -> tuple[dict[str, float], list[float]]:
        """:func:`held_out_metrics` on the held-out episodes."""
        with_teacher = self.method == "smt"
        return held_out_metrics(self.model, self.held_out_episodes(), with_teacher, self.probe)

    def _revert_dmt_if_worse(self) -> bool | None:
        """Restore the pre-DMT cell when offline DMT made the held-out score worse (rank 0
        decides, every rank follows). None when there was no offline DMT phase."""
        if self.method != "smt" or self.cfg.offline_dmt.updates == 0:
            return None
        before, after = self.metrics.get("smt", {}), self.metrics["dmt"]
        worse = held_out_score(after, self.probe) > held_out_score(before, self.probe)
        reverted = self.ctx.broadcast(self.cfg.offline_dmt.revert_if_worse and worse)
        if reverted:
            self.model.cell.load_state_dict(self.dmt_before)
        return bool(reverted)

    # ------------------------------------------------------------------ resume points
    def _checkpoint(self, index: int, runner: PhaseRunner) -> None:
        """Save the whole state (collective: every rank's random streams are gathered first)."""
        if runner.done:
            self.metrics[self.phases[index].name] = runner.last
        device = self.ctx.device
        cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        generators = self.ctx.gather(self.generator.get_state())
        torch_rngs = self.ctx.gather(torch.get_rng_state())
        cuda_rngs = self.ctx.gather(cuda_rng)
        self.phase = index + 1 if runner.done else index
        if not self.ctx.is_main:
            return
        self.log_lines = self.logger.lines
        save_tree(
            self.run_dir / RESUME_FILE,
            {
                "version": RESUME_VERSION,
                "config": _pretrain_identity(self.cfg),
                "method": self.method,
                "world_size": self.ctx.world_size,
                "phase": self.phase,
                "runner": None if runner.done else runner.state_dict(),
                "metrics": self.metrics,
                "dmt_before": self.dmt_before,
                "carried": None if self.chain is None else self.chain.cache.state_dict(),
                "wall_s": time.perf_counter() - self.started,
                "log_lines": self.log_lines,
                "model": self.model.state_dict(),
                "generator": generators,
                "torch_rng": torch_rngs,
                "cuda_rng": cuda_rngs,
            },
        )
        kill_point("resume.saved")

    def _restore(self, state: dict[str, Any]) -> float:
        """Load a resume state's model, counters and random streams; returns its wall-clock."""
        rank, device = self.ctx.rank, self.ctx.device
        self.model.load_state_dict(state["model"])
        self.generator.set_state(state["generator"][rank])
        torch.set_rng_state(state["torch_rng"][rank])
        if device.type == "cuda" and state["cuda_rng"][rank] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"][rank], device)
        self.phase, self.metrics = state["phase"], state["metrics"]
        self.dmt_before, self.log_lines = state["dmt_before"], state["log_lines"]
        if self.chain is not None and state.get("carried") is not None:
            self.chain.cache.load_state_dict(state["carried"])
        if self.ctx.is_main:
            truncate_log(self.run_dir / "metrics.jsonl", self.log_lines)
        return float(state["wall_s"])

    # ------------------------------------------------------------------ the end
    def _finish(self, reverted: bool | None) -> dict[str, Any]:
        """Final evaluation, checkpoint and summary (rank 0 writes; every rank returns it)."""
        digests = self.ctx.gather(weights_digest(self.model))
        if not self.ctx.is_main:
            return self.ctx.broadcast(None)
        final, curve = self.evaluate()
        wall = time.perf_counter() - self.started
        model, cfg, dataset = self.model, self.cfg, self.dataset
        save_smt_model(
            model,
            config_to_dict(cfg),
            self.run_dir / CHECKPOINT_DIR,
            method=self.method,
            env=dataset.meta["env"],
        )
        first = self.metrics.get("smt", self.metrics.get("bptt", {}))
        dmt = dict(self.metrics.get("dmt", {})) if reverted is not None else {}
        if reverted is not None:
            dmt["dmt/reverted"] = float(reverted)
        summary: dict[str, Any] = {
            "env_id": dataset.env_id,
            "method": self.method,
            "seed": cfg.seed,
            "device": str(self.ctx.device),
            "dataset": str(dataset.path),
            "dataset_episodes": dataset.num_episodes,
            "dataset_steps": dataset.num_steps,
            "updates": cfg.smt.updates,
            "dmt_updates": cfg.offline_dmt.updates if self.method == "smt" else 0,
            "num_params": sum(p.numel() for p in model.parameters()),
            "wall_s": round(wall, 3),
            **{k: v for k, v in first.items() if k.startswith("loss/")},
            **{k: v for k, v in dmt.items() if k.startswith("dmt/")},
            **{f"pre_dmt/{k}": v for k, v in first.items() if dmt and _is_held_out(k)},
            **final,
        }
        if self.ctx.enabled:
            summary["ddp/world_size"] = self.ctx.world_size
            summary["ddp/ranks_identical"] = len(set(digests)) == 1
        atomic_write_json(self.run_dir / "summary.json", summary)
        if curve:
            atomic_write_json(self.run_dir / "rollout_memory_mse_by_step.json", curve)
        self.logger.close()
        # the state, and any temporary file a kill mid-write left beside it
        shutil.rmtree((self.run_dir / RESUME_FILE).parent, ignore_errors=True)
        return self.ctx.broadcast(summary)


def _is_held_out(key: str) -> bool:
    return key.startswith(("rollout/", "probe/"))


def pretrain_on_dataset(
    cfg: PretrainConfig,
    dataset: TrajectoryDataset,
    run_dir: str | os.PathLike,
    method: str = "smt",
    progress: bool = True,
    ctx: DistContext | None = None,
    probe: Probe | None = None,
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
        probe: a task-specific check of the held-out memory (see :class:`Probe`), or None.

    Returns:
        The summary (also written to ``RUN_DIR/summary.json``; every rank returns it).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_dataset_fits(dataset, cfg)
    ctx = ctx or setup(cfg.device)
    return Pretraining(cfg, dataset, Path(run_dir), method, ctx, probe, progress).run()
