"""Agents and pipeline steps built on the smt_rl core and the envs tasks.

The names below are imported on first use, so that ``import agents.config`` (a config check, a
key listing) stays light.
"""

__all__ = ["SMTPPO", "collect", "evaluate", "load_agent", "pretrain", "train"]


def __getattr__(name: str):
    if name == "SMTPPO":
        from agents.smt_ppo import SMTPPO

        return SMTPPO
    if name in __all__:
        from agents import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
