"""Logged trajectories: collection, on-disk storage and batch sampling."""

from smt_rl.data.collect import CollectionResult, collect_episodes
from smt_rl.data.dataset import TrajectoryDataset
from smt_rl.data.policies import BehaviourPolicy, RandomPolicy
from smt_rl.data.vector import make_vector_env
from smt_rl.data.writer import TrajectoryWriter, env_description

__all__ = [
    "BehaviourPolicy",
    "CollectionResult",
    "RandomPolicy",
    "TrajectoryDataset",
    "TrajectoryWriter",
    "collect_episodes",
    "env_description",
    "make_vector_env",
]
