"""Agents and pipeline steps built on the smt_rl core and the envs tasks."""

from agents.pipeline import collect, evaluate, pretrain, train
from agents.smt_ppo import SMTPPO

__all__ = ["SMTPPO", "collect", "evaluate", "pretrain", "train"]
