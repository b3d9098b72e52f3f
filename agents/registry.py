"""Every algorithm `smt-rl train` can run, by its ``algo`` name: one line each.

An entry names the agent class (imported only when it runs, so a listing or a config check never
imports stable-baselines3 or torchrl), the checkpoint kind it writes, and the config sections it
reads. Adding an algorithm = one new file with its agent (an :class:`agents.base.AgentBase`) and
one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from smt_rl.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    """One algorithm of the registry."""

    agent: str  # "module:Class" of its agent
    kind: str  # the checkpoint kind its agent writes (agent.kind)
    sections: tuple[str, ...]  # the train-config sections it reads, besides env/seed/eval
    about: str  # one line for listings


ALGORITHMS: dict[str, Algorithm] = {
    "smt_ppo": Algorithm(
        "agents.smt_ppo:SMTPPO",
        "smt_ppo_agent",
        ("data", "model", "smt", "offline_dmt", "ppo", "onpolicy_dmt", "online_teacher"),
        "this project's agent: SMT-pretrained memory, PPO x on-policy DMT, no BPTT",
    ),
    "ppo": Algorithm(
        "agents.baselines.sb3:SB3PPOAgent",
        "sb3_ppo_agent",
        ("sb3_ppo",),
        "stable-baselines3 PPO, memoryless (the lower bound)",
    ),
    "recurrent_ppo": Algorithm(
        "agents.baselines.sb3:RecurrentPPOAgent",
        "recurrent_ppo_agent",
        ("recurrent_ppo",),
        "sb3-contrib RecurrentPPO: an LSTM trained by BPTT",
    ),
    "gru_ppo": Algorithm(
        "agents.baselines.gru_ppo:GRUPPOAgent",
        "gru_ppo_agent",
        ("gru_ppo",),
        "torchrl recurrent PPO: a GRU trained by BPTT over slices",
    ),
}


def agent_class(algo: str) -> type:
    """The agent class of ``algo`` (imported now).

    Raises:
        ConfigError: ``algo`` is not registered.
    """
    if algo not in ALGORITHMS:
        raise ConfigError(
            f"algo {algo!r} is not an algorithm; choose one of {', '.join(ALGORITHMS)}."
        )
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
