"""Every algorithm `smt-rl train` can run, by its ``algo`` name: one line each.

An entry names the agent class (imported only when it runs, so a listing or a config check never
imports stable-baselines3 or torchrl), the checkpoint kind it writes, and the config sections it
adds to ``smt-rl train``'s config (:data:`agents.config.TrainConfig` is built from them). Adding an
algorithm = one new file with its agent (an :class:`agents.base.AgentBase`) and its config
section (a :class:`smt_rl.config.ConfigModel`), and one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from agents.baselines.config import GRUPPOConfig, RecurrentPPOConfig, SB3PPOConfig
from agents.smt_ppo.config import OnlineSMTConfig, OnPolicyDMTConfig, PPOConfig
from smt_rl.config import ConfigModel
from smt_rl.errors import ConfigError
from smt_rl.extras import require


@dataclass(frozen=True)
class Algorithm:
    """One algorithm of the registry."""

    agent: str  # "module:Class" of its agent
    kind: str  # the checkpoint kind its agent writes (agent.kind)
    config: dict[str, type[ConfigModel]]  # the sections it adds to the train config, by key
    about: str  # one line for listings
    needs: str | None = None  # an optional module it imports (smt_rl.extras.OPTIONAL), if any


ALGORITHMS: dict[str, Algorithm] = {
    "smt_ppo": Algorithm(
        "agents.smt_ppo:SMTPPO",
        "smt_ppo_agent",
        {
            "ppo": PPOConfig,
            "onpolicy_dmt": OnPolicyDMTConfig,
            "online_smt": OnlineSMTConfig,
        },
        "this project's agent: SMT-pretrained memory, PPO x on-policy DMT, no BPTT",
    ),
    "ppo": Algorithm(
        "agents.baselines.sb3:SB3PPOAgent",
        "sb3_ppo_agent",
        {"sb3_ppo": SB3PPOConfig},
        "stable-baselines3 PPO, memoryless (the lower bound)",
    ),
    "recurrent_ppo": Algorithm(
        "agents.baselines.sb3:RecurrentPPOAgent",
        "recurrent_ppo_agent",
        {"recurrent_ppo": RecurrentPPOConfig},
        "sb3-contrib RecurrentPPO: an LSTM trained by BPTT",
        needs="sb3_contrib",
    ),
    "gru_ppo": Algorithm(
        "agents.baselines.gru_ppo:GRUPPOAgent",
        "gru_ppo_agent",
        {"gru_ppo": GRUPPOConfig},
        "torchrl recurrent PPO: a GRU trained by BPTT over slices",
    ),
}


def check_installed(algo: str) -> None:
    """Fail now if ``algo`` is not registered or needs an optional package that is missing.

    Raises:
        ConfigError: ``algo`` is not registered.
        MissingExtraError: its optional package is not installed (the extra is named).
    """
    if algo not in ALGORITHMS:
        raise ConfigError(
            f"algo {algo!r} is not an algorithm; choose one of {', '.join(ALGORITHMS)}."
        )
    if ALGORITHMS[algo].needs is not None:
        require(ALGORITHMS[algo].needs, f"algo={algo}")


def agent_class(algo: str) -> type:
    """The agent class of ``algo`` (imported now).

    Raises:
        ConfigError: ``algo`` is not registered.
        MissingExtraError: ``algo`` needs an optional package that is not installed.
    """
    check_installed(algo)
    module, _, name = ALGORITHMS[algo].agent.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if cls.kind != ALGORITHMS[algo].kind:
        raise TypeError(
            f"{cls.__qualname__}.kind is {cls.kind!r}; the registry says {ALGORITHMS[algo].kind!r}"
        )
    return cls


def algo_of_kind(kind: str | None) -> str | None:
    """The algorithm whose agents write checkpoints of ``kind`` (None: no agent's)."""
    return next((algo for algo, entry in ALGORITHMS.items() if entry.kind == kind), None)
