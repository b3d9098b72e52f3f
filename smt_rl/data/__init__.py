"""Logged trajectories: collection, on-disk storage and batch sampling."""

from smt_rl.data.collect import CollectionResult, collect_episodes
from smt_rl.data.dataset import TrajectoryDataset
from smt_rl.data.policies import BehaviourPolicy, RandomPolicy
from smt_rl.data.vector import InProcessEnvs, WorkerProcessEnvs, make_envs
from smt_rl.data.writer import TrajectoryWriter, env_description

__all__ = [
    "BehaviourPolicy",
    "CollectionResult",
    "InProcessEnvs",
    "RandomPolicy",
    "TrajectoryDataset",
    "TrajectoryWriter",
    "WorkerProcessEnvs",
    "collect_episodes",
    "env_description",
    "make_envs",
]
