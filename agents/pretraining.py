"""The SMT model an agent starts from: logged data, then SMT pretraining (or a finished one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces

from agents.config import TrainConfig
from agents.probes import probe_for
from smt_rl.data import TrajectoryDataset
from smt_rl.errors import ConfigError
from smt_rl.locks import FolderLock
from smt_rl.smt.model import SMTModel, load_smt_model
from smt_rl.smt.trainer import load_resume_state, pretrain_on_dataset


def no_logged_data(cfg: TrainConfig) -> bool:
    """True when the run has no logged data: nothing to collect (``data.episodes=0``), no
    ``data.path``; the SMT model then starts untrained and learns online."""
    return cfg.data.path is None and cfg.data.episodes == 0


def pretrained_model(
    cfg: TrainConfig,
    run_dir: Path,
    progress: bool,
    observation_space: spaces.Space,
    action_space: spaces.Space,
) -> tuple[SMTModel, TrajectoryDataset | None, dict[str, Any]]:
    """The SMT model pretrained for ``cfg`` into ``RUN_DIR/pretrain`` (done now unless a finished
    pretraining with the same settings is there), the logged dataset it learned from, and its
    held-out figures as ``pretrain/*`` for the run's summary. Without logged data
    (:func:`no_logged_data`): a new, untrained model (seeded), no dataset, no figures.

    Raises:
        ConfigError: ``budget_includes_data`` and the logged data alone spend the budget.
    """
    from agents.pipeline import _dataset_for, finished_pretraining

    if no_logged_data(cfg):
        torch.manual_seed(cfg.seed)
        return SMTModel(cfg.model, observation_space, action_space), None, {}
    dataset = _dataset_for(cfg, run_dir, progress)
    _check_budget(cfg, dataset.num_steps)
    folder = run_dir / "pretrain"
    summary = finished_pretraining(cfg, folder)
    if summary is None:
        # the run folder's lock covers it; this one refuses a `smt-rl pretrain` into it
        with FolderLock(folder, "out=") as lock:
            lock.claim()
            probe = probe_for(dataset.env_id)
            summary = pretrain_on_dataset(cfg, dataset, folder, progress=progress, probe=probe)
    figures = {
        f"pretrain/{k}": v for k, v in summary.items() if k.startswith(("probe/", "rollout/"))
    }
    return load_smt_model(folder / "checkpoint"), dataset, figures


def check_pretraining(cfg: TrainConfig, run_dir: Path) -> int | None:
    """Check, reading only, what :func:`pretrained_model` would refuse: a dataset of another
    task, logged data that spends the budget alone, a finished pretraining with other settings or
    an unfinished one of another config in ``RUN_DIR/pretrain``.

    Returns:
        The env steps of the logged data, or None while it is still to collect.
    """
    from agents.pipeline import _checked_dataset, finished_pretraining, resume_command

    if no_logged_data(cfg):
        if not cfg.online_smt.enabled:
            raise ConfigError(
                "data.episodes=0 (no logged data) leaves nothing to train the memory on: set "
                "online_smt.enabled=true (SMT on the agent's own experience) or data.episodes>0."
            )
        return 0
    dataset = _checked_dataset(cfg, run_dir)
    complete = dataset is not None and (
        cfg.data.path is not None or dataset.num_episodes >= cfg.data.episodes
    )
    steps = dataset.num_steps if complete else None
    if steps is not None:
        _check_budget(cfg, steps)
    folder = run_dir / "pretrain"
    if finished_pretraining(cfg, folder) is None:
        load_resume_state(folder, cfg, "smt", world_size=1, resume_command=resume_command(folder))
    return steps


def _check_budget(cfg: TrainConfig, data_steps: int) -> None:
    """Refuse a budget the logged data alone spends (``budget_includes_data``)."""
    if cfg.budget_includes_data and data_steps >= cfg.total_timesteps:
        raise ConfigError(
            f"total_timesteps={cfg.total_timesteps} with budget_includes_data=true leaves no RL "
            f"steps: the logged data alone took {data_steps} steps. Raise total_timesteps "
            "or lower data.episodes."
        )
