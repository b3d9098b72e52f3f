"""Agents and pipeline steps built on the smt_rl core and the envs tasks."""

from agents.pipeline import collect, pretrain

__all__ = ["collect", "pretrain"]
