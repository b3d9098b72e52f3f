"""The SMT model an agent starts from: logged data, then SMT pretraining (or a finished one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.config import TrainConfig
from agents.probes import probe_for
from smt_rl.errors import ConfigError
from smt_rl.smt.model import SMTModel, load_smt_model
from smt_rl.smt.trainer import pretrain_on_dataset


def pretrained_model(
    cfg: TrainConfig, run_dir: Path, progress: bool
) -> tuple[SMTModel, int, dict[str, Any]]:
    """The SMT model pretrained for ``cfg`` into ``RUN_DIR/pretrain`` (done now unless a finished
    pretraining with the same settings is there), the env steps of its logged data, and its
    held-out figures as ``pretrain/*`` for the run's summary.

    Raises:
        ConfigError: ``budget_includes_data`` and the logged data alone spend the budget.
    """
    from agents.pipeline import _dataset_for, finished_pretraining

    dataset = _dataset_for(cfg, run_dir, progress)
    if cfg.budget_includes_data and dataset.num_steps >= cfg.total_timesteps:
        raise ConfigError(
            f"total_timesteps={cfg.total_timesteps} with budget_includes_data=true leaves no RL "
            f"steps: the logged data alone took {dataset.num_steps} steps. Raise total_timesteps "
            "or lower data.episodes."
        )
    folder = run_dir / "pretrain"
    summary = finished_pretraining(cfg, folder)
    if summary is None:
        probe = probe_for(dataset.env_id)
        summary = pretrain_on_dataset(cfg, dataset, folder, progress=progress, probe=probe)
    figures = {
        f"pretrain/{k}": v for k, v in summary.items() if k.startswith(("probe/", "rollout/"))
    }
    return load_smt_model(folder / "checkpoint"), dataset.num_steps, figures
