"""Typed configuration of ``smt-rl train``: the pretraining sections, the run's RL settings,
and one section per algorithm setting (taken from :mod:`agents.registry`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from agents.registry import ALGORITHMS
from agents.smt_ppo.config import OnlineSMTConfig, OnPolicyDMTConfig, PPOConfig
from smt_rl.config import ConfigModel, Count
from smt_rl.smt.config import PretrainConfig

__all__ = [
    "ALGOS",
    "Algo",
    "EvalConfig",
    "OnPolicyDMTConfig",
    "OnlineSMTConfig",
    "PPOConfig",
    "TrainConfig",
]

ALGOS: tuple[str, ...] = tuple(ALGORITHMS)  # what `algo` may name
Algo = Literal[ALGOS]  # type: ignore[valid-type]  # an algorithm's name, as a config type


class EvalConfig(ConfigModel):
    """Final deterministic evaluation on fresh seeds."""

    episodes: Count = Field(100, description="evaluation episodes")
    deterministic: bool = Field(True, description="greedy actions")
    seed_offset: int = Field(
        10_000, description="evaluation envs are seeded with seed + seed_offset + i"
    )


class RunSettings(PretrainConfig):
    """What every ``smt-rl train`` run has beside its algorithm's own sections."""

    algo: Algo = Field(
        "smt_ppo",
        description="the algorithm: "
        + "; ".join(f"{name}: {entry.about}" for name, entry in ALGORITHMS.items()),
    )
    total_timesteps: Count = Field(50_000, description="environment steps of the RL phase")
    budget_includes_data: bool = Field(
        False,
        description="total_timesteps also pays for the logged data an algorithm learns from "
        "before RL (smt_ppo's pretraining data), for equal-budget comparisons",
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="final evaluation")

    def rl_timesteps(self, data_steps: int) -> int:
        """Env steps of the RL phase after ``data_steps`` of logged data: ``total_timesteps``,
        less the data when ``budget_includes_data``."""
        return self.total_timesteps - (data_steps if self.budget_includes_data else 0)


def _section(cls: type[ConfigModel], algo: str) -> tuple[type[ConfigModel], object]:
    """A TrainConfig field for one section of ``algo``: described by its class docstring."""
    first = " ".join((cls.__doc__ or "").split()).split(". ")[0].rstrip(".")
    return cls, Field(default_factory=cls, description=f"algo {algo}: {first}")


TrainConfig = create_model(
    "TrainConfig",
    __base__=RunSettings,
    __module__=__name__,
    __doc__="``smt-rl train``: collect, SMT-pretrain, RL, evaluate.",
    **{
        name: _section(cls, algo)
        for algo, entry in ALGORITHMS.items()
        for name, cls in entry.config.items()
    },
)
